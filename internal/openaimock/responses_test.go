package openaimock

import (
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

type wireResponse struct {
	Object            string `json:"object"`
	Status            string `json:"status"`
	Model             string `json:"model"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []struct {
		Type    string `json:"type"`
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *wireUsage `json:"usage"`
}

func (r wireResponse) text() string {
	var b strings.Builder
	for _, o := range r.Output {
		for _, c := range o.Content {
			if c.Type == "output_text" {
				b.WriteString(c.Text)
			}
		}
	}
	return b.String()
}

func TestResponses(t *testing.T) {
	conv := []tokenize.Message{{Role: "developer", Content: "Be brief."}, {Role: "user", Content: "Hi there, how are you?"}}
	tests := []struct {
		name, path, body string
		wantModel        string
		wantInput        int
		wantOutput       int
		wantStatus       string
	}{
		{"string input", "/v1/responses", `{"model":"gpt-5","input":"Tell me a joke."}`,
			"gpt-5", tokenize.Text("gpt-5", "Tell me a joke."), 64, "completed"},
		{"messages", "/openai/v1/responses",
			`{"input":[{"role":"developer","content":"Be brief."},{"type":"message","role":"user","content":[{"type":"input_text","text":"Hi there,"},{"type":"input_image","image_url":"x"},{"type":"input_text","text":" how are you?"}]},{"type":"function_call_output","call_id":"c1","output":"42"}]}`,
			"gpt-4o", tokenize.Chat("gpt-4o", conv), 64, "completed"},
		{"azure path", "/openai/responses?api-version=preview", `{"model":"o4-mini","input":"Tell me a joke."}`,
			"o4-mini", tokenize.Text("o4-mini", "Tell me a joke."), 64, "completed"},
		{"max_output_tokens caps", "/v1/responses", `{"input":"Tell me a joke.","max_output_tokens":9}`,
			"gpt-4o", tokenize.Text("gpt-4o", "Tell me a joke."), 9, "incomplete"},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got wireResponse
			decodeJSON(t, post(t, h, tt.path, tt.body), 200, &got)
			if got.Object != "response" || got.Model != tt.wantModel || got.Status != tt.wantStatus {
				t.Fatalf("got %s %q status %q, want response %q status %q", got.Object, got.Model, got.Status, tt.wantModel, tt.wantStatus)
			}
			if (got.IncompleteDetails != nil) != (tt.wantStatus == "incomplete") {
				t.Errorf("incomplete_details: got %+v with status %q", got.IncompleteDetails, got.Status)
			}
			if len(got.Output) != 1 || got.Output[0].Type != "message" || got.Output[0].Role != "assistant" {
				t.Fatalf("output: got %+v, want one assistant message", got.Output)
			}
			checkUsage(t, responsesAPI, got.Usage, tt.wantInput, tt.wantOutput)
			if n := tokenize.Text(tt.wantModel, got.text()); n != tt.wantOutput {
				t.Errorf("output_text counts %d tokens, want %d", n, tt.wantOutput)
			}
		})
	}
}

func TestResponsesStream(t *testing.T) {
	tests := []struct {
		name       string
		extra      string
		wantOutput int
		wantLast   string
	}{
		{"completed", ``, 64, "response.completed"},
		{"cut by max_output_tokens", `,"max_output_tokens":5`, 5, "response.incomplete"},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := parseSSE(t, post(t, h, "/v1/responses", `{"input":"Tell me a joke.","stream":true`+tt.extra+`}`))
			if events[0].name != "response.created" {
				t.Errorf("first event: got %q, want response.created", events[0].name)
			}
			var deltas strings.Builder
			var final wireResponse
			for i, e := range events {
				var ev struct {
					Type     string        `json:"type"`
					Sequence int           `json:"sequence_number"`
					Delta    string        `json:"delta"`
					Response *wireResponse `json:"response"`
				}
				mustUnmarshal(t, e.data, &ev)
				if ev.Type != e.name || ev.Sequence != i {
					t.Errorf("event %d: event line %q, type %q, sequence %d", i, e.name, ev.Type, ev.Sequence)
				}
				switch e.name {
				case "response.output_text.delta":
					deltas.WriteString(ev.Delta)
				case "response.created", "response.in_progress":
					if ev.Response.Usage != nil {
						t.Errorf("%s carries usage before the end", e.name)
					}
				case tt.wantLast:
					final = *ev.Response
				}
			}
			if last := events[len(events)-1].name; last != tt.wantLast {
				t.Fatalf("last event: got %q, want %q", last, tt.wantLast)
			}
			checkUsage(t, responsesAPI, final.Usage, tokenize.Text("gpt-4o", "Tell me a joke."), tt.wantOutput)
			if deltas.String() != final.text() {
				t.Errorf("deltas %q differ from final text %q", deltas.String(), final.text())
			}
			if n := tokenize.Text("gpt-4o", deltas.String()); n != tt.wantOutput {
				t.Errorf("streamed text counts %d tokens, want %d", n, tt.wantOutput)
			}
		})
	}
}
