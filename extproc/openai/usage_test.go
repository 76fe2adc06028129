package openai

import "testing"

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":5}}}`,
			Usage{Prompt: 30, Completion: 12, Total: 42, Cached: 8, Reasoning: 5}, true},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}`, Usage{Prompt: 7, Total: 7}, true},
		{"responses", `{"usage":{"input_tokens":10,"output_tokens":4,"total_tokens":14,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}`,
			Usage{Prompt: 10, Completion: 4, Total: 14, Cached: 2, Reasoning: 1}, true},
		{"total missing", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, Usage{Prompt: 3, Completion: 4, Total: 7}, true},
		{"negative clamped", `{"usage":{"prompt_tokens":-30,"completion_tokens":5,"total_tokens":-25}}`, Usage{Completion: 5, Total: 5}, true},
		{"no usage", `{"error":{"message":"bad"}}`, Usage{}, false},
		{"null usage", `{"usage":null}`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseUsage([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if _, _, err := ParseUsage([]byte("<html>")); err == nil {
		t.Error("non-JSON body: want error")
	}
}

func FuzzParseUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}`))
	f.Add([]byte(`{"usage":{"input_tokens":1e3,"output_tokens":-1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		u, _, err := ParseUsage(body)
		if err != nil {
			return
		}
		if u.Prompt < 0 || u.Completion < 0 || u.Total < u.Prompt+u.Completion {
			t.Fatalf("usage out of bounds: %+v", u)
		}
	})
}
