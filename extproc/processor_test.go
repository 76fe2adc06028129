package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/tokenize"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

var t0 = time.Date(2026, 1, 5, 10, 0, 0, 250_000_000, time.UTC)

const labBody = `{"model":"gpt-4o","messages":[{"role":"system","content":"You are a sarcastic unhelpful assistant."},{"role":"user","content":"Can you tell me the time, please?"}]}`

type env struct {
	srv   *Server
	store *memstore.Store
	clock *limiter.ManualClock
	logs  *observer.ObservedLogs
}

func newEnv(t *testing.T, policies ...config.Policy) *env {
	t.Helper()
	if len(policies) == 0 {
		policies = []config.Policy{labPolicy()}
	}
	core, logs := observer.New(zap.DebugLevel)
	e := &env{store: memstore.New(), clock: limiter.NewManualClock(t0), logs: logs}
	e.srv = New(Options{Policies: compiled(t, policies...), Store: e.store, Clock: e.clock, Log: zap.New(core)})
	return e
}

func labPolicy() config.Policy {
	return config.Policy{
		Name:            "lab",
		Match:           config.Match{PathPrefix: "/"},
		CounterKey:      config.CounterKey{Header: []string{"api-key", "authorization"}, Missing: config.MissingReject},
		TokensPerMinute: 500,
	}
}

// run plays one HTTP request through Process and returns the replies.
func (e *env) run(t *testing.T, msgs ...*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	t.Helper()
	fs := &fakeStream{ctx: context.Background(), in: msgs}
	if err := e.srv.Process(fs); err != nil {
		t.Fatalf("Process: %v", err)
	}
	return fs.out
}

func (e *env) used(t *testing.T, policy, key string) int64 {
	t.Helper()
	d, err := e.store.Status(context.Background(), policy+":"+hashKey(key), limiter.Limits{TokensPerMinute: 1 << 40}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return d.Used
}

func chatUsage(prompt, completion int) string {
	return fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, prompt, completion, prompt+completion)
}

func fullRequest(key, path, body, status, respBodyText string) []*extprocv3.ProcessingRequest {
	return []*extprocv3.ProcessingRequest{
		reqHeaders(false, ":method", "POST", ":path", path, "api-key", key),
		reqBody(body),
		respHeaders(status, false, "content-type", "application/json"),
		respBody(respBodyText),
	}
}

func TestCountedRequestSettlesReportedUsage(t *testing.T) {
	e := newEnv(t)
	out := e.run(t, fullRequest("k1", "/v1/chat/completions", labBody, "200", chatUsage(30, 70))...)
	if len(out) != 4 {
		t.Fatalf("got %d replies, want 4", len(out))
	}
	m := out[3].GetResponseBody().GetResponse().GetHeaderMutation()
	for name, want := range map[string]string{
		"x-ratelimit-limit-tokens":     "500",
		"x-ratelimit-remaining-tokens": "400",
		"x-ratelimit-reset-tokens":     "59.75s",
	} {
		if got, n := headerOf(m, name); got != want || n != 1 {
			t.Errorf("%s = %q (set %d times), want %q once", name, got, n, want)
		}
	}
	if got := e.used(t, "lab", "k1"); got != 100 {
		t.Errorf("used = %d, want 100", got)
	}
	md := out[3].GetDynamicMetadata().GetFields()[Namespace].GetStructValue().GetFields()
	if md["total_tokens"].GetNumberValue() != 100 || md["decision"].GetStringValue() != "allowed" {
		t.Errorf("metadata = %v", md)
	}
}

func TestRejectAtHeadersWithExactRetryAfter(t *testing.T) {
	e := newEnv(t)
	e.run(t, fullRequest("k1", "/v1/chat/completions", labBody, "200", chatUsage(100, 400))...)
	steps := []struct {
		advance     time.Duration
		status      int32
		retry, ms   string
		remainingOK bool
	}{
		{0, 429, "60", "59750", true},
		{59700 * time.Millisecond, 429, "1", "50", true},
		{50 * time.Millisecond, 0, "", "", false},
	}
	for i, st := range steps {
		e.clock.Advance(st.advance)
		out := e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k1"))
		ir := out[0].GetImmediateResponse()
		if st.status == 0 {
			if ir != nil {
				t.Fatalf("step %d: got immediate %d, want continue", i, ir.GetStatus().GetCode())
			}
			continue
		}
		if got := int32(ir.GetStatus().GetCode()); got != st.status {
			t.Fatalf("step %d: status %d, want %d", i, got, st.status)
		}
		for name, want := range map[string]string{"retry-after": st.retry, "retry-after-ms": st.ms, "x-ratelimit-remaining-tokens": "0", "content-type": "application/json"} {
			if got, n := headerOf(ir.GetHeaders(), name); got != want || n != 1 {
				t.Errorf("step %d: %s = %q (x%d), want %q once", i, name, got, n, want)
			}
		}
		var body struct {
			Error struct{ Message, Type, Code string }
		}
		if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body.Error.Code != "rate_limit_exceeded" ||
			!strings.Contains(body.Error.Message, "Try again in "+st.retry+" seconds") {
			t.Errorf("step %d: body %s (%v)", i, ir.GetBody(), err)
		}
	}
}

func TestMissingKeyIs401(t *testing.T) {
	e := newEnv(t)
	out := e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "authorization", "Basic abc"))
	ir := out[0].GetImmediateResponse()
	if ir.GetStatus().GetCode() != 401 || !strings.Contains(string(ir.GetBody()), `"code":"missing_subscription_key"`) {
		t.Fatalf("got %v %s", ir.GetStatus(), ir.GetBody())
	}
}

func TestAnonymousKey(t *testing.T) {
	p := labPolicy()
	p.CounterKey.Missing = config.MissingAnonymous
	e := newEnv(t, p)
	out := e.run(t, []*extprocv3.ProcessingRequest{
		reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions"),
		reqBody(labBody), respHeaders("200", false), respBody(chatUsage(10, 5)),
	}...)
	if len(out) != 4 {
		t.Fatalf("got %d replies", len(out))
	}
	if got := e.used(t, "lab", "anonymous"); got != 15 {
		t.Errorf("anonymous used = %d, want 15", got)
	}
}

func TestUnknownPathPassesUncounted(t *testing.T) {
	e := newEnv(t)
	out := e.run(t, reqHeaders(true, ":method", "GET", ":path", "/v1/models", "api-key", "k1"),
		respHeaders("200", false), respBody(chatUsage(10, 10)))
	if len(out) != 3 || out[0].GetImmediateResponse() != nil || out[2].GetResponseBody().GetResponse().GetHeaderMutation() != nil {
		t.Fatalf("unexpected replies %v", out)
	}
	if got := e.used(t, "lab", "k1"); got != 0 {
		t.Errorf("used = %d, want 0", got)
	}
}

func TestEstimateRefusesLargePromptAtBody(t *testing.T) {
	p := labPolicy()
	p.EstimatePromptTokens = true
	p.TokensPerMinute = 100
	e := newEnv(t, p)
	big := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("tell me the time ", 200) + `"}]}`
	out := e.run(t, fullRequest("k1", "/v1/chat/completions", big, "200", chatUsage(1, 1))...)
	if len(out) != 2 || out[1].GetImmediateResponse().GetStatus().GetCode() != 429 {
		t.Fatalf("want 429 at request body, got %v", out)
	}
	if got := e.used(t, "lab", "k1"); got != 0 {
		t.Errorf("used after refusal = %d, want 0", got)
	}
}

func TestSettlementPaths(t *testing.T) {
	labEstimate := func() int64 {
		r, _ := llm.ParseRequest(llm.ChatCompletions, []byte(labBody))
		return r.PromptTokens("gpt-4o")
	}()
	p := labPolicy()
	p.EstimatePromptTokens = true
	tests := []struct {
		name string
		msgs []*extprocv3.ProcessingRequest
		want int64
	}{
		{"upstream 500 without usage charges nothing", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(labBody), respHeaders("500", false), respBody(`{"error":{"message":"boom"}}`)}, 0},
		{"upstream 400 with usage charges usage", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(labBody), respHeaders("400", false), respBody(chatUsage(3, 0))}, 3},
		{"2xx without usage charges the estimate", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(labBody), respHeaders("200", false), respBody(`{"choices":[]}`)}, labEstimate},
		{"stream ends after request body: estimate charged once", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(labBody)}, labEstimate},
		{"response headers end the stream", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(labBody), respHeaders("204", true)}, labEstimate},
		{"malformed body passes and charges what the response says", []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
			reqBody(`{"model":`), respHeaders("400", false), respBody(`{"error":{}}`)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, p)
			e.run(t, tt.msgs...)
			d, _ := e.store.Status(context.Background(), "lab:"+hashKey("k"), limiter.Limits{TokensPerMinute: 500}, t0)
			if d.Used != tt.want {
				t.Errorf("used+reserved = %d, want %d (nothing may stay reserved)", d.Used, tt.want)
			}
		})
	}
}

func TestModelPolicyChosenAtBody(t *testing.T) {
	small := labPolicy()
	small.Name, small.Match.Models, small.TokensPerMinute = "mini", []string{"gpt-4o-mini"}, 50
	e := newEnv(t, small, labPolicy())
	e.run(t, fullRequest("k", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, "200", chatUsage(10, 10))...)
	e.run(t, fullRequest("k", "/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`, "200", chatUsage(1, 1))...)
	if got := e.used(t, "mini", "k"); got != 20 {
		t.Errorf("mini used = %d, want 20", got)
	}
	if got := e.used(t, "lab", "k"); got != 2 {
		t.Errorf("lab used = %d, want 2", got)
	}
	// Azure paths name the model in the deployment: matched at headers.
	e.run(t, fullRequest("k", "/openai/deployments/gpt-4o-mini/chat/completions", `{"messages":[]}`, "200", chatUsage(5, 0))...)
	if got := e.used(t, "mini", "k"); got != 25 {
		t.Errorf("mini used after Azure call = %d, want 25", got)
	}
}

func TestRawKeyNeverLogged(t *testing.T) {
	e := newEnv(t)
	const secret = "sk-very-secret-key-123"
	for i := 0; i < 8; i++ {
		e.run(t, []*extprocv3.ProcessingRequest{
			reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "authorization", "Bearer "+secret),
			reqBody(labBody), respHeaders("200", false), respBody(chatUsage(40, 60))}...)
	}
	if e.logs.Len() == 0 {
		t.Fatal("no logs recorded; the test would prove nothing")
	}
	for _, entry := range e.logs.All() {
		line := fmt.Sprintf("%s %v", entry.Message, entry.ContextMap())
		if strings.Contains(line, secret) {
			t.Fatalf("raw key in log: %s", line)
		}
	}
	if got := e.used(t, "lab", secret); got != 500 {
		t.Errorf("Bearer key used = %d, want 500", got)
	}
}

func TestMetricsMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t)
	e.srv.metrics = NewMetrics(reg)
	e.run(t, fullRequest("k1", "/v1/chat/completions", labBody, "200", chatUsage(300, 200))...)
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k1"))
	e.run(t, reqHeaders(true, ":method", "GET", ":path", "/v1/models"))
	m := e.srv.metrics
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"allowed", testutil.ToFloat64(m.requests.WithLabelValues("lab", "allowed")), 1},
		{"rate_limited", testutil.ToFloat64(m.requests.WithLabelValues("lab", "rate_limited")), 1},
		{"prompt tokens", testutil.ToFloat64(m.tokens.WithLabelValues("lab", "prompt", "reported")), 300},
		{"completion tokens", testutil.ToFloat64(m.tokens.WithLabelValues("lab", "completion", "reported")), 200},
		{"passthrough", testutil.ToFloat64(m.passthrough), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	for _, name := range phaseNames[:phaseOther] {
		var out dto.Metric
		if err := m.latency.WithLabelValues(name).(prometheus.Metric).Write(&out); err != nil {
			t.Fatal(err)
		}
		if n := out.GetHistogram().GetSampleCount(); n == 0 {
			t.Errorf("phase %s was never timed", name)
		}
	}
}

// A request that ends without usage is not free, whether or not its
// policy estimates prompts: abandoned after its body, the upstream read
// the prompt; a buffered answer without usage is counted from its text.
func TestRequestsWithoutUsageAreCharged(t *testing.T) {
	prompt := labPrompt(t)
	pol := labPolicy() // estimate_prompt_tokens: false
	pol.TokensPerMinute = 1 << 30
	e := newEnv(t, pol)

	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "gone"), reqBody(labBody))
	if got := e.used(t, "lab", "gone"); got != prompt {
		t.Errorf("abandoned after the body: charged %d, want the prompt's %d", got, prompt)
	}
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "headers-only"))
	if got := e.used(t, "lab", "headers-only"); got != 0 {
		t.Errorf("abandoned before the body: charged %d, want 0", got)
	}

	content := strings.Repeat("It is noon somewhere. ", 50)
	answer := `{"choices":[{"message":{"content":"` + content + `"}}]}`
	e.run(t, fullRequest("no-usage", "/v1/chat/completions", labBody, "200", answer)...)
	if got, want := e.used(t, "lab", "no-usage"), prompt+int64(tokenize.Text("gpt-4o", content)); got != want {
		t.Errorf("answer without usage: charged %d, want prompt + counted content %d", got, want)
	}
	e.run(t, fullRequest("failed", "/v1/chat/completions", labBody, "500", `{"error":{"message":"x"}}`)...)
	if got := e.used(t, "lab", "failed"); got != 0 {
		t.Errorf("failed answer without usage: charged %d, want 0", got)
	}
}

// ctxStore fails, as go-redis does, any call whose context has ended.
type ctxStore struct{ limiter.Store }

func (s ctxStore) Reserve(ctx context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	if err := ctx.Err(); err != nil {
		return limiter.Decision{}, err
	}
	return s.Store.Reserve(ctx, key, lim, n, now)
}

// Envoy gives up on a stream (its message timeout) while the body phase
// waits for the store: the request is settled as unanswered, not taken
// for the store's refusal and dropped.
func TestStreamGoneWhileAdmitting(t *testing.T) {
	prompt := labPrompt(t)
	mem := memstore.New()
	pol := parsePolicy(t, "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key], per_model: true}}")
	pols := compiled(t, pol)
	srv := New(Options{Policies: pols, Store: ctxStore{mem}, Clock: limiter.NewManualClock(t0), Log: zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	p := &processor{s: srv, ctx: ctx}
	p.handle(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"))
	cancel() // Envoy's timeout, before the body's admission is decided
	p.handle(reqBody(labBody))
	p.finish()
	d, err := mem.Status(context.Background(), pols[0].CounterKey(hashKey("k"), "gpt-4o"), limiter.Limits{TokensPerMinute: 1 << 40}, t0)
	if err != nil || d.Used != prompt {
		t.Errorf("the model's window holds %d (%v), want the unanswered prompt %d", d.Used, err, prompt)
	}
}
