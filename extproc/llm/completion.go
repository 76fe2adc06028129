package llm

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Some OpenAI-compatible servers and proxies answer without usage. Such an
// answer is not free: its completion is counted from what it carries, the
// way a stream without usage is counted from its deltas. Only the answer's
// own top-level members are read (choices, output), never what it echoes
// of the request.

// wireAnswer covers the buffered answers of Chat Completions, Completions
// and the Responses API; what an API does not have stays empty.
type wireAnswer struct {
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Content   json.RawMessage `json:"content"`
			Refusal   string          `json:"refusal"`
			Reasoning string          `json:"reasoning_content"`
			ToolCalls []struct {
				Function struct {
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
			FunctionCall struct {
				Arguments string `json:"arguments"`
			} `json:"function_call"`
		} `json:"message"`
	} `json:"choices"`
	Output []struct {
		Type      string `json:"type"`
		Arguments string `json:"arguments"`
		Input     string `json:"input"`
		Content   []struct {
			Text    string `json:"text"`
			Refusal string `json:"refusal"`
		} `json:"content"`
		Summary []struct {
			Text string `json:"text"`
		} `json:"summary"`
	} `json:"output"`
}

// CompletionText gathers the generated text of a buffered answer: every
// choice's content, refusal, reasoning and tool-call arguments, or every
// output item's text, refusal, arguments and reasoning summary. Embeddings
// generate nothing.
func CompletionText(api API, body []byte) (string, error) {
	if api == Embeddings {
		return "", nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return "", fmt.Errorf("llm: %s answer: %w", api, err)
	}
	// The top-level members by their exact names, as the client's SDK reads
	// them; within them, the shapes are the upstream's own.
	var a wireAnswer
	if err := unmarshalMember(top, "choices", &a.Choices); err != nil {
		return "", fmt.Errorf("llm: %s answer: %w", api, err)
	}
	if err := unmarshalMember(top, "output", &a.Output); err != nil {
		return "", fmt.Errorf("llm: %s answer: %w", api, err)
	}
	var b strings.Builder
	for _, c := range a.Choices {
		m := c.Message
		b.WriteString(c.Text)
		b.WriteString(contentText(m.Content))
		b.WriteString(m.Refusal)
		b.WriteString(m.Reasoning)
		for _, tc := range m.ToolCalls {
			b.WriteString(tc.Function.Arguments)
		}
		b.WriteString(m.FunctionCall.Arguments)
	}
	for _, o := range a.Output {
		for _, c := range o.Content {
			b.WriteString(c.Text)
			b.WriteString(c.Refusal)
		}
		for _, s := range o.Summary {
			b.WriteString(s.Text)
		}
		b.WriteString(o.Arguments)
		b.WriteString(o.Input)
	}
	return b.String(), nil
}

// CompletionTokens counts a buffered answer's generated text as the model
// does; a text past maxExactBytes is bounded by its length, as prompts are.
func CompletionTokens(api API, model string, body []byte) (int64, error) {
	text, err := CompletionText(api, body)
	if err != nil {
		return 0, err
	}
	if len(text) > maxExactBytes {
		return int64(len(text)), nil
	}
	return int64(tokenize.Text(model, text)), nil
}

func unmarshalMember(top map[string]json.RawMessage, name string, dst any) error {
	v, ok := top[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
