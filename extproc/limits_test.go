package extproc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// parsePolicy builds a policy through the config loader, so derived fields
// (strict mode, overrides, quota period) are set as in production.
func parsePolicy(t *testing.T, yaml string) config.Policy {
	t.Helper()
	c, err := config.Parse([]byte("policies:\n- " + strings.ReplaceAll(strings.TrimSpace(yaml), "\n", "\n  ") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c.Policies[0]
}

func labPrompt(t *testing.T) int64 {
	t.Helper()
	r, err := llm.ParseRequest(llm.ChatCompletions, []byte(labBody))
	if err != nil {
		t.Fatal(err)
	}
	return r.PromptTokens("gpt-4o")
}

func withMax(max int) string {
	return strings.Replace(labBody, `"model":"gpt-4o"`, fmt.Sprintf(`"model":"gpt-4o","max_tokens":%d`, max), 1)
}

// inFlight plays a request up to its body, leaving it in flight: the stream
// is held open so the reservation stays, as a slow upstream would.
func (e *env) inFlight(t *testing.T, key, body string) *extprocv3.ProcessingResponse {
	t.Helper()
	return e.inFlightAt(t, "/v1/chat/completions", key, body)
}

// inFlightAt is inFlight on any path.
func (e *env) inFlightAt(t *testing.T, path, key, body string) *extprocv3.ProcessingResponse {
	t.Helper()
	p := &processor{s: e.srv, ctx: context.Background()}
	if r := p.handle(reqHeaders(false, ":method", "POST", ":path", path, "api-key", key)); r.GetImmediateResponse() != nil {
		return r
	}
	return p.handle(reqBody(body))
}

// TestStrictHoldsWhatAnyUpstreamMayGenerate: of max_tokens and
// max_completion_tokens strict mode holds the larger (vLLM and SGLang
// obey the second first), and a legacy Completions prompt array gets its
// completion budget for each prompt.
func TestStrictHoldsWhatAnyUpstreamMayGenerate(t *testing.T) {
	prompt := labPrompt(t)
	strict := "{name: lab, tokens_per_minute: 1000000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"
	e := newEnv(t, parsePolicy(t, strict))
	body := strings.Replace(labBody, `"model":"gpt-4o"`, `"model":"gpt-4o","max_tokens":1,"max_completion_tokens":5000`, 1)
	if r := e.inFlight(t, "k", body); r.GetImmediateResponse() != nil {
		t.Fatalf("refused: %v", r)
	}
	if got := e.used(t, "lab", "k"); got != prompt+5000 {
		t.Errorf("max_tokens 1 and max_completion_tokens 5000: held %d, want %d", got, prompt+5000)
	}
	e = newEnv(t, parsePolicy(t, strict))
	if r := e.inFlightAt(t, "/v1/completions", "k", `{"model":"gpt-3.5-turbo-instruct","prompt":["a","b","c","d"],"max_tokens":500}`); r.GetImmediateResponse() != nil {
		t.Fatalf("refused: %v", r)
	}
	if got := e.used(t, "lab", "k"); got < 4*500 || got > 4*500+20 {
		t.Errorf("4 prompts of max_tokens 500: held %d, want 2,000 and the four one-token prompts", got)
	}
}

func TestStrictModeReservesCompletion(t *testing.T) {
	prompt := labPrompt(t)
	e := newEnv(t, parsePolicy(t, fmt.Sprintf("{name: lab, tokens_per_minute: %d, reserve_completion: max_tokens, counter_key: {header: [api-key]}}", 2*(prompt+100))))
	for i := 0; i < 2; i++ {
		if r := e.inFlight(t, "k", withMax(100)); r.GetImmediateResponse() != nil {
			t.Fatalf("request %d refused: %v", i, r)
		}
	}
	if got := e.used(t, "lab", "k"); got != 2*(prompt+100) {
		t.Fatalf("in flight: %d held, want %d", got, 2*(prompt+100))
	}
	// A third does not fit while the two are in flight: strict mode
	// counts what they may still generate.
	r := e.inFlight(t, "k", withMax(1))
	if r.GetImmediateResponse().GetStatus().GetCode() != 429 {
		t.Fatalf("third request: %v, want 429", r)
	}
	if v, _ := headerOf(r.GetImmediateResponse().GetHeaders(), "retry-after"); v != "60" {
		t.Errorf("retry-after %q: in-flight tokens block it, want a full window", v)
	}

	// Without max_tokens the policy's number is reserved.
	e = newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, reserve_completion: \"700\", counter_key: {header: [api-key]}}"))
	e.inFlight(t, "k", labBody)
	if got := e.used(t, "lab", "k"); got != prompt+700 {
		t.Errorf("reserved %d, want prompt %d + 700", got, prompt)
	}
}

// Each of n choices may use max_tokens, and each is billed: strict mode
// holds them all.
func TestStrictModeReservesEveryChoice(t *testing.T) {
	prompt := labPrompt(t)
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
	e.inFlight(t, "n", strings.Replace(withMax(500), `"max_tokens"`, `"n":4,"max_tokens"`, 1))
	if got := e.used(t, "lab", "n"); got != prompt+4*500 {
		t.Errorf("n 4: reserved %d, want prompt %d + 4 × 500", got, prompt)
	}
	e2 := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, reserve_completion: \"700\", counter_key: {header: [api-key]}}"))
	e2.inFlight(t, "k", strings.Replace(labBody, `"model"`, `"n":3,"model"`, 1))
	if got := e2.used(t, "lab", "k"); got != prompt+3*700 {
		t.Errorf("n 3 without max_tokens: reserved %d, want prompt %d + 3 × 700", got, prompt)
	}
}

func TestStrictModeSettlesToRealCount(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 1000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
	e.run(t, fullRequest("k", "/v1/chat/completions", withMax(500), "200", chatUsage(30, 12))...)
	if got := e.used(t, "lab", "k"); got != 42 {
		t.Errorf("after settle: %d, want the real 42", got)
	}
}

func TestQuotaRefusesWith403(t *testing.T) {
	e := newEnv(t, parsePolicy(t, `{name: lab, token_quota: 100, token_quota_period: daily, counter_key: {header: [api-key]},
  headers: {remaining_quota_tokens: x-quota-remaining}}`))
	out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(60, 30))...)
	m := out[3].GetResponseBody().GetResponse().GetHeaderMutation()
	if v, _ := headerOf(m, "x-quota-remaining"); v != "10" {
		t.Errorf("x-quota-remaining = %q, want 10", v)
	}
	if _, n := headerOf(m, "x-ratelimit-limit-tokens"); n != 0 {
		t.Error("a quota-only policy advertises a per-minute limit")
	}
	e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(10, 0))...)
	// t0 is 10:00:00.25 on 2026-01-05; the day ends in 13h59m59.75s.
	out = e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"))
	ir := out[0].GetImmediateResponse()
	if ir.GetStatus().GetCode() != 403 || !strings.Contains(string(ir.GetBody()), `"code":"quota_exceeded"`) {
		t.Fatalf("got %v %s, want 403 quota_exceeded", ir.GetStatus(), ir.GetBody())
	}
	for name, want := range map[string]string{"retry-after": "50400", "retry-after-ms": "50399750", "x-should-retry": "false", "x-quota-remaining": "0"} {
		if v, n := headerOf(ir.GetHeaders(), name); v != want || n != 1 {
			t.Errorf("%s = %q (x%d), want %q", name, v, n, want)
		}
	}
	e.clock.Advance(13*time.Hour + 59*time.Minute + 59750*time.Millisecond)
	out = e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"))
	if out[0].GetImmediateResponse() != nil {
		t.Errorf("next day still refused: %v", out[0])
	}
}

func TestCountModes(t *testing.T) {
	for _, tt := range []struct {
		count string
		want  int64
	}{{"total", 90}, {"prompt", 60}, {"completion", 30}} {
		e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 1000, count: "+tt.count+", counter_key: {header: [api-key]}}"))
		out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(60, 30))...)
		if got := e.used(t, "lab", "k"); got != tt.want {
			t.Errorf("count %s: charged %d, want %d", tt.count, got, tt.want)
		}
		if v, _ := headerOf(out[3].GetResponseBody().GetResponse().GetHeaderMutation(), "x-ratelimit-remaining-tokens"); v != fmt.Sprint(1000-tt.want) {
			t.Errorf("count %s: remaining %s", tt.count, v)
		}
	}
}

func TestOverridesAndPerModel(t *testing.T) {
	gold := sha256.Sum256([]byte("gold-key"))
	e := newEnv(t, parsePolicy(t, fmt.Sprintf(`{name: lab, tokens_per_minute: 100, counter_key: {header: [api-key], per_model: true},
  overrides: [{key_sha256: %s, tokens_per_minute: 5000}]}`, hex.EncodeToString(gold[:]))))
	out := e.run(t, fullRequest("gold-key", "/v1/chat/completions", labBody, "200", chatUsage(60, 30))...)
	if v, _ := headerOf(out[3].GetResponseBody().GetResponse().GetHeaderMutation(), "x-ratelimit-limit-tokens"); v != "5000" {
		t.Errorf("gold key limit %q, want 5000", v)
	}
	e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(60, 40))...)
	// gpt-4o is spent for k; gpt-4o-mini has a budget of its own.
	mini := strings.Replace(labBody, `"gpt-4o"`, `"gpt-4o-mini"`, 1)
	if r := e.inFlight(t, "k", mini); r.GetImmediateResponse() != nil {
		t.Errorf("gpt-4o-mini refused although only gpt-4o is spent: %v", r)
	}
	if r := e.inFlight(t, "k", labBody); r.GetImmediateResponse().GetStatus().GetCode() != 429 {
		t.Errorf("gpt-4o after spending it: %v, want 429", r)
	}
	// Azure paths name the model at the headers: refused before the body.
	out = e.run(t, reqHeaders(false, ":method", "POST", ":path", "/openai/deployments/gpt-4o/chat/completions", "api-key", "k"))
	if out[0].GetImmediateResponse().GetStatus().GetCode() != 429 {
		t.Errorf("Azure gpt-4o: %v, want 429 at headers", out[0])
	}
}

func TestShadowNeverRejects(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, shadow: true, token_quota: 150, token_quota_period: hourly, counter_key: {header: [api-key]}}"))
	reg := prometheus.NewRegistry()
	e.srv.metrics = NewMetrics(reg)
	decisions := []string{}
	for i := 0; i < 4; i++ {
		out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(60, 30))...)
		for _, r := range out {
			if r.GetImmediateResponse() != nil {
				t.Fatalf("request %d: shadow mode refused: %v", i, r)
			}
		}
		md := out[3].GetDynamicMetadata().GetFields()[Namespace].GetStructValue().GetFields()
		decisions = append(decisions, md["decision"].GetStringValue())
	}
	want := []string{"allowed", "allowed", "would_reject", "would_reject"}
	if fmt.Sprint(decisions) != fmt.Sprint(want) {
		t.Errorf("decisions %v, want %v", decisions, want)
	}
	if n := testutil.ToFloat64(e.srv.metrics.requests.WithLabelValues("lab", "would_reject")); n < 2 {
		t.Errorf("would_reject counted %v times, want at least 2", n)
	}
	if got := e.used(t, "lab", "k"); got != 360 {
		t.Errorf("shadow mode charged %d, want every request's 90 (360)", got)
	}
	var logged bool
	for _, l := range e.logs.All() {
		if l.ContextMap()["decision"] == "would_reject" {
			logged = true
		}
	}
	if !logged {
		t.Error("no would_reject log line")
	}
}

func TestEstimateBudgetBounds(t *testing.T) {
	p := labPolicy()
	p.EstimatePromptTokens = true
	p.TokensPerMinute = 1 << 40
	e := newEnv(t, p)
	e.srv.metrics = NewMetrics(prometheus.NewRegistry())
	e.srv.budget = time.Nanosecond // spent before the first message
	e.inFlight(t, "k", labBody)
	if n := testutil.ToFloat64(e.srv.metrics.bounds); n != 1 {
		t.Errorf("bounded estimates counted %v, want 1", n)
	}
	if held := e.used(t, "lab", "k"); held < labPrompt(t) || held > int64(len(labBody)) {
		t.Errorf("held %d: want an upper bound between the exact %d and the body's %d bytes", held, labPrompt(t), len(labBody))
	}
}

func TestConfusedStreams(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
	// A second request_headers on one stream must not reserve twice.
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
		reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
		reqBody(withMax(100)), respHeaders("200", false), respBody(chatUsage(10, 5)))
	if got := e.used(t, "lab", "k"); got != 15 {
		t.Errorf("after a doubled request_headers: %d used, want the 15 reported", got)
	}
	// A body after settlement must not reserve again (it would never be
	// released).
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k2"),
		reqBody(withMax(100)), respHeaders("200", false), respBody(chatUsage(30, 20)), reqBody(withMax(100)))
	if got := e.used(t, "lab", "k2"); got != 50 {
		t.Errorf("after a body past settlement: %d used, want the 50 reported", got)
	}
	// Out of order: a response before any request is answered, not counted.
	out := e.run(t, respBody(chatUsage(99, 99)), reqBody(labBody))
	if len(out) != 2 || out[0].GetResponseBody() == nil || out[1].GetRequestBody() == nil {
		t.Errorf("out-of-order replies %v", out)
	}
	// GET on an inference path is not a generation.
	out = e.run(t, reqHeaders(true, ":method", "GET", ":path", "/v1/chat/completions"))
	if out[0].GetImmediateResponse() != nil {
		t.Errorf("GET /v1/chat/completions: %v, want it passed through (no key demanded)", out[0])
	}
	// A max_tokens beyond the whole budget reserves the budget, so it runs
	// on an empty window instead of being refused forever.
	e2 := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 1000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
	if r := e2.inFlight(t, "k", withMax(1_000_000_000_000)); r.GetImmediateResponse() != nil {
		t.Fatalf("huge max_tokens refused: %v", r)
	}
	if got := e2.used(t, "lab", "k"); got != 1000 {
		t.Errorf("held %d, want the whole 1000 budget", got)
	}
}

func TestSaltedKeyHash(t *testing.T) {
	plain, salted := HashKey(nil, "sk-1"), HashKey([]byte("pepper"), "sk-1")
	if plain == salted || len(salted) != 64 || HashKey([]byte("pepper"), "sk-1") != salted || HashKey([]byte("other"), "sk-1") == salted {
		t.Fatalf("plain %s salted %s", plain, salted)
	}
	e := newEnv(t)
	e.srv.salt = []byte("pepper")
	e.run(t, fullRequest("sk-1", "/v1/chat/completions", labBody, "200", chatUsage(3, 4))...)
	d, _ := e.store.Status(context.Background(), "lab:"+salted, limiter.Limits{TokensPerMinute: 100}, e.clock.Now())
	if d.Used != 7 {
		t.Errorf("salted key used %d, want 7 under the HMAC", d.Used)
	}
}
