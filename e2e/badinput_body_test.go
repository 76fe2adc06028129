package e2e

import (
	"bufio"
	"cmp"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestBadInputBodies sends request bodies of the wrong shape. What is not
// JSON of the expected shape is the upstream's to judge under a policy that
// can bound it: it passes to the upstream, which answers 400, and costs
// nothing (an estimating policy holds its bytes meanwhile). Strict mode
// refuses it itself (unreadable_body: refuse). Deep nesting must not
// blow a stack or miss the message timeout (biWantProtocol checks every
// reply came in time).
func TestBadInputBodies(t *testing.T) {
	r := startBadInput(t)
	deepArrays := `{"model":"gpt-4o","messages":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`
	deepObjects := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":` +
		strings.Repeat(`{"a":`, 40_000) + `1` + strings.Repeat("}", 40_000) + `}`
	// Within encoding/json's depth limit (10,000), so tokengate parses it
	// and estimates a content it cannot read as text.
	deepContent := `{"model":"gpt-4o","messages":[{"role":"user","content":` + strings.Repeat("[", 9_000) + strings.Repeat("]", 9_000) + `}]}`
	if len(deepArrays) >= biReceiveLimit {
		t.Fatalf("the nested body is %d bytes, over the receive limit: it would test the limit instead", len(deepArrays))
	}
	passed := func(name, key, path, policy, body string, debug bool) biRow {
		row := biRow{
			name: name, path: path, policy: policy, headers: []string{"api-key", key}, body: []byte(body),
			status: http.StatusBadRequest, upstream: true,
			charged: map[string]int64{key: 0}, moves: []biMove{biAllowedOnce(cmp.Or(policy, "bad"))},
		}
		if debug {
			row.debugKey = key
		}
		return row
	}
	rows := []biRow{
		passed("messages is a string", "bi-msg-string", "", "", `{"model":"gpt-4o","messages":"hello"}`, false),
		passed("messages is a number", "bi-msg-number", "", "", `{"model":"gpt-4o","messages":42}`, false),
		passed("messages is an object", "bi-msg-object", "", "", `{"model":"gpt-4o","messages":{"role":"user","content":"hi"}}`, false),
		passed("messages holds numbers", "bi-msg-numbers", "", "", `{"model":"gpt-4o","messages":[1,2,3]}`, false),
		passed("messages is null", "bi-msg-null", "", "", `{"model":"gpt-4o","messages":null}`, false),
		passed("content is an object", "bi-content-object", "", "", `{"model":"gpt-4o","messages":[{"role":"user","content":{"text":"hi"}}]}`, false),
		passed("model is a number", "bi-model-number", "", "", `{"model":42,"messages":[{"role":"user","content":"hi"}]}`, true),
		// What pydantic's lax mode coerces, tokengate reads as it does (a
		// Python-served upstream serves it); this upstream, like OpenAI,
		// refuses it, and it costs nothing.
		passed("stream is a string", "bi-stream-string", "", "", `{"model":"gpt-4o","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, false),
		passed("max_tokens is a string", "bi-max-string", "", "", `{"model":"gpt-4o","max_tokens":"100","messages":[{"role":"user","content":"hi"}]}`, false),
		passed("max_tokens is a string, strict mode", "bi-max-string-strict", biStrictPath, "strict", `{"model":"gpt-4o","max_tokens":"100","messages":[{"role":"user","content":"hi"}]}`, false),
		passed("stream is a word no server reads", "bi-stream-word", "", "", `{"model":"gpt-4o","stream":"maybe","messages":[{"role":"user","content":"hi"}]}`, true),
		// Strict mode cannot bound what it cannot read: unreadable_body
		// defaults to refuse there, and tokengate answers the 400 itself.
		{
			name: "max_tokens is not a number, strict mode", path: biStrictPath, policy: "strict",
			headers: []string{"api-key", "bi-max-word-strict"},
			body:    []byte(`{"model":"gpt-4o","max_tokens":"a hundred","messages":[{"role":"user","content":"hi"}]}`),
			status:  http.StatusBadRequest, charged: map[string]int64{"bi-max-word-strict": 0},
			moves: []biMove{
				{name: "tokengate_requests_total", labels: []string{"policy", "strict", "decision", "unreadable_body"}, by: 1},
				{name: "tokengate_unreadable_bodies_total", labels: []string{"policy", "strict", "reason", "json", "action", "refuse"}, by: 1},
			},
		},
		passed("100,000 nested arrays in messages", "bi-deep-arrays", "", "", deepArrays, true),
		passed("40,000 nested objects beside messages", "bi-deep-objects", "", "", deepObjects, true),
		passed("9,000 nested arrays as a content", "bi-deep-content", "", "", deepContent, false),
		passed("body is a JSON array", "bi-top-array", "", "", `[{"model":"gpt-4o"}]`, true),
		passed("body is empty", "bi-empty-body", "", "", ``, false),
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) { r.run(t, r.Front, r.URL, row) })
	}

	// max_tokens in strict mode, read from the reservation while the
	// request is in flight.
	strict := []struct {
		name      string
		key       string
		maxTokens any
		wantHold  int64 // the reservation while in flight
	}{
		{"max_tokens negative is ignored", "bi-max-negative", -5, biPrompt() + biStrictReserve},
		{"max_tokens zero is ignored", "bi-max-zero", 0, biPrompt() + biStrictReserve},
		{"max_tokens small is reserved", "bi-max-small", 40, biPrompt() + 40},
		// Clamped to what the window leaves after the prompt: the whole
		// window is reserved, so it is admitted on an empty one.
		{"max_tokens huge is clamped to the window", "bi-max-huge", int64(1_000_000_000_000), biStrictLimit},
	}
	for _, tt := range strict {
		t.Run(tt.name, func(t *testing.T) {
			if held := r.holdInFlight(t, tt.key, map[string]any{"max_tokens": tt.maxTokens}); held != tt.wantHold {
				t.Errorf("the request holds %d in flight, want %d (its prompt is %d)", held, tt.wantHold, biPrompt())
			}
		})
	}
}

// holdInFlight sends a streamed chat on the strict policy whose upstream
// stalls after its first event, and returns what the key's window holds
// while the answer is open: the request's reservation. It then hangs up
// and waits for the settlement, which charges the prompt estimate alone
// (nothing of the completion came through), so no hold is left behind.
func (r *biRig) holdInFlight(t *testing.T, key string, extra map[string]any) int64 {
	t.Helper()
	extra["stream"] = true
	req := r.request(t, r.URL, http.MethodPost, biStrictPath, biChat(t, extra),
		"api-key", key, "x-mock-completion-tokens", "30", "x-mock-stall-after", "1", "x-mock-stall", "1m")
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d on an empty window, want 200 (admitted); body %s", resp.StatusCode, body)
	}
	if events, err := readEvents(bufio.NewReader(resp.Body), 1); err != nil || len(events) != 1 {
		t.Fatalf("first event: %v (%d events)", err, len(events))
	}
	held := r.used(t, "strict", key)
	resp.Body.Close() // hang up while the upstream stalls
	r.waitUsed(t, "strict", key, biPrompt())
	return held
}
