package llm

import (
	"strings"
	"testing"
)

// TestPromptExtras: what an upstream bills as prompt beside the messages
// (tool definitions, earlier tool calls and their outputs, token ids)
// counts in the estimate, so that a request cannot carry its prompt where
// an estimate does not look.
func TestPromptExtras(t *testing.T) {
	words := strings.Repeat("lorem ipsum dolor sit amet ", 200) // ~1,000 tokens
	ids := strings.TrimSuffix(strings.Repeat("1234,", 1000), ",")
	for _, tc := range []struct {
		name string
		api  API
		body string
		min  int64
	}{
		{"chat tools", ChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"` + words + `"}}]}`, 1000},
		{"chat functions", ChatCompletions, `{"messages":[],"functions":[{"name":"f","description":"` + words + `"}]}`, 1000},
		{"chat tool_calls", ChatCompletions, `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"` + words + `"}}]}]}`, 1000},
		{"responses function_call_output", Responses, `{"input":[{"type":"function_call_output","call_id":"c","output":"` + words + `"}]}`, 1000},
		{"responses function_call", Responses, `{"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"` + words + `"}]}`, 1000},
		{"responses tools", Responses, `{"input":"hi","tools":[{"type":"function","name":"f","description":"` + words + `"}]}`, 1000},
		{"anthropic tools", Messages, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","description":"` + words + `","input_schema":{}}]}`, 1000},
		{"gemini tools", GenerateContent, `{"contents":[{"parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"f","description":"` + words + `"}]}]}`, 1000},
		{"converse toolConfig", Converse, `{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"f","description":"` + words + `"}}]}}`, 1000},
		{"completions token ids", Completions, `{"prompt":[` + ids + `]}`, 1000},
		{"completions token id arrays", Completions, `{"prompt":[[` + ids + `],[1,2]]}`, 1002},
		{"embeddings token ids", Embeddings, `{"input":[[` + ids + `]]}`, 1000},
	} {
		r, err := ParseRequest(tc.api, []byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := r.PromptTokens("gpt-4o"); got < tc.min {
			t.Errorf("%s: estimate %d, want at least %d", tc.name, got, tc.min)
		}
	}
	// Echoed elsewhere, they count as nothing: only where the upstream reads.
	r, _ := ParseRequest(ChatCompletions, []byte(`{"messages":[],"metadata":{"tools":"`+words+`"}}`))
	if got := r.PromptTokens("gpt-4o"); got > 10 {
		t.Errorf("tools inside metadata: estimate %d, want the empty prompt's", got)
	}
}
