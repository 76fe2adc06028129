package openaimock

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNoUsage: x-mock-no-usage leaves the usage member out of a buffered
// answer of every API, and changes nothing else; streams keep theirs.
func TestNoUsage(t *testing.T) {
	tests := []struct {
		path, body string
		// content is the member that must still be there.
		content string
	}{
		{"/v1/chat/completions", `{"n":2,"messages":[{"role":"user","content":"hi"}]}`, "choices"},
		{"/v1/completions", `{"best_of":2,"prompt":"hi"}`, "choices"},
		{"/v1/embeddings", `{"input":["hi","there"]}`, "data"},
		{"/v1/responses", `{"input":"hi"}`, "output"},
	}
	s := newServer(testConfig())
	h := s.routes()
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			for _, v := range []string{"true", "1", "false", ""} {
				rec := post(t, h, tt.path, tt.body, "x-mock-no-usage", v)
				var got map[string]json.RawMessage
				decodeJSON(t, rec, 200, &got)
				_, has := got["usage"]
				want := v == "false" || v == ""
				if has != want || len(got[tt.content]) < 3 {
					t.Errorf("x-mock-no-usage %q: usage present %v, want %v; %s %s", v, has, want, tt.content, got[tt.content])
				}
				if want && strings.Contains(string(got["usage"]), "null") {
					t.Errorf("x-mock-no-usage %q: usage %s", v, got["usage"])
				}
				if tt.path == "/v1/embeddings" {
					continue // embeddings are not traced
				}
				tr := traceOf(t, s, idOf(t, rec.Body.String()))
				if tr.Usage != want || tr.CompletionTokens == 0 || !tr.Done {
					t.Errorf("x-mock-no-usage %q: trace %+v, want usage %v with the text", v, tr, want)
				}
			}
		})
	}
	// A stream is shaped by include_usage and x-mock-ignore-include-usage,
	// not by this header.
	events := parseSSE(t, post(t, h, "/v1/chat/completions", chatStream, "x-mock-no-usage", "true"))
	var usages int
	for _, e := range events {
		if strings.Contains(e.data, `"usage":{`) {
			usages++
		}
	}
	if usages != 1 {
		t.Errorf("a stream asking include_usage under x-mock-no-usage: %d usage chunks, want 1", usages)
	}
}
