package main

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

type wireCompletion struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *wireUsage `json:"usage"`
}

func TestCompletionsUsage(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantModel        string
		wantPrompt       int
		wantCompletion   int
	}{
		{"string prompt", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"Once upon a time"}`,
			"gpt-3.5-turbo-instruct", tokenize.Text("gpt-3.5-turbo-instruct", "Once upon a time"), 64},
		{"array of prompts", "/v1/completions", `{"prompt":["Once upon","a time"]}`,
			"gpt-4o", tokenize.Text("gpt-4o", "Once upon") + tokenize.Text("gpt-4o", "a time"), 64},
		{"token ids", "/v1/completions", `{"prompt":[1,2,3,4]}`, "gpt-4o", 4, 64},
		{"token id arrays", "/v1/completions", `{"prompt":[[1,2],[3,4,5]]}`, "gpt-4o", 5, 64},
		{"azure deployment", "/openai/deployments/davinci-002/completions?api-version=2024-10-21", `{"prompt":"Once upon a time","max_tokens":16}`,
			"davinci-002", tokenize.Text("davinci-002", "Once upon a time"), 16},
		{"no prompt", "/v1/completions", `{"max_tokens":2}`, "gpt-4o", 0, 2},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got wireCompletion
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "text_completion" || got.Model != tt.wantModel || len(got.Choices) != 1 {
				t.Fatalf("got object %q model %q with %d choices", got.Object, got.Model, len(got.Choices))
			}
			u := got.Usage
			if u.PromptTokens != tt.wantPrompt || u.CompletionTokens != tt.wantCompletion || u.TotalTokens != tt.wantPrompt+tt.wantCompletion {
				t.Errorf("usage: got %d+%d=%d, want %d+%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens, tt.wantPrompt, tt.wantCompletion)
			}
			if n := tokenize.Text(tt.wantModel, got.Choices[0].Text); n != tt.wantCompletion {
				t.Errorf("text counts %d tokens, want %d", n, tt.wantCompletion)
			}
		})
	}
}

func TestCompletionsStream(t *testing.T) {
	tests := []struct {
		name      string
		extra     string
		wantUsage bool
	}{
		{"plain", ``, false},
		{"include_usage", `,"stream_options":{"include_usage":true}`, true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := parseSSE(t, post(t, h, "/v1/completions", `{"prompt":"Once upon a time","stream":true`+tt.extra+`}`))
			if last := events[len(events)-1]; last.data != "[DONE]" {
				t.Fatalf("last event: got %+v, want [DONE]", last)
			}
			var text strings.Builder
			var usages []*wireUsage
			for _, e := range events[:len(events)-1] {
				var c wireCompletion
				mustUnmarshal(t, e.data, &c)
				if c.Usage != nil {
					usages = append(usages, c.Usage)
					continue
				}
				text.WriteString(c.Choices[0].Text)
			}
			if n := tokenize.Text("gpt-4o", text.String()); n != 64 {
				t.Errorf("streamed text counts %d tokens, want 64", n)
			}
			if got := len(usages); got != map[bool]int{false: 0, true: 1}[tt.wantUsage] {
				t.Fatalf("got %d usage chunks, include_usage %v", got, tt.wantUsage)
			}
			if tt.wantUsage {
				u, prompt := usages[0], tokenize.Text("gpt-4o", "Once upon a time")
				if u.PromptTokens != prompt || u.CompletionTokens != 64 || u.TotalTokens != prompt+64 {
					t.Errorf("usage: got %+v, want %d+64", u, prompt)
				}
			}
		})
	}
}
