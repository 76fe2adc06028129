package extproc

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/config"
)

// TestBackgroundResponseChargesItsOutputBudget: a Responses request run
// in the background is answered at once ("queued", no usage) and its
// output fetched later by a GET tokengate does not count; it is charged
// its prompt and its whole output budget, answered or hung up on, and
// its reported usage when it streams to the end.
func TestBackgroundResponseChargesItsOutputBudget(t *testing.T) {
	const req = `{"model":"o3","input":"Write a long novel.","background":true,"max_output_tokens":100000}`
	const queued = `{"id":"resp_1","object":"response","status":"queued","background":true,"output":[],"usage":null}`
	pol := "{name: lab, tokens_per_minute: 1000000, counter_key: {header: [api-key]}}"
	e := newEnv(t, parsePolicy(t, pol))
	e.run(t, fullRequest("k", "/v1/responses", req, "200", queued)...)
	if got := e.used(t, "lab", "k"); got < 100000 || got > 100020 {
		t.Errorf("queued: charged %d, want the prompt and max_output_tokens 100,000", got)
	}
	// Hung up on after the request body: the upstream may be running it.
	e = newEnv(t, parsePolicy(t, pol))
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/responses", "api-key", "k"), reqBody(req))
	if got := e.used(t, "lab", "k"); got < 100000 {
		t.Errorf("hung up on: charged %d, want at least max_output_tokens 100,000", got)
	}
	// No max_output_tokens: the completion budget strict mode falls back to.
	e = newEnv(t, parsePolicy(t, pol))
	e.run(t, fullRequest("k", "/v1/responses", strings.Replace(req, `,"max_output_tokens":100000`, "", 1), "200", queued)...)
	if got := e.used(t, "lab", "k"); got < config.DefaultCompletionBudget || got > config.DefaultCompletionBudget+20 {
		t.Errorf("no max_output_tokens: charged %d, want the prompt and %d", got, config.DefaultCompletionBudget)
	}
	// Not in the background, the same answer is an answer without output.
	e = newEnv(t, parsePolicy(t, pol))
	e.run(t, fullRequest("k", "/v1/responses", strings.Replace(req, `"background":true`, `"background":false`, 1), "200", queued)...)
	if got := e.used(t, "lab", "k"); got > 20 {
		t.Errorf("not in the background: charged %d, want the prompt alone", got)
	}
	// Reported usage is exact, background or not.
	e = newEnv(t, parsePolicy(t, pol))
	done := `{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":12,"output_tokens":3000,"total_tokens":3012}}`
	e.run(t, fullRequest("k", "/v1/responses", req, "200", done)...)
	if got := e.used(t, "lab", "k"); got != 3012 {
		t.Errorf("usage reported: charged %d, want 3,012", got)
	}
}
