package openaimock

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The prompt the Anthropic, Gemini and Converse tests send, in each API's
// shape, and what the mock must count for it: chat's count of a system
// message and one user message (promptTokens).
const (
	promptSystem = "You are terse."
	promptUser   = "Say hello to the world, twice."
)

func wantPrompt(model string) int {
	return tokenize.Chat(model, []tokenize.Message{
		{Role: "system", Content: promptSystem}, {Role: "user", Content: promptUser},
	})
}

// awsFrame is one decoded eventstream message.
type awsFrame struct {
	messageType string // event or exception
	typ         string // :event-type or :exception-type
	contentType string
	payload     []byte
}

// readFrames decodes a Bedrock stream whole, failing on anything but
// well-formed frames up to a clean end.
func readFrames(t *testing.T, body []byte) []awsFrame {
	t.Helper()
	frames, err := decodeFrames(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("frame %d: %v", len(frames), err)
	}
	return frames
}

// decodeFrames decodes frames until the stream ends, returning the error
// that ended it (nil for a clean end between frames).
func decodeFrames(r io.Reader) ([]awsFrame, error) {
	dec := eventstream.NewDecoder()
	var frames []awsFrame
	for {
		msg, err := dec.Decode(r, nil)
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return frames, err
		}
		f := awsFrame{payload: bytes.Clone(msg.Payload)}
		header := func(name string) string {
			if v := msg.Headers.Get(name); v != nil {
				return v.String()
			}
			return ""
		}
		f.messageType, f.contentType = header(":message-type"), header(":content-type")
		f.typ = header(":event-type")
		if f.messageType == "exception" {
			f.typ = header(":exception-type")
		}
		frames = append(frames, f)
	}
}

// chunkEvents unwraps InvokeModelWithResponseStream's chunk frames into
// the Anthropic events they carry, named by their type as on the SSE
// framing; an exception frame becomes an event named by its exception.
func chunkEvents(t *testing.T, frames []awsFrame) []sseEvent {
	t.Helper()
	events := make([]sseEvent, len(frames))
	for i, f := range frames {
		if f.contentType != "application/json" {
			t.Errorf("frame %d: content type %q", i, f.contentType)
		}
		if f.messageType == "exception" {
			events[i] = sseEvent{name: f.typ, data: string(f.payload)}
			continue
		}
		if f.messageType != "event" || f.typ != "chunk" {
			t.Fatalf("frame %d: %s %s, want an event chunk", i, f.messageType, f.typ)
		}
		var c struct {
			Bytes []byte `json:"bytes"` // base64 in JSON
		}
		mustUnmarshal(t, string(f.payload), &c)
		var typed struct {
			Type string `json:"type"`
		}
		mustUnmarshal(t, string(c.Bytes), &typed)
		events[i] = sseEvent{name: typed.Type, data: string(c.Bytes)}
	}
	return events
}

// checkStatus fails unless rec has status want and a JSON body.
func checkStatus(t *testing.T, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status: got %d, want %d; body %s", rec.Code, want, rec.Body)
	}
	if ct := rec.Result().Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type: got %q, want application/json", ct)
	}
}

// checkTrace fails unless the answer id's trace on h records what a test
// saw go out.
func checkTrace(t *testing.T, h http.Handler, id string, want traceRecord) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mock/traces/"+id, nil))
	var got traceRecord
	decodeJSON(t, rec, http.StatusOK, &got)
	if got.Text != want.Text || got.CompletionTokens != want.CompletionTokens || got.Usage != want.Usage ||
		got.Done != want.Done || got.StreamError != want.StreamError || got.Stream != want.Stream ||
		(want.Events != 0 && got.Events != want.Events) || !got.Finished {
		t.Errorf("trace of %s:\n got %+v\nwant %+v", id, got, want)
	}
}
