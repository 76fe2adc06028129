package openaimock

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

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
			var got wireChoices
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "chat.completion" || got.Model != tt.wantModel || len(got.Choices) != 1 {
				t.Fatalf("got object %q model %q with %d choices, want chat.completion %q with 1", got.Object, got.Model, len(got.Choices), tt.wantModel)
			}
			ch := got.Choices[0]
			if ch.Message.Role != "assistant" || ch.FinishReason == nil || *ch.FinishReason != tt.wantFinish {
				t.Errorf("got role %q finish %v, want assistant %q", ch.Message.Role, ch.FinishReason, tt.wantFinish)
			}
			checkUsage(t, chatAPI, got.Usage, tokenize.Chat(tt.wantModel, tt.wantPrompt), tt.wantCompletion)
			if n := tokenize.Text(tt.wantModel, ch.Message.Content); n != tt.wantCompletion {
				t.Errorf("content counts %d tokens, want %d: %q", n, tt.wantCompletion, ch.Message.Content)
			}
		})
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
			st := readChunks(t, post(t, h, "/v1/chat/completions", body), "chat.completion.chunk")
			var text strings.Builder
			var finish string
			for i, c := range st.chunks {
				ch := c.Choices[0]
				if i == 0 && ch.Delta.Role != "assistant" {
					t.Errorf("first chunk has role %q, want assistant", ch.Delta.Role)
				}
				if d := ch.Delta.Content; d != nil {
					text.WriteString(*d)
				}
				if f := ch.FinishReason; f != nil {
					finish = *f
				}
			}
			if tt.wantTokens > 2*chunksPerEvent && len(st.events) < 4 {
				t.Errorf("only %d events: the text was not streamed a few tokens at a time", len(st.events))
			}
			if n := tokenize.Text("gpt-4o", text.String()); n != tt.wantTokens {
				t.Errorf("streamed text counts %d tokens, want %d", n, tt.wantTokens)
			}
			if finish != tt.wantFinish {
				t.Errorf("finish_reason: got %q, want %q", finish, tt.wantFinish)
			}
			if !tt.wantUsage {
				if len(st.usages) != 0 {
					t.Fatalf("got %d usage chunks without include_usage", len(st.usages))
				}
				return
			}
			if len(st.usages) != 1 {
				t.Fatalf("got %d usage chunks, want 1", len(st.usages))
			}
			checkUsage(t, chatAPI, st.usages[0], tokenize.Chat("gpt-4o", msgs), tt.wantTokens)
			var second map[string]json.RawMessage
			mustUnmarshal(t, st.events[1].data, &second)
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
			var got wireChoices
			decodeJSON(t, post(t, h, "/v1/chat/completions", tt.body, "x-mock-completion-tokens", tt.header), 200, &got)
			if got.Usage.CompletionTokens != tt.want {
				t.Errorf("step %d: completion_tokens: got %d, want %d", i, got.Usage.CompletionTokens, tt.want)
			}
		})
	}
}

// checkBadRequest fails unless rec is OpenAI's 400 with a message
// containing want.
func checkBadRequest(t *testing.T, rec *httptest.ResponseRecorder, want string) {
	t.Helper()
	var e apiError
	decodeJSON(t, rec, http.StatusBadRequest, &e)
	if e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, want) {
		t.Errorf("error %+v, want an invalid_request_error saying %q", e.Error, want)
	}
}

// traceOf is the mock's trace of answer id, as GET /mock/traces/{id}
// reports it.
func traceOf(t *testing.T, s *server, id string) traceRecord {
	t.Helper()
	tr, ok := s.traces.get(id)
	if !ok {
		t.Fatalf("no trace of %s", id)
	}
	return tr.snapshot()
}

// TestChatChoices: n choices, each its own text of the asked length, billed
// together, as OpenAI does.
func TestChatChoices(t *testing.T) {
	msgs := []tokenize.Message{{Role: "user", Content: "Name a colour."}}
	const msgsJSON = `"messages":[{"role":"user","content":"Name a colour."}]`
	tests := []struct {
		name       string
		extra      string
		wantN      int
		wantEach   int
		wantFinish string
	}{
		{"n 3", `,"n":3`, 3, 20, "stop"},
		{"n 1", `,"n":1`, 1, 20, "stop"},
		{"n null is one", `,"n":null`, 1, 20, "stop"},
		{"max_tokens caps each choice", `,"n":4,"max_tokens":7`, 4, 7, "length"},
		{"n 128, the most", `,"n":128,"max_tokens":2`, 128, 2, "length"},
	}
	s := newServer(config{completionTokens: 20})
	h := s.routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, "/v1/chat/completions", `{`+msgsJSON+tt.extra+`}`)
			var got wireChoices
			decodeJSON(t, rec, 200, &got)
			if len(got.Choices) != tt.wantN {
				t.Fatalf("got %d choices, want %d", len(got.Choices), tt.wantN)
			}
			texts := map[string]bool{}
			for i, ch := range got.Choices {
				if ch.Index != i || ch.Message.Role != "assistant" || ch.FinishReason == nil || *ch.FinishReason != tt.wantFinish {
					t.Errorf("choice %d: index %d role %q finish %v, want index %d assistant %q", i, ch.Index, ch.Message.Role, ch.FinishReason, i, tt.wantFinish)
				}
				if n := tokenize.Text("gpt-4o", ch.Message.Content); n != tt.wantEach {
					t.Errorf("choice %d counts %d tokens, want %d: %q", i, n, tt.wantEach, ch.Message.Content)
				}
				texts[ch.Message.Content] = true
			}
			if tt.wantEach > 2 && tt.wantN <= len(words) && len(texts) != tt.wantN {
				t.Errorf("%d choices share %d texts: each should be its own", tt.wantN, len(texts))
			}
			checkUsage(t, chatAPI, got.Usage, tokenize.Chat("gpt-4o", msgs), tt.wantN*tt.wantEach)
			tr := traceOf(t, s, idOf(t, rec.Body.String()))
			if tr.CompletionTokens != tt.wantN*tt.wantEach || !tr.Usage || (tt.wantN > 1) != (len(tr.ChoiceTexts) == tt.wantN) {
				t.Errorf("trace counts %d completion tokens in %d choice texts (usage %v), want %d in %d", tr.CompletionTokens, len(tr.ChoiceTexts), tr.Usage, tt.wantN*tt.wantEach, tt.wantN)
			}
		})
	}
}

func TestChatChoicesStream(t *testing.T) {
	msgs := []tokenize.Message{{Role: "user", Content: "Name a colour."}}
	s := newServer(config{completionTokens: 20})
	h := s.routes()
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprint("n ", n), func(t *testing.T) {
			body := fmt.Sprintf(`{"stream":true,"n":%d,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Name a colour."}]}`, n)
			st := readChunks(t, post(t, h, "/v1/chat/completions", body), "chat.completion.chunk")
			texts := make([]strings.Builder, n)
			roles, finishes := make([]int, n), make([]int, n)
			for i, c := range st.chunks {
				ch := c.Choices[0]
				if ch.Index < 0 || ch.Index >= n {
					t.Fatalf("chunk %d: choice index %d, want 0..%d", i, ch.Index, n-1)
				}
				if ch.Delta.Role == "assistant" {
					if texts[ch.Index].Len() > 0 {
						t.Errorf("choice %d: role after content", ch.Index)
					}
					roles[ch.Index]++
				}
				if ch.Delta.Content != nil {
					texts[ch.Index].WriteString(*ch.Delta.Content)
				}
				if ch.FinishReason != nil {
					finishes[ch.Index]++
				}
			}
			for i := range n {
				if got := tokenize.Text("gpt-4o", texts[i].String()); got != 20 || roles[i] != 1 || finishes[i] != 1 {
					t.Errorf("choice %d: %d tokens, %d role chunks, %d finishes; want 20, 1, 1", i, got, roles[i], finishes[i])
				}
			}
			if len(st.usages) != 1 {
				t.Fatalf("got %d usage chunks, want 1", len(st.usages))
			}
			checkUsage(t, chatAPI, st.usages[0], tokenize.Chat("gpt-4o", msgs), n*20)
			tr := traceOf(t, s, idOf(t, st.events[0].data))
			if tr.CompletionTokens != n*20 {
				t.Errorf("trace counts %d completion tokens, want %d", tr.CompletionTokens, n*20)
			}
			for i, text := range tr.ChoiceTexts {
				if text != texts[i].String() {
					t.Errorf("trace of choice %d: %q, streamed %q", i, text, texts[i].String())
				}
			}
		})
	}
}

func TestChatChoicesInvalid(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, tt := range []struct{ n, want string }{
		{"0", "Invalid 'n'"},
		{"-2", "Invalid 'n'"},
		{"129", "Invalid 'n'"},
	} {
		for _, stream := range []bool{false, true} {
			body := fmt.Sprintf(`{"stream":%v,"n":%s,"messages":[{"role":"user","content":"hi"}]}`, stream, tt.n)
			checkBadRequest(t, post(t, h, "/v1/chat/completions", body), tt.want)
		}
	}
	// best_of is a legacy Completions field; chat ignores it, as the mock
	// ignores every field it does not model.
	var got wireChoices
	decodeJSON(t, post(t, h, "/v1/chat/completions", `{"best_of":3,"messages":[]}`), 200, &got)
	if len(got.Choices) != 1 || got.Usage.CompletionTokens != 64 {
		t.Errorf("best_of on chat: %d choices, %d completion tokens; want 1, 64", len(got.Choices), got.Usage.CompletionTokens)
	}
}
