package llm

import (
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// maxCountedText bounds the completion text kept for the fallback count;
// past it, each delta is counted on its own (within a token of exact per
// delta, and a stream that long almost always reports usage anyway).
const maxCountedText = 4 << 20

// StreamCounter reads a streamed response as it passes: the usage the
// upstream reports, and the generated text, so that a stream without
// usage can still be counted. It takes the body in chunks cut anywhere.
type StreamCounter struct {
	api    API
	model  string
	frames framer

	usage    wireUsage
	reported bool // the stream's usage arrived (for Anthropic: its final one)
	started  bool // Anthropic's message_start usage arrived: the prompt is known
	done     bool // the stream's terminal event arrived

	text    []byte // completion text, tokenized at the end
	spilled int64  // tokens of text counted early because text grew past maxCountedText
	scratch []byte // decoded strings of the current event
}

// Stream framings: how a streamed body is cut into events.
type framing int

const (
	framingNone        framing = iota // not a stream
	framingSSE                        // text/event-stream: OpenAI, Anthropic, Gemini with alt=sse
	framingJSONArray                  // Gemini's streamGenerateContent without alt=sse: one JSON array, element by element
	framingEventStream                // Bedrock: application/vnd.amazon.eventstream frames
)

// streamFraming decides whether a response is a stream, and how it is
// framed, by its route and content type: Bedrock streams are eventstream
// frames and Gemini streams a JSON array as application/json, so
// text/event-stream alone misses them.
func streamFraming(r Route, contentType string) framing {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		return framingSSE
	case strings.HasPrefix(ct, "application/vnd.amazon.eventstream"):
		return framingEventStream
	case r.API == GenerateContent && r.Stream && strings.HasPrefix(ct, "application/json"):
		return framingJSONArray
	}
	return framingNone
}

// IsStream reports whether a response of the route with this content type
// is a stream, which must be processed (and passed on) chunk by chunk.
func IsStream(r Route, contentType string) bool {
	return streamFraming(r, contentType) != framingNone
}

// NewStreamCounter starts counting a stream of the route, model and
// content type; nil when the response is not a stream (IsStream).
func NewStreamCounter(r Route, model, contentType string) *StreamCounter {
	c := &StreamCounter{api: r.API, model: model}
	switch streamFraming(r, contentType) {
	case framingSSE:
		c.frames = &sseFrames{on: c.onEvent}
	case framingJSONArray:
		c.frames = &arrayFrames{on: func(elem []byte) { c.onEvent("", elem) }}
	case framingEventStream:
		c.frames = &eventStreamFrames{on: c.onEvent, chunks: r.API == Messages}
	default:
		return nil
	}
	return c
}

// framer cuts a streamed body into events.
type framer interface {
	feed(chunk []byte)
	// lost reports whether part of the stream could not be framed (an
	// event past its bound, dropped whole).
	lost() bool
}

// Feed consumes a chunk of the (decoded) response body.
func (c *StreamCounter) Feed(chunk []byte) { c.frames.feed(chunk) }

// Usage returns the usage the upstream reported; ok is false until the
// stream's (final) usage arrived.
func (c *StreamCounter) Usage() (Usage, bool) {
	if !c.reported {
		return Usage{}, false
	}
	return c.usage.normalize(c.api.Provider()), true
}

// Prompt returns the prompt the stream reported before its final usage
// (Anthropic's message_start): a stream cut after it is charged this
// prompt, exact, with its counted completion.
func (c *StreamCounter) Prompt() (int64, bool) {
	if !c.started {
		return 0, false
	}
	return c.usage.normalize(c.api.Provider()).Prompt, true
}

// Done reports whether the stream's terminal event arrived: a stream that
// ends without it was cut.
func (c *StreamCounter) Done() bool { return c.done }

// Lost reports whether part of the stream was too large to read and was
// dropped: its text, or its usage, may have been in it.
func (c *StreamCounter) Lost() bool { return c.frames.lost() }

// CompletionTokens counts the text the stream delivered so far.
func (c *StreamCounter) CompletionTokens() int64 {
	return c.spilled + int64(tokenize.Text(c.model, string(c.text)))
}

// onEvent reads one event: its name (SSE's event field, eventstream's
// :event-type) and its data. An event that is not what its API sends is
// skipped: nothing in it counts.
func (c *StreamCounter) onEvent(name string, data []byte) {
	c.scratch = c.scratch[:0]
	switch c.api.Provider() {
	case OpenAI:
		c.openAIEvent(data)
	case Anthropic:
		c.anthropicEvent(data)
	case Gemini:
		c.geminiEvent(data)
	case Bedrock:
		c.converseEvent(name, data)
	}
}

// replaceUsage takes a usage object that states the whole usage so far
// (OpenAI's, Gemini's, Bedrock's: the last one counts).
func (c *StreamCounter) replaceUsage(v []byte) {
	var w wireUsage
	if w.read(c.api.Provider(), v) == nil {
		c.usage, c.reported = w, true
	}
}

// stringOf decodes a JSON string value into the event's scratch space,
// without allocating; anything but a string is empty.
func (c *StreamCounter) stringOf(v []byte) []byte {
	if p, ok := plainString(v); ok {
		return p
	}
	from := len(c.scratch)
	b, err := appendString(c.scratch, v)
	if err != nil {
		return nil
	}
	c.scratch = b
	return b[from:]
}

// addString adds the text of a JSON string value; anything else adds
// nothing.
func (c *StreamCounter) addString(v []byte) {
	if len(v) == 0 || v[0] != '"' {
		return
	}
	from := len(c.scratch)
	b, err := appendString(c.scratch, v)
	if err != nil {
		return
	}
	c.scratch = b
	c.addText(b[from:])
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
