package openai

import (
	"bytes"
	"encoding/json"

	"github.com/tokengate/tokengate/extproc/sse"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// maxCountedText bounds the completion text kept for the fallback count;
// past it, each delta is counted on its own (within a token of exact per
// delta, and a stream that long almost always reports usage anyway).
const maxCountedText = 4 << 20

// StreamCounter reads a streamed (SSE) response as it passes: the last usage
// the upstream reports, and the generated text, so that a stream without
// usage can still be counted.
type StreamCounter struct {
	api    API
	model  string
	parser sse.Parser

	usage    Usage
	reported bool
	done     bool // [DONE] or the Responses API's terminal event was seen

	text        []byte // completion text, tokenized at the end
	spilled     int64  // tokens of text counted early because text grew past maxCountedText
	events      int
	badEvents   int
	onEventFunc func(sse.Event)
}

// NewStreamCounter starts counting a stream of the given API and model.
func NewStreamCounter(api API, model string) *StreamCounter {
	c := &StreamCounter{api: api, model: model}
	c.onEventFunc = c.onEvent
	return c
}

// Feed consumes a chunk of the (decoded) response body.
func (c *StreamCounter) Feed(chunk []byte) {
	c.parser.Feed(chunk, c.onEventFunc)
}

// Usage returns the last usage the upstream reported.
func (c *StreamCounter) Usage() (Usage, bool) { return c.usage, c.reported }

// Done reports whether the stream's terminal event arrived: a stream that
// ends without it was cut.
func (c *StreamCounter) Done() bool { return c.done }

// CompletionTokens counts the text the stream delivered so far.
func (c *StreamCounter) CompletionTokens() int64 {
	return c.spilled + int64(tokenize.Text(c.model, string(c.text)))
}

// streamChunk covers the chunk shapes of Chat Completions, Completions and
// the Responses API; unused fields stay empty.
type streamChunk struct {
	Type    string `json:"type"`
	Delta   string `json:"delta"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content   string `json:"content"`
			Refusal   string `json:"refusal"`
			Reasoning string `json:"reasoning_content"`
			ToolCalls []struct {
				Function struct {
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	Usage    *wireUsage `json:"usage"`
	Response *struct {
		Usage *wireUsage `json:"usage"`
	} `json:"response"`
}

var doneMarker = []byte("[DONE]")

func (c *StreamCounter) onEvent(e sse.Event) {
	c.events++
	data := bytes.TrimSpace(e.Data)
	if bytes.Equal(data, doneMarker) {
		c.done = true
		return
	}
	var ch streamChunk
	if err := json.Unmarshal(data, &ch); err != nil {
		c.badEvents++
		return
	}
	if ch.Usage != nil {
		c.usage, c.reported = ch.Usage.normalize(), true
	}
	if ch.Response != nil && ch.Response.Usage != nil {
		c.usage, c.reported = ch.Response.Usage.normalize(), true
	}
	switch ch.Type {
	case "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
		"response.reasoning_text.delta":
		c.addText(ch.Delta)
	case "response.completed", "response.incomplete", "response.failed":
		c.done = true
	}
	for _, choice := range ch.Choices {
		c.addText(choice.Text)
		c.addText(choice.Delta.Content)
		c.addText(choice.Delta.Refusal)
		c.addText(choice.Delta.Reasoning)
		for _, tc := range choice.Delta.ToolCalls {
			c.addText(tc.Function.Arguments)
		}
	}
}

func (c *StreamCounter) addText(s string) {
	if s == "" {
		return
	}
	if len(c.text)+len(s) > maxCountedText {
		c.spilled += int64(tokenize.Text(c.model, string(c.text)))
		c.text = c.text[:0]
	}
	c.text = append(c.text, s...)
}
