package openai

import (
	"strings"
	"testing"
)

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
		{"exponents and floats", `{"usage":{"prompt_tokens":1e3,"completion_tokens":2.9,"total_tokens":"1002"}}`, Usage{Prompt: 1000, Completion: 2, Total: 1002}, true},
		{"NaN and absurd", `{"usage":{"prompt_tokens":"NaN","completion_tokens":1e300,"total_tokens":"Infinity"}}`, Usage{Completion: MaxCount, Total: MaxCount}, true},
		{"garbage counts", `{"usage":{"prompt_tokens":"lots","completion_tokens":[1],"total_tokens":{}}}`, Usage{}, true},
		{"no usage", `{"error":{"message":"bad"}}`, Usage{}, false},
		{"null usage", `{"usage":null}`, Usage{}, false},
		{"usage last, after a big body", `{"choices":[{"message":{"content":"` + strings.Repeat("x", 1<<16) + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}`, Usage{Prompt: 5, Completion: 6, Total: 11}, true},
		{"pretty printed", "{\n  \"usage\" :\n  {\"total_tokens\": 3, \"prompt_tokens\": 3}\n}", Usage{Prompt: 3, Total: 3}, true},
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
	for _, body := range []string{"<html>", `{"choices":[{"message":{"content":"the \"usage\": {\"total_tokens\": 99}"}}]}`} {
		if u, ok, err := ParseUsage([]byte(body)); ok || err != nil {
			t.Errorf("%s: got %+v %v %v, want no usage", body, u, ok, err)
		}
	}
	if _, _, err := ParseUsage([]byte(`{"usage":{"prompt_tokens":1,}}`)); err == nil {
		t.Error("malformed usage: want error")
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
