package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// budgetEnv is an env on a whole configuration, prices included.
func budgetEnv(t *testing.T, yaml string) (*env, *policy.Policy) {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := policy.CompileAll(c.Policies, c.Prices)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.srv = New(Options{Policies: ps, Store: e.store, Clock: e.clock, Log: e.srv.log})
	return e, ps[0]
}

// usedOf reads what each limit of the policy holds for a key.
func (e *env) usedOf(t *testing.T, p *policy.Policy, key string) map[string]int64 {
	t.Helper()
	b := p.BudgetFor(hashKey(key), "")
	d, err := e.store.StatusMany(context.Background(), p.CounterKey(hashKey(key), ""), b, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for i, l := range b {
		out[l.Name] = d.Limits[i].Used
	}
	return out
}

const budgetYAML = `store: {backend: memory}
prices:
  models:
    gpt-4o: {input: 2.50, cached_input: 1.25, output: 10}
policies:
- name: team
  counter_key: {header: [api-key]}
  limits:
  - {name: requests, unit: requests, max: 3, window: 1m}
  - {name: input, unit: tokens, kind: input, max: 1000, window: 1m}
  - {name: output, unit: tokens, kind: output, max: 500, window: 1m}
  - {name: dollars, unit: cost, max: 0.01, period: daily}
`

// refusalOf returns a request's refusal, failing when it was admitted.
func refusalOf(t *testing.T, out []*extprocv3.ProcessingResponse) *extprocv3.ImmediateResponse {
	t.Helper()
	for _, r := range out {
		if ir := r.GetImmediateResponse(); ir != nil {
			return ir
		}
	}
	t.Fatal("admitted, want a refusal")
	return nil
}

func admitted(out []*extprocv3.ProcessingResponse) bool {
	for _, r := range out {
		if r.GetImmediateResponse() != nil {
			return false
		}
	}
	return true
}

// Each limit refuses when it alone is spent, and the refusal names it:
// its status, its message, its x-ratelimit-* and the metadata.
func TestEveryLimitRefusesByName(t *testing.T) {
	tests := []struct {
		limit      string
		usage      string // each admitted request's answer
		admits     int    // requests admitted before the refusal
		status     int32
		header     string // the x-ratelimit-limit-* header the refusal carries, and its value
		headerWant string
	}{
		// 3 requests a minute, each small.
		{"requests", chatUsage(10, 10), 3, 429, "x-ratelimit-limit-requests", "3"},
		// 600 input tokens each: 600 < 1,000 admits a second, then
		// 1,200 ≥ 1,000 (APIM's check: admitted while used < max).
		{"input", chatUsage(600, 1), 2, 429, "x-ratelimit-limit-tokens", "1000"},
		// 300 output tokens each: 300 < 500, 600 ≥ 500.
		{"output", chatUsage(1, 300), 2, 429, "x-ratelimit-limit-tokens", "500"},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			e, _ := budgetEnv(t, budgetYAML)
			for i := 0; i < tt.admits; i++ {
				if out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", tt.usage)...); !admitted(out) {
					t.Fatalf("request %d refused, want %d admitted", i+1, tt.admits)
				}
			}
			ir := refusalOf(t, e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", tt.usage)...))
			if int32(ir.GetStatus().GetCode()) != tt.status {
				t.Errorf("status %d, want %d", ir.GetStatus().GetCode(), tt.status)
			}
			var body struct {
				Error struct{ Message, Code string }
			}
			if err := json.Unmarshal(ir.GetBody(), &body); err != nil || !strings.Contains(body.Error.Message, `"`+tt.limit+`"`) {
				t.Errorf("body %s (%v): want the message to name %q", ir.GetBody(), err, tt.limit)
			}
			if v, _ := headerOf(ir.GetHeaders(), tt.header); v != tt.headerWant {
				t.Errorf("%s = %q, want %q", tt.header, v, tt.headerWant)
			}
			if v, _ := headerOf(ir.GetHeaders(), "ratelimit-policy"); !strings.Contains(v, `"requests";q=3;qu="requests";w=60`) ||
				!strings.Contains(v, `"dollars";q=10000;qu="cost";w=86400`) {
				t.Errorf("ratelimit-policy %q: want every limit", v)
			}
			if v, _ := headerOf(ir.GetHeaders(), "retry-after"); v == "" || v == "0" {
				t.Errorf("retry-after %q", v)
			}
		})
	}
}

// Cost is each part of the reported usage at its price, rounded up per
// part, in micro-units: cached input at its own price.
func TestCostChargedFromUsage(t *testing.T) {
	e, p := budgetEnv(t, budgetYAML)
	usage := `{"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":250,"total_tokens":550,"prompt_tokens_details":{"cached_tokens":100}}}`
	out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...)
	if !admitted(out) {
		t.Fatal("refused")
	}
	// 200 × 2.50 + 100 × 1.25 + 250 × 10 = 500 + 125 + 2,500 micro-units.
	want := map[string]int64{"requests": 1, "input": 300, "output": 250, "dollars": 3125}
	if got := e.usedOf(t, p, "k"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("used %v, want %v", got, want)
	}
	var md map[string]float64
	for _, r := range out {
		if s := r.GetDynamicMetadata().GetFields()[Namespace].GetStructValue(); s != nil {
			md = map[string]float64{}
			for k, v := range s.GetFields() {
				md[k] = v.GetNumberValue()
			}
		}
	}
	if md["cost_micros"] != 3125 {
		t.Errorf("metadata cost_micros %v, want 3125", md["cost_micros"])
	}
}

// The daily cost refuses with 403 and x-should-retry: false until the
// UTC day ends; the window limits free themselves in a minute.
func TestCostQuotaRefusesUntilTheDayEnds(t *testing.T) {
	e, _ := budgetEnv(t, budgetYAML)
	// 480 output tokens: $0.0048 each, with the prompt's 1 token
	// (3 micro-units): 4,803. Two spend 9,606 < 10,000, so a third is
	// admitted (14,409), a minute apart each for the output window; the
	// fourth waits for the day.
	usage := chatUsage(1, 480)
	for i := 0; i < 3; i++ {
		if !admitted(e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...)) {
			t.Fatalf("request %d refused", i+1)
		}
		e.clock.Advance(61 * time.Second)
	}
	ir := refusalOf(t, e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...))
	if ir.GetStatus().GetCode() != 403 || !strings.Contains(string(ir.GetBody()), `Quota \"dollars\"`) {
		t.Fatalf("%d %s, want 403 naming dollars", ir.GetStatus().GetCode(), ir.GetBody())
	}
	if v, _ := headerOf(ir.GetHeaders(), "x-should-retry"); v != "false" {
		t.Errorf("x-should-retry %q", v)
	}
	_, end := limiter.Daily.Bounds(e.clock.Now())
	e.clock.Advance(end.Sub(e.clock.Now()))
	if !admitted(e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...)) {
		t.Error("refused on the next day")
	}
}

// A model the prices do not list is refused under a cost limit, before
// the upstream sees it; with a default price it is priced by it.
func TestUnpricedModelRefused(t *testing.T) {
	e, _ := budgetEnv(t, budgetYAML)
	body := strings.Replace(labBody, "gpt-4o", "o9-preview", 1)
	ir := refusalOf(t, e.run(t, fullRequest("k", "/v1/chat/completions", body, "200", chatUsage(1, 1))...))
	if ir.GetStatus().GetCode() != 400 || !strings.Contains(string(ir.GetBody()), "model_not_priced") {
		t.Errorf("%d %s, want 400 model_not_priced", ir.GetStatus().GetCode(), ir.GetBody())
	}
	withDefault := strings.Replace(budgetYAML, "  models:\n", "  default: {input: 1, output: 1}\n  models:\n", 1)
	e, p := budgetEnv(t, withDefault)
	if !admitted(e.run(t, fullRequest("k", "/v1/chat/completions", body, "200", chatUsage(1000, 1000))...)) {
		t.Fatal("refused with a default price")
	}
	if got := e.usedOf(t, p, "k")["dollars"]; got != 2000 {
		t.Errorf("cost %d, want 2,000 micro-units at the default price", got)
	}
}

// Strict mode holds the cost of the prompt estimate and of the
// completion budget, so requests in flight cannot spend a cost window
// together.
func TestStrictModeReservesCost(t *testing.T) {
	prompt := labPrompt(t)
	// Each request holds prompt × 2.5 + 100 × 10 micro-units; the window
	// fits two of them and not three.
	hold := (prompt*2_500_000+999_999)/1_000_000 + 1000
	yaml := fmt.Sprintf(`store: {backend: memory}
prices: {models: {gpt-4o: {input: 2.50, output: 10}}}
policies:
- name: team
  counter_key: {header: [api-key]}
  reserve_completion: max_tokens
  limits:
  - {name: dollars, unit: cost, max: 0.%06d, window: 1m}
`, 2*hold+hold/2)
	e, p := budgetEnv(t, yaml)
	for i := 0; i < 2; i++ {
		if r := e.inFlight(t, "k", withMax(100)); r.GetImmediateResponse() != nil {
			t.Fatalf("request %d refused: %s", i+1, r.GetImmediateResponse().GetBody())
		}
	}
	if got := e.usedOf(t, p, "k")["dollars"]; got != 2*hold {
		t.Errorf("held %d, want %d", got, 2*hold)
	}
	r := e.inFlight(t, "k", withMax(100))
	if ir := r.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 429 {
		t.Errorf("third in flight: %v, want 429", r)
	}
}

// A request that says it has no body is held in its request limits at
// once: nothing later would hold it.
func TestRequestWithoutBodyHeldAtHeaders(t *testing.T) {
	e, p := budgetEnv(t, budgetYAML)
	pr := &processor{s: e.srv, ctx: context.Background()}
	if r := pr.handle(reqHeaders(true, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k")); r.GetImmediateResponse() != nil {
		t.Fatal("refused")
	}
	if got := e.usedOf(t, p, "k")["requests"]; got != 1 {
		t.Errorf("requests held %d, want 1", got)
	}
}

// A tier names limits and gets their maxes; other callers keep the
// policy's.
func TestTierNamesLimits(t *testing.T) {
	e, p := budgetEnv(t, `store: {backend: memory}
policies:
- name: team
  counter_key: {header: [api-key]}
  limits:
  - {name: requests, unit: requests, max: 1, window: 1m}
  tiers:
    header: x-tier
    levels: {gold: {limits: {requests: 3}}}
`)
	send := func(key, tier string) bool {
		msgs := fullRequest(key, "/v1/chat/completions", labBody, "200", chatUsage(1, 1))
		msgs[0] = reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", key, "x-tier", tier)
		return admitted(e.run(t, msgs...))
	}
	for key, want := range map[string]int{"plain": 1, "gold": 3} {
		n := 0
		for send(key, key) {
			n++
			if n > 10 {
				break
			}
		}
		if n != want {
			t.Errorf("%s: %d admitted, want %d", key, n, want)
		}
	}
	if b := p.BudgetFor("", "gold"); b[0].Max != 3 || p.BudgetFor("", "")[0].Max != 1 {
		t.Errorf("budgets %v %v", b, p.BudgetFor("", ""))
	}
}

// TestPathModelIsTheModel: on a path that names the model (an Azure
// deployment here), the upstream serves that model whatever the body's
// "model" says; so does tokengate's accounting: a made-up body model
// picks neither a fresh per-model budget nor a cheaper price.
func TestPathModelIsTheModel(t *testing.T) {
	const path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, counter_key: {header: [api-key], per_model: true}}"))
	for i := range 3 {
		body := strings.Replace(labBody, `"gpt-4o"`, fmt.Sprintf(`"made-up-%d"`, i), 1)
		out := e.run(t, fullRequest("k", path, body, "200", chatUsage(60, 40))...)
		refused := out[0].GetImmediateResponse() != nil || out[1].GetImmediateResponse() != nil
		if refused != (i > 0) {
			t.Errorf("request %d on deployment gpt-4o, 100 tokens a request against 100: refused %v", i, refused)
		}
	}
	e, p := budgetEnv(t, `store: {backend: memory}
prices:
  models:
    gpt-4o: {input: 2.50, output: 10}
    gpt-4o-mini: {input: 0.15, output: 0.60}
policies:
- name: lab
  counter_key: {header: [api-key]}
  limits:
  - {name: dollars, unit: cost, max: 100, period: daily}
`)
	body := strings.Replace(labBody, `"gpt-4o"`, `"gpt-4o-mini"`, 1)
	e.run(t, fullRequest("k", path, body, "200", chatUsage(1000, 1000))...)
	// gpt-4o's price: 1,000 tokens at $2.50 and 1,000 at $10 a million.
	if got := e.usedOf(t, p, "k")["dollars"]; got != 12500 {
		t.Errorf("deployment gpt-4o charged %d micro-units, want 12,500 (its own price, not the body's gpt-4o-mini)", got)
	}
}
