package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// Requests abandoned after their request body went on, under a policy
// that does not estimate prompts (issue 19): the upstream read the
// prompt and bills it, so tokengate charges it, counted when the stream
// ends since nothing was counted at the body. TestFaultClientCutsStream
// does the same under a policy that estimates.

// abandonPrompt is one user message of about 2,000 tokens, as in the
// issue's report (~2,200): one message, so estimate_budget cannot bound
// its count, which must then be exact.
func abandonPrompt() string {
	var b strings.Builder
	for i := 0; b.Len() < 9000; i++ {
		fmt.Fprintf(&b, "Paragraph %d: the fox crossed the river at dawn, counted the stones on the far bank, and wrote down what the water said. ", i)
	}
	return b.String()
}

// abandonConfig estimates nothing and reserves no completion: a request
// holds nothing between its body and its settlement.
func abandonConfig(store string) string {
	return store + `
estimate_budget: 1s
policies:
- name: abandon
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
`
}

func TestFaultAbandonedWithoutEstimate(t *testing.T) {
	needBinaries(t)
	t.Run("bbolt", func(t *testing.T) {
		s := harness.StartStack(t, harness.StackOptions{FakeClock: labClock,
			ConfigYAML: abandonConfig(`store: {backend: bbolt, bbolt: {path: "{{DB}}", flush_interval: 100ms}}`)})
		runAbandons(t, s, nil)
	})
	t.Run("redis", func(t *testing.T) {
		rds := harness.StartRedis(t)
		s := harness.StartStack(t, harness.StackOptions{ConfigYAML: abandonConfig(fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: 2s, read_timeout: 2s, write_timeout: 2s, on_error: fail_closed}`, rds.Addr()))})
		runAbandons(t, s, rds)
	})
}

// runAbandons resets raw ext_proc streams (as Envoy does when the client
// goes away) after the request body was answered, after a buffered
// answer's headers, and after an error's headers, and checks what each
// was charged: the prompt's exact count once, or nothing for an error.
func runAbandons(t *testing.T, s *harness.Stack, rds *harness.Redis) {
	admin := s.Tokengate.Field("admin")
	raw := harness.DialRawProcess(t, s.Tokengate.Field("grpc"))
	content := abandonPrompt()
	count := int64(tokenize.Chat("gpt-4o", []tokenize.Message{{Role: "user", Content: content}}))
	if count < 1500 {
		t.Fatalf("the prompt counts %d tokens, want about 2,000", count)
	}
	cases := []struct {
		name string
		// after are the messages sent, each answered, before the reset.
		after  []*extprocsvc.ProcessingRequest
		prompt int64
		// sources are the names the count may go by, one of which takes
		// all of it: a request that got no response at all is
		// "unanswered" (charge_unanswered: prompt, the default), one that
		// got a 200's headers "estimated" (no completion seen), an error
		// "none".
		sources []string
	}{
		{"after request_body", nil, count, []string{"unanswered"}},
		{"after a 200's response_headers", []*extprocsvc.ProcessingRequest{harness.RawResponseHeaders(http.StatusOK, "application/json")}, count, []string{"estimated"}},
		{"after a 500's response_headers", []*extprocsvc.ProcessingRequest{harness.RawResponseHeaders(http.StatusInternalServerError, "application/json")}, 0, []string{"none"}},
	}
	for i, tc := range cases {
		key := fmt.Sprintf("abandon-%d", i)
		decided := faultDecisions(t, admin, "abandon")
		prompt0, completion0 := faultTokens(t, admin, "abandon")
		sources0 := promptBySource(t, admin, "abandon")
		st := raw.Open(t)
		msgs := append([]*extprocsvc.ProcessingRequest{
			harness.RawRequestHeaders("/v1/chat/completions", "api-key", key),
			harness.RawRequestBody(faultChatBody(t, content, 500, false), true),
		}, tc.after...)
		sent := playAnswered(t, tc.name, st, msgs)
		// Estimation off: nothing was counted or held at the body.
		held := faultUsage(t, admin, "abandon", key).GetUsedTokens()
		st.Reset()
		waitDecisions(t, tc.name, admin, "abandon", decided+1)
		// A second reset of the same stream: the stream is gone already,
		// and must not be settled again (checked by the counts below and
		// by the next request's, which waitDecisions fails on if a second
		// settlement slipped in).
		st.Reset()
		prompt, completion := faultTokens(t, admin, "abandon")
		prompt, completion = prompt-prompt0, completion-completion0
		source, bySource := movedSource(promptBySource(t, admin, "abandon"), sources0)
		u := faultUsage(t, admin, "abandon", key)
		var holds []string
		left := "n/a (bbolt)"
		if rds != nil {
			holds = waitNoHolds(t, rds.Addr())
			left = fmt.Sprint(holds)
		}
		t.Logf("abandoned %s (after %v), estimation off: held %d before the reset; tokengate charged %d prompt + %d completion (source %s: %v), the window holds %d, the prompt counts %d; holds left in redis: %s",
			tc.name, sent, held, prompt, completion, source, bySource, u.GetUsedTokens(), count, left)
		if held != 0 {
			t.Errorf("%s: the window held %d before the reset, want 0: the policy neither estimates nor reserves", tc.name, held)
		}
		if prompt != tc.prompt || completion != 0 || bySource != float64(tc.prompt) || (tc.prompt != 0 && !slices.Contains(tc.sources, source)) {
			t.Errorf("%s: charged %d prompt + %d completion (%v of it under source %s), want the prompt's %d tokens exactly, all of one source of %v, and no completion",
				tc.name, prompt, completion, bySource, source, tc.prompt, tc.sources)
		}
		if u.GetUsedTokens() != tc.prompt {
			t.Errorf("%s: the window holds %d, want the %d charged once", tc.name, u.GetUsedTokens(), tc.prompt)
		}
		if holds != nil {
			t.Errorf("%s: reservations left in redis: %v", tc.name, holds)
		}
		// Settled once: a full request afterwards adds exactly its own
		// charge and its own settlement.
		r := faultSend(context.Background(), directClient, s.URL, key, faultChatBody(t, "And then?", 10, false), "x-mock-completion-tokens", "10")
		if r.status != http.StatusOK {
			t.Fatalf("%s: the next request on the key: %d %s", tc.name, r.status, r.err)
		}
		waitDecisions(t, tc.name+", then a full request", admin, "abandon", decided+2)
		if got := faultUsage(t, admin, "abandon", key).GetUsedTokens(); got != tc.prompt+r.total {
			t.Errorf("%s: after one more request of %d tokens the window holds %d, want %d", tc.name, r.total, got, tc.prompt+r.total)
		}
	}
}

// lateModelConfig is lateConfig's store under a per_model policy that
// does not estimate: at the request body the model becomes known and the
// admit is redone against the model's own budget, a store call that the
// latency proxy makes late. (Without per_model, a policy that neither
// estimates nor reserves calls no store at the body, and nothing could
// make its reply late.)
func lateModelConfig(redisAddr string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: fail_closed, retry_interval: %v}
estimate_budget: 1s
policies:
- name: latemodel
  counter_key: {header: [api-key], per_model: true}
  tokens_per_minute: 100000
`, redisAddr, lateReadTimeout, lateReadTimeout, lateReadTimeout, faultRetry)
}

// TestFaultMessageTimeoutWithoutEstimate is TestFaultMessageTimeout's
// request_body case under a policy that does not estimate: the front
// answers 504 and resets the stream, and the upstream is never called.
// tokengate cannot tell that (with failure_mode_allow the request would
// have gone on), so it settles an unknown outcome as it does for a client
// that went away: the prompt's count, exactly once, and no completion.
func TestFaultMessageTimeoutWithoutEstimate(t *testing.T) {
	needBinaries(t)
	rds := harness.StartRedis(t)
	proxy := harness.StartLatencyProxy(t, rds.Addr())
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: lateModelConfig(proxy.Addr())})
	admin := s.Tokengate.Field("admin")
	late := startLateFront(t, s, lateTimeout)
	content := abandonPrompt()
	body := faultChatBody(t, content, lateMax, false)
	count := int64(tokenize.Chat("gpt-4o", []tokenize.Message{{Role: "user", Content: content}}))
	const key, model = "late-model-at-body", "gpt-4o"

	callsBefore, _ := s.MockCalls()
	allowed := faultMetric(t, admin, "tokengate_requests_total", "policy", "latemodel", "decision", "allowed")
	decided := faultDecisions(t, admin, "latemodel")
	prompt0, completion0 := faultTokens(t, admin, "latemodel")
	unanswered := []string{"unanswered"} // README "How counting works": Envoy's message timeout at the body
	sources0 := promptBySource(t, admin, "latemodel")
	errs0 := faultMetric(t, admin, "tokengate_store_errors_total")
	logMark := len(s.Tokengate.Stderr())

	// The body is held back until the headers are decided on a fast
	// Redis; only the body's store calls meet the slow one.
	headers := headersDecided(t, admin)
	status, got := lateSend(t, late.url, key, body, func() {
		waitHeadersDecided(t, admin, headers)
		proxy.SetDelay(lateDelay)
	})
	proxy.SetDelay(0)
	rec := late.record(t, 1)
	// The stream is over once the front has its record; tokengate settles
	// it on the reset, once its late store calls returned. (A request it
	// refused would count here too: allowedNow below tells them apart.)
	waitDecisions(t, "504 at request_body", admin, "latemodel", decided+1)
	storeErrs := faultMetric(t, admin, "tokengate_store_errors_total") - errs0
	tripped := waitBreakerClosed(t, admin)
	callsAfter, _ := s.MockCalls()
	prompt, completion := faultTokens(t, admin, "latemodel")
	prompt, completion = prompt-prompt0, completion-completion0
	source, bySource := movedSource(promptBySource(t, admin, "latemodel"), sources0)
	allowedNow := faultMetric(t, admin, "tokengate_requests_total", "policy", "latemodel", "decision", "allowed") - allowed
	u := modelUsage(t, admin, "latemodel", key, model)
	headersWindow := modelUsage(t, admin, "latemodel", key, "").GetUsedTokens()
	holds := waitNoHolds(t, rds.Addr())

	t.Logf("late at request_body (per_model, estimation off): client saw %d %q; front: timed out %v after sending %v, upstream called %v; tokengate counted %v allowed, charged %d prompt + %d completion (source %s: %v), the %s window holds %d (the headers' model-less window %d), the prompt counts %d; holds left %v; store errors %v; mock calls %d → %d",
		status, rec.Details, rec.TimedOut, rec.Sent, rec.UpstreamCalled, allowedNow, prompt, completion, source, bySource, model, u.GetUsedTokens(), headersWindow, count, holds, storeErrs, callsBefore, callsAfter)
	if status != http.StatusGatewayTimeout || !rec.TimedOut || rec.Details != "ext_proc_error_per-message_timeout_exceeded" {
		t.Fatalf("%d %s (record %+v), want the front's 504 for a missed message timeout", status, got, rec)
	}
	if last := rec.Sent[len(rec.Sent)-1]; last != "request_body" {
		t.Errorf("the last message sent was %s, want request_body", last)
	}
	if rec.UpstreamCalled || callsAfter != callsBefore {
		t.Errorf("the upstream was called (record %v, mock calls %d → %d)", rec.UpstreamCalled, callsBefore, callsAfter)
	}
	if allowedNow != 1 || prompt != count || completion != 0 || bySource != float64(count) || !slices.Contains(unanswered, source) || u.GetUsedTokens() != count || headersWindow != 0 {
		t.Errorf("regression (extproc/processor.go requestBody → release + admit): Envoy gave up at the request body of a per_model request under a policy that does not estimate; "+
			"tokengate counted %v allowed settlements, charged %d prompt + %d completion (source %s: %v), and the %s window holds %d (the model-less one %d); "+
			"want 1 settlement of the prompt's %d tokens exactly, all of one source of %v, no completion, in the model's window, as for a client that goes away after the body (TestFaultAbandonedWithoutEstimate). "+
			"Once the model is known the headers-phase admission is redone, release() then admit(0), store calls on the stream's context; Envoy's timeout cancels that context during the first (slow) call, "+
			"so the Reserve fails at once with context canceled (go-redis checks the context before taking a connection). Taken for fail_closed's refusal (decision unavailable, release), "+
			"the request is settled as nothing, although with failure_mode_allow Envoy forwards it to the upstream. Log since the request: %q",
			allowedNow, prompt, completion, source, bySource, model, u.GetUsedTokens(), headersWindow, count, unanswered, decisionLines(s.Tokengate.Stderr()[logMark:]))
	}
	if holds != nil {
		t.Errorf("reservations left in redis: %v", holds)
	}
	if down := unavailableLines(s.Tokengate.Stderr()[logMark:]); tripped || len(down) > 0 {
		t.Errorf("Redis answered within its timeouts, yet tokengate took it for down (%v store errors; fallback gauge 1 when looked at: %v; log: %q)", storeErrs, tripped, down)
	}

	// Settled once: a full request afterwards, through the stack's own
	// front, adds exactly its own charge and its own settlement.
	r := faultSend(context.Background(), directClient, s.URL, key, faultChatBody(t, "And then?", 10, false), "x-mock-completion-tokens", "10")
	if r.status != http.StatusOK {
		t.Fatalf("the next request on the key: %d %s", r.status, r.err)
	}
	waitDecisions(t, "then a full request", admin, "latemodel", decided+2)
	if got := modelUsage(t, admin, "latemodel", key, model).GetUsedTokens(); got != u.GetUsedTokens()+r.total {
		t.Errorf("after one more request of %d tokens the window holds %d, want %d", r.total, got, u.GetUsedTokens()+r.total)
	}
}

// promptBySource reads the prompt tokens charged under policy by each
// source of a count.
func promptBySource(t *testing.T, admin, policy string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, src := range []string{"reported", "counted", "estimated", "unanswered", "none"} {
		m[src] = faultMetric(t, admin, "tokengate_tokens_total", "policy", policy, "kind", "prompt", "source", src)
	}
	return m
}

// movedSource names the source whose count moved from before to now, and
// by how much; several moving is reported as all of them, by their sum,
// which the callers' checks then refuse unless the sum alone is right, so
// the name says so.
func movedSource(now, before map[string]float64) (string, float64) {
	var names []string
	var by float64
	for src, v := range now {
		if d := v - before[src]; d != 0 {
			names = append(names, src)
			by += d
		}
	}
	switch len(names) {
	case 0:
		return "(none moved)", 0
	case 1:
		return names[0], by
	}
	return fmt.Sprintf("%v (several moved: not one source)", names), -1
}

// modelUsage is faultUsage for a per_model policy: key's counter for
// model ("" for the budget drawn on before the model is known).
func modelUsage(t *testing.T, admin, policy, key, model string) *adminv1.Usage {
	t.Helper()
	conn, err := grpc.NewClient(admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), faultAdminTimeout)
	defer cancel()
	resp, err := adminv1.NewAdminServiceClient(conn).GetUsage(ctx, &adminv1.GetUsageRequest{
		Key: &adminv1.Key{Key: &adminv1.Key_Raw{Raw: key}}, Policy: policy, Model: model,
	})
	if err != nil {
		t.Fatalf("GetUsage %s %s: %v", policy, model, err)
	}
	if len(resp.GetUsage()) != 1 {
		t.Fatalf("GetUsage %s %s: %d counters, want 1", policy, model, len(resp.GetUsage()))
	}
	return resp.GetUsage()[0]
}

// decisionLines keeps the log lines about decisions and the store, to
// say what tokengate did with a request.
func decisionLines(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "decision") || strings.Contains(line, "store") || strings.Contains(line, "settled") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}
