package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// budgetsClock is where the budgets test's fake clock starts: a quarter
// second into a second, so every wait rounds a fraction up.
const budgetsClock = "2026-01-05T10:00:00.25Z"

// budgetsConfig is issue 16's policy: 50 requests, 20k input tokens and
// 5k output tokens a minute, and $2 a day, gpt-4o priced per million
// tokens.
const budgetsConfig = `store: {backend: memory}
prices:
  models:
    gpt-4o: {input: 2.50, output: 10.00}
policies:
- name: team
  counter_key: {header: [api-key]}
  limits:
  - {name: requests, unit: requests, max: 50, window: 1m}
  - {name: input, unit: tokens, kind: input, max: 20000, window: 1m}
  - {name: output, unit: tokens, kind: output, max: 5000, window: 1m}
  - {name: dollars, unit: cost, max: 2, period: daily}
`

// gpt-4o's prices in micro-units per million tokens, as budgetsConfig
// writes them.
const (
	gpt4oInputMicros  = 2_500_000
	gpt4oOutputMicros = 10_000_000
)

// teamLimits are budgetsConfig's limits, in its order (the order in
// which tokengate checks them).
func teamLimits() []bLimit {
	return []bLimit{
		{name: "requests", unit: "requests", max: 50, window: time.Minute},
		{name: "input", unit: "tokens", kind: "input", max: 20_000, window: time.Minute},
		{name: "output", unit: "tokens", kind: "output", max: 5_000, window: time.Minute},
		{name: "dollars", unit: "cost", kind: "total", max: 2_000_000, period: "daily"},
	}
}

// ceilDiv is a/b rounded up, for non-negative a and positive b.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// costIn and costOut price gpt-4o's tokens in micro-units, each part
// rounded up as the README says.
func costIn(prompt int64) int64      { return ceilDiv(prompt*gpt4oInputMicros, 1_000_000) }
func costOut(completion int64) int64 { return ceilDiv(completion*gpt4oOutputMicros, 1_000_000) }

// bLimit is one limit as the test models it, independently of tokengate.
type bLimit struct {
	name, unit, kind string // unit requests, tokens or cost; kind input, output or total
	max              int64
	window           time.Duration // a sliding window, or
	period           string        // a UTC calendar period: daily or monthly
}

// amount is what one request of prompt and completion tokens draws on l.
func (l bLimit) amount(prompt, completion int64) int64 {
	var in, out int64
	switch l.unit {
	case "requests":
		return 1
	case "tokens":
		in, out = prompt, completion
	case "cost":
		in, out = costIn(prompt), costOut(completion)
	}
	switch l.kind {
	case "input":
		return in
	case "output":
		return out
	}
	return in + out
}

// periodBounds is the UTC calendar period of now.
func periodBounds(t *testing.T, period string, now time.Time) (start, end time.Time) {
	now = now.UTC()
	switch period {
	case "daily":
		start = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	case "monthly":
		start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	t.Fatalf("the model has no period %q", period)
	return
}

// leaves is when a unit charged at at leaves window w: the window is kept
// in 60 buckets (a minute's are seconds), and a unit leaves w after the
// start of its bucket.
func leaves(at time.Time, w time.Duration) time.Time { return at.Truncate(w / 60).Add(w) }

type bCharge struct {
	at time.Time
	n  int64
}

// bModel is one key's limits and what was charged to them: what
// tokengate must decide and advertise, worked out by the test.
type bModel struct {
	t       *testing.T
	limits  []bLimit
	charges [][]bCharge // per limit, in time order
}

func newBModel(t *testing.T, limits []bLimit) *bModel {
	return &bModel{t: t, limits: limits, charges: make([][]bCharge, len(limits))}
}

func (m *bModel) live(i int, at, now time.Time) bool {
	l := m.limits[i]
	if l.window != 0 {
		return now.Before(leaves(at, l.window))
	}
	start, end := periodBounds(m.t, l.period, now)
	return !at.Before(start) && at.Before(end)
}

// used is what limit i counts at now.
func (m *bModel) used(i int, now time.Time) int64 {
	var u int64
	for _, c := range m.charges[i] {
		if m.live(i, c.at, now) {
			u += c.n
		}
	}
	return u
}

func (m *bModel) remaining(i int, now time.Time) int64 {
	return max(0, m.limits[i].max-m.used(i, now))
}

// reset is, for a window, the time until every unit in it has left; for
// a period, the time until it ends.
func (m *bModel) reset(i int, now time.Time) time.Duration {
	l := m.limits[i]
	if l.window == 0 {
		_, end := periodBounds(m.t, l.period, now)
		return end.Sub(now)
	}
	var r time.Duration
	for _, c := range m.charges[i] {
		if m.live(i, c.at, now) {
			r = max(r, leaves(c.at, l.window).Sub(now))
		}
	}
	return r
}

// admits is APIM's check: a request is admitted while used + 1 <= max.
func (m *bModel) admits(i int, now time.Time) bool {
	return m.used(i, now)+1 <= m.limits[i].max
}

// refuser is the first limit, in the policy's order, that refuses a
// request at now; -1 when every limit admits it.
func (m *bModel) refuser(now time.Time) int {
	for i := range m.limits {
		if !m.admits(i, now) {
			return i
		}
	}
	return -1
}

// retryAfter is how long until every refusing limit admits a request:
// for a window, until enough units have left it; for a period, its end.
func (m *bModel) retryAfter(now time.Time) time.Duration {
	var r time.Duration
	for i, l := range m.limits {
		if m.admits(i, now) {
			continue
		}
		if l.window == 0 {
			r = max(r, m.reset(i, now))
			continue
		}
		excess := m.used(i, now) - (l.max - 1)
		for _, c := range m.charges[i] {
			if !m.live(i, c.at, now) {
				continue
			}
			if excess -= c.n; excess <= 0 {
				r = max(r, leaves(c.at, l.window).Sub(now))
				break
			}
		}
	}
	return r
}

// charge settles one request at now.
func (m *bModel) charge(now time.Time, prompt, completion int64) {
	for i, l := range m.limits {
		m.charges[i] = append(m.charges[i], bCharge{at: now, n: l.amount(prompt, completion)})
	}
}

// closest is the limit a pair of x-ratelimit-* headers reports among
// those pick selects: the refusing one when selected, else the one with
// the least remaining as a share of its max (the first of equals); -1
// when pick selects none.
func (m *bModel) closest(now time.Time, refused int, pick func(bLimit) bool) int {
	if refused >= 0 && pick(m.limits[refused]) {
		return refused
	}
	best, share := -1, 2.0
	for i, l := range m.limits {
		if !pick(l) {
			continue
		}
		s := 0.0
		if l.max > 0 {
			s = float64(m.remaining(i, now)) / float64(l.max)
		}
		if s < share {
			best, share = i, s
		}
	}
	return best
}

// ceilSecs is d in whole seconds, rounded up.
func ceilSecs(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }

// wantDraft is what RateLimit-Policy and RateLimit must say at now: one
// item per limit, named as the limit.
func (m *bModel) wantDraft(now time.Time) (policy, state string) {
	var ps, ss []string
	for i, l := range m.limits {
		w := int64(l.window / time.Second)
		if l.window == 0 {
			start, end := periodBounds(m.t, l.period, now)
			w = int64(end.Sub(start) / time.Second)
		}
		ps = append(ps, fmt.Sprintf("%q;q=%d;qu=%q;w=%d", l.name, l.max, l.unit, w))
		ss = append(ss, fmt.Sprintf("%q;r=%d;t=%d", l.name, m.remaining(i, now), ceilSecs(m.reset(i, now))))
	}
	return strings.Join(ps, ", "), strings.Join(ss, ", ")
}

// wantHeaders checks the budget headers of an answer at now: a 200 that
// settled (refused -1, its charge already in the model) or a refusal by
// limit refused.
func (m *bModel) wantHeaders(t *testing.T, step string, h http.Header, now time.Time, refused int) {
	t.Helper()
	policy, state := m.wantDraft(now)
	if got := only(t, step, h, "Ratelimit-Policy"); got != policy {
		t.Errorf("%s: ratelimit-policy\n  %s\nwant\n  %s", step, got, policy)
	}
	if got := only(t, step, h, "Ratelimit"); got != state {
		t.Errorf("%s: ratelimit\n  %s\nwant\n  %s", step, got, state)
	}
	for _, unit := range []string{"tokens", "requests"} {
		i := m.closest(now, refused, func(l bLimit) bool { return l.unit == unit && l.window != 0 })
		names := []string{"X-Ratelimit-Limit-" + unit, "X-Ratelimit-Remaining-" + unit, "X-Ratelimit-Reset-" + unit}
		if i < 0 {
			for _, name := range names {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("%s: %s = %q, want none: the key has no %s window", step, name, v, unit)
				}
			}
			continue
		}
		want := []string{strconv.FormatInt(m.limits[i].max, 10), strconv.FormatInt(m.remaining(i, now), 10),
			m.reset(i, now).Round(time.Millisecond).String()}
		for j, name := range names {
			if got := only(t, step, h, name); got != want[j] {
				t.Errorf("%s: %s %q, want %q (limit %q)", step, name, got, want[j], m.limits[i].name)
			}
		}
	}
	if refused < 0 {
		for _, name := range []string{"Retry-After", "Retry-After-Ms", "X-Should-Retry"} {
			if v := h.Values(name); len(v) != 0 {
				t.Errorf("%s: %s = %q on an admitted request", step, name, v)
			}
		}
		return
	}
	wait := m.retryAfter(now)
	wantRetryAfter(t, step, h, int(ceilSecs(wait)), int((wait+time.Millisecond-1)/time.Millisecond))
	quota := m.limits[refused].window == 0
	if got := h.Values("X-Should-Retry"); quota && (len(got) != 1 || got[0] != "false") || !quota && len(got) != 0 {
		t.Errorf("%s: x-should-retry %q, want %q", step, got, map[bool]string{true: "false"}[quota])
	}
}

// budgetPrompt is a chat whose prompt gpt-4o counts as exactly n tokens:
// a user message of " hello"s, each one token, after the 7 tokens of
// framing.
func budgetPrompt(t *testing.T, n int64) []harness.Message {
	t.Helper()
	const framing = 7
	msgs := []harness.Message{{Role: "user", Content: strings.TrimSpace(strings.Repeat(" hello", int(n-framing)))}}
	if got := tokenize.Chat("gpt-4o", []tokenize.Message{{Role: msgs[0].Role, Content: msgs[0].Content}}); int64(got) != n {
		t.Fatalf("a prompt built for %d tokens counts %d", n, got)
	}
	return msgs
}

// budgetRun sends a stack's requests key by key, each key's budget
// modelled, and keeps what the whole run must show in the metrics and
// the metadata.
type budgetRun struct {
	s        *harness.Stack
	policy   string
	now      time.Time
	sent     int
	costs    int64            // what the settled requests cost, in micro-units
	refusals map[string]int   // by limit name
	expect   map[string]bWant // by x-request-id
	last     http.Header      // the last answer's headers
}

// bWant is what the dynamic metadata of one request must hold.
type bWant struct {
	limit string // the refusing limit; "" for a settled request
	cost  int64
}

func newBudgetRun(t *testing.T, s *harness.Stack, policy, clock string) *budgetRun {
	now, err := time.Parse(time.RFC3339Nano, clock)
	if err != nil {
		t.Fatal(err)
	}
	return &budgetRun{s: s, policy: policy, now: now, refusals: map[string]int{}, expect: map[string]bWant{}}
}

// advance moves tokengate's fake clock, and the test's, by d.
func (r *budgetRun) advance(t *testing.T, d time.Duration) {
	t.Helper()
	want := r.now.Add(d)
	if got := r.s.Advance(d); !got.Equal(want) {
		t.Fatalf("advanced the clock by %v to %v, want %v", d, got, want)
	}
	r.now = want
}

// send sends one chat under key, its usage fixed at prompt and
// completion tokens, and checks tokengate's answer against the model: a
// 200 with the mock's usage and the budget headers after its charge, or
// the refusal of the limit the model says refuses. It returns that
// limit's index, -1 when the request was admitted.
func (r *budgetRun) send(t *testing.T, m *bModel, key string, prompt, completion int64) int {
	t.Helper()
	r.sent++
	id := fmt.Sprintf("budgets-%s-%d", r.policy, r.sent)
	step := fmt.Sprintf("%s request %s at %s", key, id, r.now.Format(time.RFC3339Nano))
	body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": budgetPrompt(t, prompt)})
	if err != nil {
		t.Fatal(err)
	}
	req := r.s.Request("POST", "/v1/chat/completions", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	req.Header.Set("x-request-id", id)
	req.Header.Set("x-mock-completion-tokens", strconv.FormatInt(completion, 10))
	refused := m.refuser(r.now)
	resp, out := r.s.Do(req)
	r.last = resp.Header
	if refused < 0 {
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, want 200: every limit has room (body %s)", step, resp.StatusCode, out)
		}
		var c struct {
			Usage struct {
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(out, &c); err != nil || c.Usage.PromptTokens != prompt || c.Usage.CompletionTokens != completion {
			t.Fatalf("%s: the mock reported %+v (%v), want %d prompt and %d completion tokens", step, c.Usage, err, prompt, completion)
		}
		m.charge(r.now, prompt, completion)
		cost := costIn(prompt) + costOut(completion)
		r.costs += cost
		r.expect[id] = bWant{cost: cost}
		m.wantHeaders(t, step, resp.Header, r.now, -1)
		return -1
	}
	l := m.limits[refused]
	status, code, what := http.StatusTooManyRequests, "rate_limit_exceeded", "Limit"
	if l.window == 0 {
		status, code, what = http.StatusForbidden, "quota_exceeded", "Quota"
	}
	wantJSONError(t, step, resp, out, status, code)
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(out, &e) // wantJSONError read it
	prefix := fmt.Sprintf("%s %q (", what, l.name)
	suffix := fmt.Sprintf(") is exceeded. Try again in %d seconds.", ceilSecs(m.retryAfter(r.now)))
	if msg := e.Error.Message; !strings.HasPrefix(msg, prefix) || !strings.HasSuffix(msg, suffix) {
		t.Errorf("%s: message %q, want %q…%q", step, msg, prefix, suffix)
	}
	m.wantHeaders(t, step, resp.Header, r.now, refused)
	r.refusals[l.name]++
	r.expect[id] = bWant{limit: l.name}
	return refused
}

// exhaust sends requests of prompt and completion tokens under a fresh
// key, advancing the clock by every before each but the first, until one
// is refused. target must refuse, and refuse first: at request
// ceil(max/per) + 1, per being what one request draws on it, since a
// request is admitted while the limit's count is below its max and is
// charged only when it settles. It returns the key's model.
func (r *budgetRun) exhaust(t *testing.T, key, target string, prompt, completion int64, every time.Duration) *bModel {
	t.Helper()
	m := newBModel(t, teamLimits())
	ti := -1
	for i, l := range m.limits {
		if l.name == target {
			ti = i
		}
	}
	per := m.limits[ti].amount(prompt, completion)
	wantAt := ceilDiv(m.limits[ti].max, per) + 1
	for i := int64(1); ; i++ {
		if i > 1 && every > 0 {
			r.advance(t, every)
		}
		refused := r.send(t, m, key, prompt, completion)
		if refused < 0 {
			if i >= wantAt {
				t.Fatalf("%s: request %d admitted, want %q to refuse request %d (%d per request, max %d)",
					key, i, target, wantAt, per, m.limits[ti].max)
			}
			continue
		}
		if refused != ti || i != wantAt {
			t.Fatalf("%s: %q refused request %d, want %q to refuse request %d (%d per request, max %d)",
				key, m.limits[refused].name, i, target, wantAt, per, m.limits[ti].max)
		}
		t.Logf("%s: %q refused request %d, at %d of %d", key, target, i, m.used(ti, r.now), m.limits[ti].max)
		return m
	}
}

// checkMetadata checks the dynamic metadata tokengate gave every request
// the run sent: the refusing limit, or what a settled request cost.
func (r *budgetRun) checkMetadata(t *testing.T) {
	t.Helper()
	recs, err := r.s.Front.WaitCompleted(r.sent, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, rec := range recs {
		want, ok := r.expect[rec.RequestID]
		if !ok {
			continue
		}
		seen++
		tg := rec.Metadata.GetFields()["tokengate"].GetStructValue().GetFields()
		if want.limit != "" {
			if got := tg["limit"].GetStringValue(); got != want.limit {
				t.Errorf("request %s: metadata limit %q, want %q (metadata %v)", rec.RequestID, got, want.limit, tg)
			}
			continue
		}
		if got := tg["cost_micros"]; got == nil || got.GetNumberValue() != float64(want.cost) {
			t.Errorf("request %s: metadata cost_micros %v, want %d", rec.RequestID, got, want.cost)
		}
	}
	if seen != len(r.expect) {
		t.Errorf("the front recorded %d of the %d requests sent", seen, len(r.expect))
	}
}

// checkMetrics checks tokengate's counters: a refusal per limit as the
// run saw them, and every settled request's cost.
func (r *budgetRun) checkMetrics(t *testing.T, limits []bLimit) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	admin := r.s.Tokengate.Field("admin")
	for _, l := range limits {
		got, err := harness.ScrapeMetric(client, admin, "tokengate_limit_refusals_total", "policy", r.policy, "limit", l.name)
		if err != nil {
			t.Fatal(err)
		}
		if int(got) != r.refusals[l.name] {
			t.Errorf("tokengate_limit_refusals_total{policy=%q,limit=%q} = %v, want %d", r.policy, l.name, got, r.refusals[l.name])
		}
	}
	got, err := harness.ScrapeMetric(client, admin, "tokengate_cost_micros_total", "policy", r.policy)
	if err != nil {
		t.Fatal(err)
	}
	if int64(got) != r.costs {
		t.Errorf("tokengate_cost_micros_total{policy=%q} = %v, want %d: the sum of the settled requests' costs", r.policy, got, r.costs)
	}
	t.Logf("metrics: refusals %v, %d micro-units charged", r.refusals, r.costs)
}

// TestBudgetsEachLimitRefuses: through the real binaries, on the fake
// clock, issue 16's policy of four limits. Under a fresh key each, usage
// fixed with the mock's overrides makes exactly one limit run out first;
// it refuses at the request its numbers say, with its status, its
// headers and its name in the message. A minute frees the windows, not
// the day's cost; midnight UTC frees the cost. The metadata and the
// metrics name the limits and add up the costs.
func TestBudgetsEachLimitRefuses(t *testing.T) {
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: budgetsConfig, FakeClock: budgetsClock})
	r := newBudgetRun(t, s, "team", budgetsClock)

	// Each scenario's numbers, checked against every other limit by the
	// model (the refusal must be target's, at its request).
	windows := []struct {
		key, target        string
		prompt, completion int64
	}{
		// 50 requests of 20 in, 2 out: 1,000 and 100 of 20k and 5k.
		{"budget-requests", "requests", 20, 2},
		// 1,500 in: the 14th request is admitted at 19,500 and brings
		// the window to 21,000; the 15th is refused.
		{"budget-input", "input", 1500, 10},
		// 1,200 out: the 6th is refused at 6,000 of 5,000.
		{"budget-output", "output", 20, 1200},
	}
	for _, w := range windows {
		t.Run(w.target, func(t *testing.T) {
			m := r.exhaust(t, w.key, w.target, w.prompt, w.completion, 0)
			// A minute later every unit has left the windows.
			r.advance(t, time.Minute)
			if refused := r.send(t, m, w.key, w.prompt, w.completion); refused >= 0 {
				t.Fatalf("a minute on, the model says %q still refuses", m.limits[refused].name)
			}
		})
	}

	t.Run("dollars", func(t *testing.T) {
		// 2,000 in and 4,000 out cost $0.005 + $0.04 = 45,000 micro-units,
		// exactly; one request a minute keeps the windows at 2,000 of
		// 20,000 and 4,000 of 5,000. The 45th brings the day to
		// 2,025,000 of 2,000,000, the 46th is refused.
		const key, prompt, completion = "budget-dollars", 2000, 4000
		if c := costIn(prompt) + costOut(completion); prompt*gpt4oInputMicros%1_000_000 != 0 || c != 45_000 {
			t.Fatalf("a request costs %d micro-units, want exactly 45,000", c)
		}
		m := r.exhaust(t, key, "dollars", prompt, completion, time.Minute)
		// A minute frees the windows, not the day.
		r.advance(t, time.Minute)
		if refused := r.send(t, m, key, prompt, completion); refused < 0 || m.limits[refused].name != "dollars" {
			t.Fatalf("a minute on, the model says %d refuses, want dollars", refused)
		}
		// Midnight UTC frees the day's cost.
		_, midnight := periodBounds(t, "daily", r.now)
		r.advance(t, midnight.Sub(r.now))
		if refused := r.send(t, m, key, prompt, completion); refused >= 0 {
			t.Fatalf("at midnight the model says %q still refuses", m.limits[refused].name)
		}
	})
	if t.Failed() {
		return
	}
	r.checkMetadata(t)
	r.checkMetrics(t, teamLimits())
}

// TestBudgetsMonthlyCostQuota: a monthly cost quota exhausted in the last
// minute of January is refused 403 until February begins, its RateLimit
// item counting the seconds left in the month, and admits again at
// 2026-02-01T00:00:00Z.
func TestBudgetsMonthlyCostQuota(t *testing.T) {
	needBinaries(t)
	const clock = "2026-01-31T23:59:00Z"
	cfg := `store: {backend: memory}
prices:
  models:
    gpt-4o: {input: 2.50, output: 10.00}
policies:
- name: monthly
  counter_key: {header: [api-key]}
  limits:
  - {name: month, unit: cost, max: 0.1, period: monthly}
`
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: clock})
	r := newBudgetRun(t, s, "monthly", clock)
	limits := []bLimit{{name: "month", unit: "cost", kind: "total", max: 100_000, period: "monthly"}}
	m := newBModel(t, limits)
	// 45,000 micro-units a request: the 3rd brings the month to 135,000
	// of 100,000, the 4th is refused.
	const key, prompt, completion = "budget-month", 2000, 4000
	per := costIn(prompt) + costOut(completion)
	wantAt := ceilDiv(limits[0].max, per) + 1
	for i := int64(1); i < wantAt; i++ {
		if refused := r.send(t, m, key, prompt, completion); refused >= 0 {
			t.Fatalf("request %d refused, want %d admitted", i, wantAt-1)
		}
	}
	// The model checks every header; the month's items are spelt out
	// here too: the refusal waits for the seconds left of January, and
	// February is a shorter period.
	for _, step := range []struct {
		advance time.Duration
		left    int64 // seconds left in January
	}{{0, 60}, {59 * time.Second, 1}} {
		r.advance(t, step.advance)
		if refused := r.send(t, m, key, prompt, completion); refused != 0 {
			t.Fatalf("at %v: the model admits, want the month to refuse", r.now)
		}
		at := r.now.Format(time.RFC3339)
		if got, want := r.last.Get("Ratelimit"), fmt.Sprintf(`"month";r=0;t=%d`, step.left); got != want {
			t.Errorf("at %s: ratelimit %q, want %q", at, got, want)
		}
		if got, want := r.last.Get("Ratelimit-Policy"), `"month";q=100000;qu="cost";w=2678400`; got != want {
			t.Errorf("at %s: ratelimit-policy %q, want %q: January's 31 days", at, got, want)
		}
		if got, want := r.last.Get("Retry-After"), strconv.FormatInt(step.left, 10); got != want {
			t.Errorf("at %s: retry-after %q, want %q", at, got, want)
		}
	}
	r.advance(t, time.Second)
	if want := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC); !r.now.Equal(want) {
		t.Fatalf("the clock reads %v, want %v", r.now, want)
	}
	if refused := r.send(t, m, key, prompt, completion); refused >= 0 {
		t.Fatalf("at %v: the model still refuses", r.now)
	}
	feb := int64(28 * 24 * 3600)
	if got, want := r.last.Get("Ratelimit"), fmt.Sprintf(`"month";r=%d;t=%d`, limits[0].max-per, feb); got != want {
		t.Errorf("February's first request: ratelimit %q, want %q", got, want)
	}
	if got, want := r.last.Get("Ratelimit-Policy"), fmt.Sprintf(`"month";q=100000;qu="cost";w=%d`, feb); got != want {
		t.Errorf("February's first request: ratelimit-policy %q, want %q", got, want)
	}
	if t.Failed() {
		return
	}
	r.checkMetadata(t)
	r.checkMetrics(t, limits)
}
