package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// The Redis Cluster and Sentinel fault tests (issue 17): tokengate
// replicas on one budget in a real Cluster or a real Sentinel group, a
// steady load on the real clock that presses a short window's limit on a
// few keys, and one event at a time (a master killed, slots moved, one
// replica cut off). Each event is measured from the load's own records,
// not from tokengate's account:
//
//   - refused wrongly: answers other than 200 and 429 (fail_closed's 503,
//     the front's 504, transport errors), and 429s given while the budget,
//     counted from the admitted answers, had room for the request;
//   - admitted wrongly: tokens past the limit in the worst window;
//   - seconds until normal: from the event to the end of the last wrong
//     answer it caused;
//   - the budget error after it: tokens the upstream served that Redis does
//     not count (lost), or counts twice, and holds left behind.
//
// on_error is fail_closed. The point of these tests is what a fault does
// to the shared budget, and fail_closed is the mode in which the shared
// budget alone admits: while Redis cannot be asked, nothing is admitted, so
// any token past the limit is the store's or the client's fault (a write
// lost in a failover, a charge sent twice), never the policy's. fail_open
// would admit everything during each event (over-admission by design,
// unbounded), local up to a limit per replica; neither could tell a store
// bug from the policy. The price of fail_closed is wrong refusals during
// each event, which is what "refused wrongly" counts.
const (
	haWindow     = 2 * time.Second
	haWindowSpec = "2s"
	// haLimit is the window's budget per key: about 30 requests of ~32
	// tokens per 2 s, a small part of what the load offers a key, so
	// the limit is pressed all the time and over-admission would show.
	haLimit      = 1000
	haKeys       = 6
	haClients    = 6
	haCompletion = 20
	// haPause is each client's pause between requests: the load stays
	// well above the limit without taking every core of a shared
	// machine.
	haPause = 5 * time.Millisecond
	// haRedisTimeout is the store's dial, read and write timeout, and
	// haRetry its retry_interval, as in TestRedisFaults: a healthy
	// loopback Redis answers well within it on a loaded machine, and a
	// dead one costs at most that per call.
	haRedisTimeout = 250 * time.Millisecond
	haRetry        = 100 * time.Millisecond
	// haSpan is the length of the windows the worst one is looked for
	// in: 58 of the limiter's 60 buckets. The limiter counts every
	// charge of the last 59 buckets at least, so requests whose whole
	// life (sent to answered) fits in 58 buckets were all decided
	// against each other, and strict mode keeps their sum within the
	// limit (the bucket left over absorbs clock reading jitter).
	haSpan = haWindow * 58 / 60
	// haEstimateSlack is strict mode's bound against the limit (the
	// prompt estimate may miss by about 1 %, as checkNoOvershoot allows).
	haEstimateSlack = 1.01
	// haQuiet is how long the load must run with only right answers
	// before an event counts as over.
	haQuiet = 3 * time.Second
	// haLedger names the daily limit that keeps every charge.
	haLedger = "ledger"
)

// haPolicy is strict mode (the prompt estimated, max_tokens reserved) on
// a 2 s window, plus a daily ledger that never refuses: Redis keeps every
// charge of the day in it, so what Redis counted can be compared with
// what the upstream served.
func haPolicy() string {
	return fmt.Sprintf(`policies:
- name: ha
  counter_key: {header: [api-key]}
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
  limits:
  - {name: burst, window: %s, max: %d}
  - {name: %s, period: daily, max: 1000000000000}
`, haWindowSpec, haLimit, haLedger)
}

// haConfig is a replica's configuration on the Redis reached through
// addrs, with extra store.redis fields (cluster: true, master_name).
func haConfig(addrs []string, extra string) string {
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%s], %s dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: fail_closed, retry_interval: %v}
`, strings.Join(quoted, ", "), extra, haRedisTimeout, haRedisTimeout, haRedisTimeout, haRetry) + haPolicy()
}

func haKey(i int) string { return fmt.Sprintf("ha-key-%d", i) }

// haOutcome is one answered (or failed) request of the load.
type haOutcome struct {
	replica, key int
	start, end   time.Time
	status       int    // 0: transport error
	code         string // the error code of a non-200, or the transport error
	tokens       int64  // usage.total_tokens of a 200
	detail       string // a refusal's message and rate headers, for the logs
}

func (o haOutcome) String() string {
	return fmt.Sprintf("replica %d key %d %s+%v: %d %s %s", o.replica, o.key, o.start.Format("15:04:05.000"),
		o.end.Sub(o.start).Round(time.Millisecond), o.status, o.code, o.detail)
}

// haLoad drives haClients clients on the real clock, each sending to
// every key and every replica in turn, and keeps every outcome. Pause
// lets the test read the upstream and Redis with nothing in flight.
type haLoad struct {
	urls   []string
	client *http.Client

	mu       sync.Mutex
	outs     []haOutcome
	paused   bool
	resume   chan struct{}
	inflight atomic.Int64
	stopped  chan struct{}
	wg       sync.WaitGroup
}

func startHALoad(t *testing.T, urls []string) *haLoad {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = haClients
	l := &haLoad{urls: urls, client: &http.Client{Transport: tr, Timeout: steadyTimeout},
		stopped: make(chan struct{}), resume: make(chan struct{})}
	for c := range haClients {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				if !l.gate() {
					return
				}
				o := l.send((c+n)%len(urls), (c*7+n)%haKeys)
				l.inflight.Add(-1)
				l.mu.Lock()
				l.outs = append(l.outs, o)
				l.mu.Unlock()
				select {
				case <-l.stopped:
					return
				case <-time.After(haPause):
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

// gate waits while paused; false once stopped. A request it lets through
// is counted in flight.
func (l *haLoad) gate() bool {
	for {
		l.mu.Lock()
		paused, resume := l.paused, l.resume
		if !paused {
			l.inflight.Add(1)
			l.mu.Unlock()
			return true
		}
		l.mu.Unlock()
		select {
		case <-l.stopped:
			return false
		case <-resume:
		}
	}
}

func (l *haLoad) stop() {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// pause stops new requests and waits until none is in flight.
func (l *haLoad) pause(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	l.paused = true
	l.mu.Unlock()
	deadline := time.Now().Add(2 * steadyTimeout)
	for l.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("load: %d requests still in flight after %v", l.inflight.Load(), 2*steadyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *haLoad) unpause() {
	l.mu.Lock()
	l.paused = false
	close(l.resume)
	l.resume = make(chan struct{})
	l.mu.Unlock()
}

func (l *haLoad) snapshot() []haOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outs)
}

func (l *haLoad) send(replica, key int) haOutcome {
	o := haOutcome{replica: replica, key: key, start: time.Now()}
	body, _ := json.Marshal(map[string]any{
		"model":      "gpt-4o",
		"messages":   []map[string]string{{"role": "user", "content": "Count to three, slowly."}},
		"max_tokens": haCompletion,
	})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, l.urls[replica]+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		o.end, o.code = time.Now(), err.Error()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", haKey(key))
	req.Header.Set("x-mock-completion-tokens", strconv.Itoa(haCompletion))
	resp, err := l.client.Do(req)
	if err != nil {
		o.end, o.code = time.Now(), err.Error()
		return o
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.end, o.status = time.Now(), resp.StatusCode
	var r struct {
		Usage struct {
			TotalTokens int64 `json:"total_tokens"`
		} `json:"usage"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	switch {
	case err != nil:
		o.code = err.Error()
	case json.Unmarshal(got, &r) != nil:
		o.code = "unreadable body"
	case resp.StatusCode == http.StatusOK:
		o.tokens = r.Usage.TotalTokens
	default:
		o.code = r.Error.Code
		o.detail = fmt.Sprintf("remaining %q retry-after %q: %.200s", resp.Header.Get("x-ratelimit-remaining-tokens"), resp.Header.Get("retry-after"), got)
	}
	return o
}

// haJudge classifies outcomes against the budget, from the admitted
// answers alone.
type haJudge struct {
	admitted [haKeys][]haOutcome // by key, sorted by start
	need     int64               // what one request takes (its usage)
}

func newHAJudge(outs []haOutcome) *haJudge {
	j := &haJudge{}
	for _, o := range outs {
		if o.status == http.StatusOK {
			j.admitted[o.key] = append(j.admitted[o.key], o)
			j.need = max(j.need, o.tokens)
		}
	}
	for k := range j.admitted {
		slices.SortFunc(j.admitted[k], func(a, b haOutcome) int { return a.start.Compare(b.start) })
	}
	return j
}

// usedAround is what may have counted against key when o was decided:
// every admitted request of the key alive at some point in the window
// before o's answer (sent before it, answered after its start minus a
// window). It counts more than the limiter can (a request charged just
// outside the window, one still in flight), so a refusal with room even
// by this count certainly had room.
func (j *haJudge) usedAround(o haOutcome) int64 {
	var sum int64
	for _, a := range j.admitted[o.key] {
		if a.start.After(o.end) {
			break
		}
		if a.end.After(o.start.Add(-haWindow)) {
			sum += a.tokens
		}
	}
	return sum
}

// wrong reports whether o is a wrong answer, and why: an answer other
// than 200 or 429, or a 429 with room for the request (with 20 % to
// spare on the estimate of what it needed).
func (j *haJudge) wrong(o haOutcome) (bool, string) {
	switch o.status {
	case http.StatusOK:
		return false, ""
	case http.StatusTooManyRequests:
		if j.need > 0 && j.usedAround(o)+j.need*6/5 <= haLimit {
			return true, "429 with budget free"
		}
		return false, ""
	case 0:
		return true, "transport error"
	}
	return true, fmt.Sprintf("%d %s", o.status, o.code)
}

// worst is the most tokens admitted for one key by requests whose whole
// life fits in haSpan, among requests that ended in [from, to); it
// returns the key and the window's start.
func (j *haJudge) worst(from, to time.Time) (tokens int64, key int, at time.Time) {
	for k, adm := range j.admitted {
		for i, a := range adm {
			if a.end.Before(from.Add(-haSpan)) || !a.start.Before(to) {
				continue
			}
			var sum int64
			limit := a.start.Add(haSpan)
			for _, b := range adm[i:] {
				if b.start.After(limit) {
					break
				}
				if !b.end.After(limit) {
					sum += b.tokens
				}
			}
			if sum > tokens {
				tokens, key, at = sum, k, a.start
			}
		}
	}
	return tokens, key, at
}

// haBudget is what the upstream served and what Redis counts, read with
// nothing in flight.
type haBudget struct {
	served int64 // tokens the upstream served (its calls × a request's usage)
	ledger int64 // tokens the daily ledgers in Redis count, every load key
	holds  int64 // holds left in Redis, every load key
}

// haStore reads the ledgers and holds in whatever Redis the test runs.
type haStore interface {
	// eval runs a read-only script on every master and returns the sum
	// of what each returns.
	sumOnMasters(t *testing.T, script string) int64
}

// ledgerScript sums the ledger's "used" of every load key a master holds;
// holdsScript counts the members of every key's holds.
const (
	ledgerScript = `local s = 0 for _, k in ipairs(redis.call('KEYS', '*:l:` + haLedger + `')) do s = s + tonumber(redis.call('HGET', k, 'used') or '0') end return s`
	holdsScript  = `local s = 0 for _, k in ipairs(redis.call('KEYS', '*}:h')) do s = s + redis.call('ZCARD', k) end return s`
)

// readBudget pauses the load, waits for the replicas' replays of failed
// settles (a few retry intervals), reads, and resumes.
func readBudget(t *testing.T, l *haLoad, r *harness.Replicas, st haStore, perRequest int64) haBudget {
	t.Helper()
	l.pause(t)
	defer l.unpause()
	time.Sleep(10 * haRetry)
	return haBudget{served: mockCalls(t, r) * perRequest, ledger: st.sumOnMasters(t, ledgerScript), holds: st.sumOnMasters(t, holdsScript)}
}

// mockCalls reads openai-mock's count of inference calls.
func mockCalls(t *testing.T, r *harness.Replicas) int64 {
	t.Helper()
	resp, err := directClient.Get("http://" + r.Mock.Field("http") + "/mock/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Calls int64 `json:"calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c.Calls
}

// haEvent is one event's figures.
type haEvent struct {
	name            string
	at              time.Time
	wrongRefused    map[string]int
	refusedTotal    int
	answers         int
	worst           int64
	overLimit       int64 // tokens past the limit in the worst window
	normalAfter     time.Duration
	lost, twice     int64
	holdsLeft       int64
	overAfter       int64 // tokens past the limit in windows after normal
	firstWrong      string
	recoveredInTime bool
}

func (e haEvent) String() string {
	keys := make([]string, 0, len(e.wrongRefused))
	for k, n := range e.wrongRefused {
		keys = append(keys, fmt.Sprintf("%s: %d", k, n))
	}
	slices.Sort(keys)
	return fmt.Sprintf("%s: of %d answers, refused wrongly %d {%s}; admitted wrongly %d tokens (worst %.2f s window %d / %d); normal after %.2f s; budget error after: %d tokens over the limit, %d tokens lost, %d charged twice, %d holds left",
		e.name, e.answers, e.refusedTotal, strings.Join(keys, ", "), e.overLimit, haSpan.Seconds(), e.worst, haLimit,
		e.normalAfter.Seconds(), e.overAfter, e.lost, e.twice, e.holdsLeft)
}

// waitNormal waits until the load has answered only rightly for haQuiet
// since the later of the event and after (when the test's own action, a
// failover or a restore, was done), and returns the end of the last wrong
// answer (the event's time if none); false past timeout.
func waitNormal(l *haLoad, event, after time.Time, timeout time.Duration) (time.Time, bool) {
	deadline := event.Add(timeout)
	for {
		outs := l.snapshot()
		j := newHAJudge(outs)
		last := event
		for _, o := range outs {
			if o.end.After(event) {
				if bad, _ := j.wrong(o); bad && o.end.After(last) {
					last = o.end
				}
			}
		}
		quietFrom := last
		if after.After(quietFrom) {
			quietFrom = after
		}
		if time.Since(quietFrom) >= haQuiet {
			return last, true
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measureEvent computes an event's figures from the outcomes of requests
// that ended in [from, to): the event at at, normal again at normal,
// budgets read before and after.
func measureEvent(name string, outs []haOutcome, at, normal, to time.Time, before, after haBudget) haEvent {
	e := haEvent{name: name, at: at, wrongRefused: map[string]int{}, normalAfter: normal.Sub(at)}
	j := newHAJudge(outs)
	for _, o := range outs {
		if o.end.Before(at) || !o.end.Before(to) {
			continue
		}
		e.answers++
		if bad, why := j.wrong(o); bad {
			e.wrongRefused[why]++
			e.refusedTotal++
			if e.firstWrong == "" {
				e.firstWrong = o.String()
			}
		}
	}
	e.worst, _, _ = j.worst(at, to)
	e.overLimit = max(0, e.worst-haLimit)
	overAfter, _, _ := j.worst(normal.Add(haSpan), to)
	e.overAfter = max(0, overAfter-haLimit)
	diff := (after.served - before.served) - (after.ledger - before.ledger)
	e.lost, e.twice = max(diff, 0), max(-diff, 0)
	e.holdsLeft = after.holds
	return e
}

// haBounds are what an event may cost, with the reason for each.
type haBounds struct {
	// recover bounds normalAfter.
	recover time.Duration
	// overLimit bounds the tokens admitted past the limit in the worst
	// window, beyond strict mode's estimate slack.
	overLimit int64
	// lost bounds the tokens served but not counted in Redis.
	lost int64
}

// checkEvent holds an event to its bounds. Charged twice and holds left
// behind are never right: a charge sent twice takes budget nobody used,
// and a hold left behind keeps budget for hold_ttl (10 minutes).
func checkEvent(t *testing.T, e haEvent, b haBounds) {
	t.Helper()
	t.Logf("%s", e)
	if !e.recoveredInTime || e.normalAfter > b.recover {
		t.Errorf("%s: answers not normal again within %v of the event (last wrong answer %.2f s after it; first: %s)",
			e.name, b.recover, e.normalAfter.Seconds(), e.firstWrong)
	}
	if allowed := int64(float64(haLimit)*haEstimateSlack) - haLimit + b.overLimit; e.overLimit > allowed {
		t.Errorf("%s: %d tokens admitted past the limit %d in one window, bound %d", e.name, e.overLimit, haLimit, allowed)
	}
	if e.overAfter > int64(float64(haLimit)*haEstimateSlack)-haLimit {
		t.Errorf("%s: %d tokens past the limit in a window after the event was over", e.name, e.overAfter)
	}
	if e.lost > b.lost {
		t.Errorf("%s: %d tokens served upstream are not counted in Redis (bound %d)", e.name, e.lost, b.lost)
	}
	if e.twice > 0 {
		t.Errorf("%s: Redis counts %d tokens more than the upstream served: charges made twice", e.name, e.twice)
	}
	if e.holdsLeft > 0 {
		t.Errorf("%s: %d holds left in Redis with nothing in flight: budget held until hold_ttl", e.name, e.holdsLeft)
	}
}

// haRun is what every event of a test shares.
type haRun struct {
	t          *testing.T
	l          *haLoad
	r          *harness.Replicas
	st         haStore
	perRequest int64
	budget     haBudget
	timeline   time.Time // where the next event's figures start
}

// startHARun warms every replica and key up (each replica loads its
// tokenizer after its ready line), learns what one request costs, starts
// the load and checks it presses the limit with every answer right.
func startHARun(t *testing.T, r *harness.Replicas, st haStore) *haRun {
	t.Helper()
	// Keys of their own: the load's records must be the whole account
	// of the load's keys.
	var per int64
	for i, u := range r.URLs {
		resp, body := postHAChat(t, u, fmt.Sprintf("ha-warm-up-%d", i))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("warm-up through replica %d: %d %s", i, resp.StatusCode, body)
		}
		per = int64(usageTotal(t, "warm-up", body))
	}
	h := &haRun{t: t, r: r, st: st, perRequest: per}
	h.l = startHALoad(t, r.URLs)
	began := time.Now()
	time.Sleep(2 * haWindow)
	h.budget = readBudget(t, h.l, r, st, per)
	h.timeline = time.Now()
	outs := h.l.snapshot()
	j := newHAJudge(outs)
	var wrong []string
	for _, o := range outs {
		if bad, why := j.wrong(o); bad {
			wrong = append(wrong, why+": "+o.String())
		}
	}
	worst, _, _ := j.worst(began, h.timeline)
	t.Logf("steady load before any event: %d answers, %d wrong, worst window %d / %d tokens; Redis holds %d tokens in ledgers, upstream served %d; a request is %d tokens",
		len(outs), len(wrong), worst, haLimit, h.budget.ledger, h.budget.served, per)
	if len(wrong) > 0 {
		t.Errorf("wrong answers with no fault: %d, first %s", len(wrong), wrong[0])
	}
	if worst < haLimit*8/10 {
		t.Errorf("worst window %d tokens of a %d limit: the load does not press the limit, the figures would prove nothing", worst, haLimit)
	}
	if over := worst - int64(float64(haLimit)*haEstimateSlack); over > 0 {
		t.Errorf("worst window %d tokens past a %d limit with no fault", worst, haLimit)
	}
	if h.budget.ledger != h.budget.served {
		t.Errorf("with no fault Redis counts %d tokens, the upstream served %d", h.budget.ledger, h.budget.served)
	}
	return h
}

// event runs act (which returns when the test's part is done: the
// failover seen, the partition restored), waits for normal answers, and
// measures. act gets the event's instant back from its own return.
func (h *haRun) event(name string, b haBounds, act func() (at, done time.Time)) haEvent {
	h.t.Helper()
	at, done := act()
	normal, ok := waitNormal(h.l, at, done, b.recover+haQuiet+5*time.Second)
	after := readBudget(h.t, h.l, h.r, h.st, h.perRequest)
	to := time.Now()
	e := measureEvent(name, h.l.snapshot(), at, normal, to, h.budget, after)
	e.recoveredInTime = ok
	h.budget, h.timeline = after, to
	checkEvent(h.t, e, b)
	return e
}

// postHAChat sends the load's request once.
func postHAChat(t *testing.T, base, key string) (*http.Response, []byte) {
	t.Helper()
	return postChatSaying(t, base, key, "Count to three, slowly.", haCompletion)
}
