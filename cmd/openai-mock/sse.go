package main

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// sse writes server-sent events and flushes each one, so a client (and
// tokengate's streaming accounting) sees them arrive one by one, as from
// the real API.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the first write error; later writes are skipped
}

func startSSE(w http.ResponseWriter, status int) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	return &sse{w: w, rc: http.NewResponseController(w)}
}

// data sends one "data:" event, the framing Chat Completions uses.
func (s *sse) data(v any) { s.send("", v) }

// event sends a named event, the framing the Responses API uses.
func (s *sse) event(name string, v any) { s.send(name, v) }

// done ends a Chat Completions stream the way OpenAI does.
func (s *sse) done() { s.write([]byte("data: [DONE]\n\n")) }

func (s *sse) send(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.err = fmt.Errorf("marshal event: %w", err)
		return
	}
	var buf []byte
	if name != "" {
		buf = fmt.Appendf(buf, "event: %s\n", name)
	}
	buf = fmt.Appendf(buf, "data: %s\n\n", b)
	s.write(buf)
}

func (s *sse) write(b []byte) {
	if s.err != nil {
		return // the client is gone; the rest of the stream goes nowhere
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return
	}
	s.err = s.rc.Flush()
}
