package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// What a streaming client does with the bytes it gets: split events,
// collect the text and usage of any of the three APIs, undo compression.

// sseEvent is one server-sent event as a client reads it.
type sseEvent struct{ name, data string }

// nextEvent reads one event: io.EOF at a clean end between events,
// io.ErrUnexpectedEOF or the read error when the stream breaks.
func nextEvent(rd *bufio.Reader) (sseEvent, error) {
	var e sseEvent
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" && e == (sseEvent{}) {
				return e, io.EOF
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return e, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if e != (sseEvent{}) {
				return e, nil
			}
		case strings.HasPrefix(line, "event:"):
			e.name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			e.data = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		}
	}
}

// readEvents reads up to max events (all when max < 0) and returns them
// with the error that ended the stream, nil for a clean end or max reached.
func readEvents(rd *bufio.Reader, max int) ([]sseEvent, error) {
	var events []sseEvent
	for max < 0 || len(events) < max {
		e, err := nextEvent(rd)
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, e)
	}
	return events, nil
}

// wireUsage is a usage block of any of the APIs.
type wireUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// streamed is what a client made of a stream: the answer's id, the
// completion text, the usage if one came, and whether it ended properly.
type streamed struct {
	id    string
	text  string
	usage *wireUsage
	done  bool // [DONE], or the Responses API's response.completed
}

// parseStream reads the events of any of the three APIs.
func parseStream(t *testing.T, events []sseEvent) streamed {
	t.Helper()
	var s streamed
	for i, e := range events {
		if e.data == "[DONE]" {
			s.done = true
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Delta   string `json:"delta"`
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage    *wireUsage `json:"usage"`
			Response *struct {
				ID    string     `json:"id"`
				Usage *wireUsage `json:"usage"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(e.data), &c); err != nil {
			t.Fatalf("event %d: %q is not JSON: %v", i, e.data, err)
		}
		if s.id == "" {
			s.id = c.ID
		}
		if c.Response != nil {
			s.id = c.Response.ID
			if c.Response.Usage != nil {
				s.usage = c.Response.Usage
			}
		}
		if c.Type == "response.output_text.delta" {
			s.text += c.Delta
		}
		if c.Type == "response.completed" {
			s.done = true
		}
		for _, ch := range c.Choices {
			s.text += ch.Text + ch.Delta.Content
		}
		if c.Usage != nil {
			s.usage = c.Usage
		}
	}
	return s
}

// decoding undoes a content-encoding as the body is read, the way a
// client would.
func decoding(t *testing.T, encoding string, body io.Reader) io.Reader {
	t.Helper()
	var r io.Reader
	var err error
	switch encoding {
	case "gzip":
		r, err = gzip.NewReader(body)
	case "deflate":
		r, err = zlib.NewReader(body)
	case "br":
		r = brotli.NewReader(body)
	default:
		return body
	}
	if err != nil {
		t.Fatalf("%s: %v", encoding, err)
	}
	return r
}

// decompress undoes a content-encoding of a whole body.
func decompress(t *testing.T, encoding string, body []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(decoding(t, encoding, bytes.NewReader(body)))
	if err != nil {
		t.Fatalf("%s: %v", encoding, err)
	}
	return out
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
