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

// TestUnreadableAnswerChargesItsOutputBudget: a 2xx answer without usage
// that tokengate cannot read (Gemini's alt=proto here, a protobuf body)
// is charged its prompt and its whole output budget, not the prompt
// alone; a readable answer without usage is still counted from its text.
func TestUnreadableAnswerChargesItsOutputBudget(t *testing.T) {
	pol := "{name: lab, tokens_per_minute: 1000000, counter_key: {header: [x-goog-api-key]}}"
	req := `{"contents":[{"parts":[{"text":"Write a very long story."}]}],"generationConfig":{"maxOutputTokens":60000,"candidateCount":2}}`
	proto := "\x0a\x80\x80\x10\x0a\xfc\xff\x0f" + strings.Repeat("story ", 40000)
	e := newEnv(t, parsePolicy(t, pol))
	e.run(t,
		reqHeaders(false, ":method", "POST", ":path", "/v1beta/models/gemini-2.5-pro:generateContent?alt=proto", "x-goog-api-key", "k"),
		reqBody(req),
		respHeaders("200", false, "content-type", "application/x-protobuf"),
		respBody(proto))
	if got := e.used(t, "lab", "k"); got < 120000 || got > 120020 {
		t.Errorf("an answer in protobuf: charged %d, want the prompt and 2 × maxOutputTokens 60,000", got)
	}
	e = newEnv(t, parsePolicy(t, pol))
	e.run(t,
		reqHeaders(false, ":method", "POST", ":path", "/v1beta/models/gemini-2.5-pro:generateContent", "x-goog-api-key", "k"),
		reqBody(req),
		respHeaders("200", false, "content-type", "application/json"),
		respBody(`{"candidates":[{"content":{"parts":[{"text":"Once upon a time."}]}}]}`))
	if got := e.used(t, "lab", "k"); got > 40 {
		t.Errorf("a JSON answer without usage: charged %d, want the prompt and its few tokens of text", got)
	}
}
