package openaimock

import (
	"bytes"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream/eventstreamapi"
)

// What the Anthropic, Gemini and Bedrock answers share: how the prompt is
// split by the cache overrides, where a stream error comes, what a
// stream's events note in the trace, and Bedrock's eventstream frames.

// promptSplit is the counted prompt as Anthropic and Bedrock bill it:
// input excludes what was read from and written to the prompt cache, and
// the three add up to the prompt.
type promptSplit struct {
	input, cacheRead, cacheWrite int
}

// splitPrompt carves x-mock-cache-read, then x-mock-cache-write, out of
// the prompt, each capped at what is left, so that no count is negative
// and the sum stays the prompt.
func (c call) splitPrompt(prompt int) promptSplit {
	read := min(c.cacheRead, prompt)
	write := min(c.cacheWrite, prompt-read)
	return promptSplit{input: prompt - read - write, cacheRead: read, cacheWrite: write}
}

// textEvents cuts a completion into the texts of its streamed events,
// three tokens each, and says how many of them go out: all, or the first
// x-mock-stream-error-after (all of them when there are fewer), after
// which the API's stream error comes instead of the stream's end.
func (c call) textEvents(gen completion) (texts []string, streamError bool) {
	texts = gen.chunks(chunksPerEvent)
	if c.streamErrorAfter == 0 {
		return texts, false
	}
	return texts[:min(c.streamErrorAfter, len(texts))], true
}

// elapsedMs is the time since the request arrived, as Bedrock reports its
// latencies (never negative, should the clock step back).
func (c call) elapsedMs(now time.Time) int64 { return max(0, now.Sub(c.start).Milliseconds()) }

// Notes of what a stream's event carried, for the trace.
func textNote(index int, delta string) func(*traceRecord) {
	return func(r *traceRecord) { r.addText(index, delta) }
}

func usageNote(r *traceRecord) { r.Usage = true }
func doneNote(r *traceRecord)  { r.Done = true }
func endNote(r *traceRecord)   { r.Usage, r.Done = true, true }
func errorNote(r *traceRecord) { r.StreamError = true }

// eventStreamType is the content type of Bedrock's streams.
const eventStreamType = "application/vnd.amazon.eventstream"

// awsEvent sends v as the payload of an eventstream event frame of type
// typ: a ConverseStream member (messageStart, contentBlockDelta, …) or
// InvokeModelWithResponseStream's chunk.
func (s *sse) awsEvent(typ string, v any, note func(*traceRecord)) {
	s.frame(eventstreamapi.EventMessageType, eventstreamapi.EventTypeHeader, typ, v, note)
}

// awsException ends a Bedrock stream with an exception frame, as the
// service reports a failure once the stream is under way; the AWS SDKs
// return it as the stream's error.
func (s *sse) awsException(typ, msg string) {
	s.frame(eventstreamapi.ExceptionMessageType, eventstreamapi.ExceptionTypeHeader, typ, bedrockMessage{Message: msg}, errorNote)
}

// frame writes one eventstream message with Bedrock's headers, its type
// under typeHeader, and v as its JSON payload.
func (s *sse) frame(messageType, typeHeader, typ string, v any, note func(*traceRecord)) {
	payload, ok := s.encode(v)
	if !ok {
		return
	}
	var h eventstream.Headers
	h.Set(typeHeader, eventstream.StringValue(typ))
	h.Set(eventstreamapi.ContentTypeHeader, eventstream.StringValue("application/json"))
	h.Set(eventstreamapi.MessageTypeHeader, eventstream.StringValue(messageType))
	var buf bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: h, Payload: payload}); err != nil {
		s.err = fmt.Errorf("encode frame: %w", err)
		return
	}
	s.write(buf.Bytes(), note)
}
