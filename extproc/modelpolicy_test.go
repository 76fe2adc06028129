package extproc

import (
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// answered plays one buffered chat request with the given first message
// and body, the upstream reporting 50 tokens, and returns the status
// tokengate answered with itself (0 when it let the request through).
func (e *env) answered(t *testing.T, first *extprocv3.ProcessingRequest, body string) int {
	t.Helper()
	out := e.run(t, first, reqBody(body), respHeaders("200", false, "content-type", "application/json"), respBody(chatUsage(40, 10)))
	for _, o := range out {
		if imm := o.GetImmediateResponse(); imm != nil {
			return int(imm.GetStatus().GetCode())
		}
	}
	return 0
}

// TestModelOnlyPolicies: when every policy of a path is restricted to
// models, an OpenAI request (whose model is in its body) waits for its
// body to pick its policy: the listed model is counted and refused once
// spent, another model passes uncounted, and a body whose model cannot
// be read falls under the path's first policy, whose unreadable_body
// decides it.
func TestModelOnlyPolicies(t *testing.T) {
	chat := func() *extprocv3.ProcessingRequest {
		return reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k")
	}
	e := newEnv(t, parsePolicy(t, "{name: gpt4o, match: {models: [gpt-4o]}, tokens_per_minute: 100, counter_key: {header: [api-key]}}"))
	var statuses []int
	for range 3 {
		statuses = append(statuses, e.answered(t, chat(), labBody))
	}
	if got := e.used(t, "gpt4o", "k"); got != 100 || statuses[2] != 429 {
		t.Errorf("gpt-4o's policy holds %d after three requests of 50 tokens, statuses %v; want 100, and the third refused", got, statuses)
	}
	other := strings.Replace(labBody, `"gpt-4o"`, `"gpt-4o-mini"`, 1)
	if got := e.answered(t, chat(), other); got != 0 {
		t.Errorf("a model no policy lists: status %d, want let through", got)
	}
	e = newEnv(t, parsePolicy(t, "{name: gpt4o, match: {models: [gpt-4o]}, tokens_per_minute: 100, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
	if got := e.answered(t, chat(), `{"model":"gpt-4o","messages":`); got != 400 {
		t.Errorf("a body cut short under a strict model policy: status %d, want 400 (unreadable_body: refuse)", got)
	}
	if got := e.answered(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions"), labBody); got != 401 {
		t.Errorf("no key: status %d, want 401", got)
	}
}
