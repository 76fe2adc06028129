package openaimock

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

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
			var got wireChoices
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "text_completion" || got.Model != tt.wantModel || len(got.Choices) != 1 {
				t.Fatalf("got object %q model %q with %d choices", got.Object, got.Model, len(got.Choices))
			}
			checkUsage(t, completionsAPI, got.Usage, tt.wantPrompt, tt.wantCompletion)
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
			rec := post(t, h, "/v1/completions", `{"prompt":"Once upon a time","stream":true`+tt.extra+`}`)
			st := readChunks(t, rec, "text_completion")
			var text strings.Builder
			for _, c := range st.chunks {
				text.WriteString(c.Choices[0].Text)
			}
			if n := tokenize.Text("gpt-4o", text.String()); n != 64 {
				t.Errorf("streamed text counts %d tokens, want 64", n)
			}
			if got := len(st.usages); got != map[bool]int{false: 0, true: 1}[tt.wantUsage] {
				t.Fatalf("got %d usage chunks, include_usage %v", got, tt.wantUsage)
			}
			if tt.wantUsage {
				checkUsage(t, completionsAPI, st.usages[0], tokenize.Text("gpt-4o", "Once upon a time"), 64)
			}
		})
	}
}

// TestCompletionsChoices: best_of candidates are generated and billed, n
// of them returned, as OpenAI does.
func TestCompletionsChoices(t *testing.T) {
	prompt := tokenize.Text("gpt-4o", "Once upon a time")
	tests := []struct {
		name          string
		extra         string
		wantN         int
		wantGenerated int
		wantEach      int
	}{
		{"n 2", `,"n":2`, 2, 2, 20},
		{"best_of 3, n 1", `,"best_of":3,"n":1`, 1, 3, 20},
		{"best_of 3, n by default", `,"best_of":3`, 1, 3, 20},
		{"best_of 4, n 2", `,"best_of":4,"n":2`, 2, 4, 20},
		{"best_of equal to n", `,"best_of":3,"n":3`, 3, 3, 20},
		{"best_of 1", `,"best_of":1`, 1, 1, 20},
		{"null n and best_of", `,"best_of":null,"n":null`, 1, 1, 20},
		{"max_tokens caps each candidate", `,"best_of":3,"max_tokens":5`, 1, 3, 5},
		{"n past best_of's bound, best_of unset", `,"n":30,"max_tokens":1`, 30, 30, 1},
	}
	s := newServer(config{completionTokens: 20})
	h := s.routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, "/v1/completions", `{"prompt":"Once upon a time"`+tt.extra+`}`)
			var got wireChoices
			decodeJSON(t, rec, 200, &got)
			if len(got.Choices) != tt.wantN {
				t.Fatalf("got %d choices, want %d", len(got.Choices), tt.wantN)
			}
			for i, ch := range got.Choices {
				if n := tokenize.Text("gpt-4o", ch.Text); ch.Index != i || n != tt.wantEach || ch.FinishReason == nil {
					t.Errorf("choice %d: index %d, %d tokens, finish %v; want index %d, %d tokens, a finish_reason", i, ch.Index, n, ch.FinishReason, i, tt.wantEach)
				}
			}
			// The usage bills every candidate generated.
			checkUsage(t, completionsAPI, got.Usage, prompt, tt.wantGenerated*tt.wantEach)
			// The trace is what was sent: the n choices returned.
			if tr := traceOf(t, s, idOf(t, rec.Body.String())); tr.CompletionTokens != tt.wantN*tt.wantEach {
				t.Errorf("trace counts %d completion tokens sent, want %d", tr.CompletionTokens, tt.wantN*tt.wantEach)
			}
		})
	}
}

func TestCompletionsChoicesStream(t *testing.T) {
	prompt := tokenize.Text("gpt-4o", "Once upon a time")
	s := newServer(config{completionTokens: 20})
	h := s.routes()
	for _, extra := range []string{`"n":3`, `"n":2,"best_of":2`} {
		t.Run(extra, func(t *testing.T) {
			body := `{"prompt":"Once upon a time","stream":true,"stream_options":{"include_usage":true},` + extra + `}`
			st := readChunks(t, post(t, h, "/v1/completions", body), "text_completion")
			texts := map[int]string{}
			finishes := map[int]int{}
			for _, c := range st.chunks {
				ch := c.Choices[0]
				texts[ch.Index] += ch.Text
				if ch.FinishReason != nil {
					finishes[ch.Index]++
				}
			}
			n := len(texts)
			if n < 2 || len(st.usages) != 1 {
				t.Fatalf("%d choice indexes, %d usage chunks; want 2 or 3, and 1", n, len(st.usages))
			}
			for i := range n {
				if got := tokenize.Text("gpt-4o", texts[i]); got != 20 || finishes[i] != 1 {
					t.Errorf("choice %d: %d tokens, %d finishes; want 20, 1", i, got, finishes[i])
				}
			}
			checkUsage(t, completionsAPI, st.usages[0], prompt, n*20)
		})
	}
}

func TestCompletionsChoicesInvalid(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, tt := range []struct{ extra, want string }{
		{`"n":0`, "Invalid 'n'"},
		{`"n":-1`, "Invalid 'n'"},
		{`"n":129`, "Invalid 'n'"},
		{`"best_of":0`, "best_of must be greater than or equal to n"},
		{`"best_of":1,"n":2`, "best_of must be greater than or equal to n"},
		{`"best_of":2,"n":3`, "best_of must be greater than or equal to n"},
		{`"best_of":21`, "Invalid 'best_of'"},
		{`"best_of":2,"stream":true`, "Cannot stream results with best_of greater than n"},
		{`"best_of":3,"n":2,"stream":true`, "Cannot stream results with best_of greater than n"},
	} {
		t.Run(tt.extra, func(t *testing.T) {
			checkBadRequest(t, post(t, h, "/v1/completions", fmt.Sprintf(`{"prompt":"hi",%s}`, tt.extra)), tt.want)
		})
	}
}
