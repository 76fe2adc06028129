package llm

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

func TestCompletionText(t *testing.T) {
	tests := []struct {
		name string
		api  API
		body string
		want string
	}{
		{"chat content", ChatCompletions, `{"choices":[{"message":{"role":"assistant","content":"It is noon."}}]}`, "It is noon."},
		{"chat n choices, refusal, tools", ChatCompletions,
			`{"choices":[{"message":{"content":"a"}},{"message":{"content":null,"refusal":"no","tool_calls":[{"function":{"name":"f","arguments":"{\"x\":1}"}}]}},{"message":{"content":[{"type":"text","text":"parts"}],"reasoning_content":"think"}}]}`,
			`ano{"x":1}partsthink`},
		{"chat legacy function_call", ChatCompletions, `{"choices":[{"message":{"function_call":{"name":"f","arguments":"{}"}}}]}`, "{}"},
		{"completions", Completions, `{"choices":[{"text":"one"},{"text":" two"}]}`, "one two"},
		{"responses", Responses,
			`{"output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"why"}]},{"type":"message","content":[{"type":"output_text","text":"hi"},{"type":"refusal","refusal":"nope"}]},{"type":"function_call","name":"f","arguments":"{\"a\":2}"}],"metadata":{"output":"echoed"},"instructions":"echoed"}`,
			`whyhinope{"a":2}`},
		{"embeddings", Embeddings, `{"data":[{"embedding":[0.1]}]}`, ""},
		{"echoed fields are not output", Responses, `{"Output":[{"content":[{"text":"folded"}]}],"metadata":{"choices":[{"text":"x"}]}}`, ""},
	}
	for _, tt := range tests {
		got, err := CompletionText(tt.api, []byte(tt.body))
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q (%v), want %q", tt.name, got, err, tt.want)
		}
	}
	for _, bad := range []string{`<html>`, `{"choices":"x"}`, `{"output":[1]}`, `[]`} {
		if _, err := CompletionText(ChatCompletions, []byte(bad)); err == nil && bad != `[]` {
			t.Errorf("%s: want an error", bad)
		}
	}
}

func TestCompletionTokens(t *testing.T) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100)
	body := `{"choices":[{"message":{"content":"` + text + `"}}]}`
	got, err := CompletionTokens(ChatCompletions, "gpt-4o", []byte(body))
	if want := int64(tokenize.Text("gpt-4o", text)); err != nil || got != want {
		t.Errorf("got %d (%v), want %d", got, err, want)
	}
}

// FuzzCompletionText: any answer is read without panicking, and what it
// reads is the answer's own text: unescaping only shortens valid UTF-8.
func FuzzCompletionText(f *testing.F) {
	f.Add(uint8(0), []byte(`{"choices":[{"message":{"content":"x","tool_calls":[{"function":{"arguments":"{}"}}]}}]}`))
	f.Add(uint8(3), []byte(`{"output":[{"content":[{"text":"hi"}],"summary":[{"text":"s"}]}]}`))
	f.Fuzz(func(t *testing.T, api uint8, body []byte) {
		a := API(1 + int(api)%7)
		text, err := CompletionText(a, body)
		if err == nil && utf8.Valid(body) && len(text) > len(body) {
			t.Fatalf("%d bytes of text out of a %d-byte body", len(text), len(body))
		}
	})
}
