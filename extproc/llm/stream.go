package llm

import (
	"bytes"

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
	onEventFunc func(sse.Event)
	fields      chunkFields // the current event's, reused
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
	data := bytes.TrimSpace(e.Data)
	if bytes.Equal(data, doneMarker) {
		c.done = true
		return
	}
	f := &c.fields
	if !f.read(data) {
		return // not a chunk: nothing in it counts
	}
	if f.hasUsage {
		c.usage, c.reported = f.usage.normalize(), true
	}
	if f.hasResp {
		c.usage, c.reported = f.respUsage.normalize(), true
	}
	switch string(f.text(f.typ)) {
	case "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
		"response.reasoning_text.delta":
		c.addText(f.text(f.delta))
	case "response.completed", "response.incomplete", "response.failed":
		c.done = true
	}
	for _, s := range f.texts {
		c.addText(f.text(s))
	}
}

func (c *StreamCounter) addText(s []byte) {
	if len(s) == 0 {
		return
	}
	if len(c.text)+len(s) > maxCountedText {
		c.spilled += int64(tokenize.Text(c.model, string(c.text)))
		c.text = c.text[:0]
	}
	c.text = append(c.text, s...)
}
