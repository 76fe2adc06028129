package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

type wireChat struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *wireUsage `json:"usage"`
}

func TestChatUsage(t *testing.T) {
	sys := tokenize.Message{Role: "system", Content: "You are terse."}
	user := tokenize.Message{Role: "user", Name: "ann", Content: "Say hello to the world, twice."}
	tests := []struct {
		name, path, body string
		wantModel        string
		wantPrompt       []tokenize.Message
		wantCompletion   int
		wantFinish       string
	}{
		{
			name: "string content", path: "/v1/chat/completions",
			body:      `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","name":"ann","content":"Say hello to the world, twice."}]}`,
			wantModel: "gpt-4o-mini", wantPrompt: []tokenize.Message{sys, user}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "text parts", path: "/openai/v1/chat/completions",
			body:      `{"model":"gpt-4.1","messages":[{"role":"user","name":"ann","content":[{"type":"text","text":"Say hello to the world,"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":" twice."}]}]}`,
			wantModel: "gpt-4.1", wantPrompt: []tokenize.Message{user}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "azure deployment names the model", path: "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21",
			body:      `{"messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-35-turbo", wantPrompt: []tokenize.Message{sys}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "body model wins over deployment", path: "/openai/deployments/gpt-35-turbo/chat/completions",
			body:      `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-4o", wantPrompt: []tokenize.Message{sys}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "foundry path, default model, null content", path: "/models/chat/completions",
			body:      `{"messages":[{"role":"assistant","content":null}]}`,
			wantModel: "gpt-4o", wantPrompt: []tokenize.Message{{Role: "assistant"}}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "max_tokens caps", path: "/v1/chat/completions",
			body:      `{"model":"gpt-4","max_tokens":10,"messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-4", wantPrompt: []tokenize.Message{sys}, wantCompletion: 10, wantFinish: "length",
		},
		{
			name: "tighter of max_tokens and max_completion_tokens", path: "/v1/chat/completions",
			body:      `{"max_tokens":10,"max_completion_tokens":5,"messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-4o", wantPrompt: []tokenize.Message{sys}, wantCompletion: 5, wantFinish: "length",
		},
		{
			name: "a loose max_tokens changes nothing", path: "/v1/chat/completions",
			body:      `{"max_completion_tokens":1000,"messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-4o", wantPrompt: []tokenize.Message{sys}, wantCompletion: 64, wantFinish: "stop",
		},
		{
			name: "max_tokens zero", path: "/v1/chat/completions",
			body:      `{"max_tokens":0,"messages":[{"role":"system","content":"You are terse."}]}`,
			wantModel: "gpt-4o", wantPrompt: []tokenize.Message{sys}, wantCompletion: 0, wantFinish: "length",
		},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got wireChat
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "chat.completion" || got.Model != tt.wantModel || len(got.Choices) != 1 {
				t.Fatalf("got object %q model %q with %d choices, want chat.completion %q with 1", got.Object, got.Model, len(got.Choices), tt.wantModel)
			}
			ch := got.Choices[0]
			if ch.Message.Role != "assistant" || ch.FinishReason == nil || *ch.FinishReason != tt.wantFinish {
				t.Errorf("got role %q finish %v, want assistant %q", ch.Message.Role, ch.FinishReason, tt.wantFinish)
			}
			checkChatUsage(t, got.Usage, tokenize.Chat(tt.wantModel, tt.wantPrompt), tt.wantCompletion)
			if n := tokenize.Text(tt.wantModel, ch.Message.Content); n != tt.wantCompletion {
				t.Errorf("content counts %d tokens, want %d: %q", n, tt.wantCompletion, ch.Message.Content)
			}
		})
	}
}

func checkChatUsage(t *testing.T, u *wireUsage, prompt, completion int) {
	t.Helper()
	if u == nil {
		t.Fatal("no usage")
	}
	if u.PromptTokens != prompt || u.CompletionTokens != completion || u.TotalTokens != prompt+completion {
		t.Errorf("usage: got %d+%d=%d, want %d+%d=%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens, prompt, completion, prompt+completion)
	}
	if u.PromptTokensDetails == nil || u.PromptTokensDetails.CachedTokens == nil ||
		u.CompletionTokensDetails == nil || u.CompletionTokensDetails.ReasoningTokens == nil {
		t.Errorf("usage lacks cached_tokens or reasoning_tokens: %+v", u)
	}
}

func TestChatStream(t *testing.T) {
	msgs := []tokenize.Message{{Role: "user", Content: "Count to three."}}
	tests := []struct {
		name       string
		extra      string
		wantUsage  bool
		wantTokens int
		wantFinish string
	}{
		{"plain", ``, false, 64, "stop"},
		{"include_usage", `,"stream_options":{"include_usage":true}`, true, 64, "stop"},
		{"include_usage false", `,"stream_options":{"include_usage":false}`, false, 64, "stop"},
		{"capped", `,"max_tokens":7,"stream_options":{"include_usage":true}`, true, 7, "length"},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Count to three."}]` + tt.extra + `}`
			events := parseSSE(t, post(t, h, "/v1/chat/completions", body))
			if last := events[len(events)-1]; last.data != "[DONE]" || last.name != "" {
				t.Fatalf("last event: got %+v, want data [DONE]", last)
			}
			var text strings.Builder
			var usages []*wireUsage
			var finish string
			for i, e := range events[:len(events)-1] {
				var c wireChat
				mustUnmarshal(t, e.data, &c)
				if c.Object != "chat.completion.chunk" {
					t.Fatalf("event %d: object %q", i, c.Object)
				}
				if c.Usage != nil {
					usages = append(usages, c.Usage)
					if len(c.Choices) != 0 {
						t.Errorf("event %d: usage chunk has %d choices, want 0", i, len(c.Choices))
					}
					continue
				}
				if i == 0 && c.Choices[0].Delta.Role != "assistant" {
					t.Errorf("first chunk has role %q, want assistant", c.Choices[0].Delta.Role)
				}
				if d := c.Choices[0].Delta.Content; d != nil {
					text.WriteString(*d)
				}
				if f := c.Choices[0].FinishReason; f != nil {
					finish = *f
				}
			}
			if tt.wantTokens > 2*chunksPerEvent && len(events) < 4 {
				t.Errorf("only %d events: the text was not streamed a few tokens at a time", len(events))
			}
			if n := tokenize.Text("gpt-4o", text.String()); n != tt.wantTokens {
				t.Errorf("streamed text counts %d tokens, want %d", n, tt.wantTokens)
			}
			if finish != tt.wantFinish {
				t.Errorf("finish_reason: got %q, want %q", finish, tt.wantFinish)
			}
			if !tt.wantUsage {
				if len(usages) != 0 {
					t.Fatalf("got %d usage chunks without include_usage", len(usages))
				}
				return
			}
			if len(usages) != 1 {
				t.Fatalf("got %d usage chunks, want 1", len(usages))
			}
			checkChatUsage(t, usages[0], tokenize.Chat("gpt-4o", msgs), tt.wantTokens)
			var second map[string]json.RawMessage
			mustUnmarshal(t, events[1].data, &second)
			if string(second["usage"]) != "null" {
				t.Errorf(`chunks before the last should carry "usage": null, got %s`, second["usage"])
			}
		})
	}
}

func TestCompletionTokensOverride(t *testing.T) {
	h := newServer(config{completionTokens: 20}).routes()
	tests := []struct {
		header string
		body   string
		want   int
	}{
		{"", `{"messages":[]}`, 20},
		{"3", `{"messages":[]}`, 3},
		{"0", `{"messages":[]}`, 0},
		{"500", `{"messages":[],"max_tokens":200}`, 200},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var got wireChat
			decodeJSON(t, post(t, h, "/v1/chat/completions", tt.body, "x-mock-completion-tokens", tt.header), 200, &got)
			if got.Usage.CompletionTokens != tt.want {
				t.Errorf("step %d: completion_tokens: got %d, want %d", i, got.Usage.CompletionTokens, tt.want)
			}
		})
	}
}
