package openaimock

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// sse writes server-sent events and flushes each one (through the
// compressor too), so a client (and tokengate's streaming accounting) sees
// them arrive one by one, as from the real API. It also applies the
// request's pacing: delays, a stall, a cut. Streams of other framings
// (Bedrock's eventstream frames, Gemini's JSON array) go through it too,
// an event being whatever one write sends.
type sse struct {
	w      *wire
	ctx    context.Context
	pace   pacing
	tr     *trace
	events int
	err    error // the first write error; later writes are skipped
}

func startSSE(w *wire, c call) *sse {
	w.Header().Set("Cache-Control", "no-cache")
	return startStream(w, c, "text/event-stream")
}

// startStream opens a stream of another framing: Bedrock's eventstream
// frames, Gemini's JSON array. Whatever the framing, each write is one
// event, paced, traced and flushed alike.
func startStream(w *wire, c call, contentType string) *sse {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(c.status)
	return &sse{w: w, ctx: c.ctx, pace: c.pace, tr: c.tr}
}

// data sends one "data:" event, the framing Chat Completions uses; delta
// is the completion text it carries, for the trace.
func (s *sse) data(v any, delta string) { s.dataAt(v, 0, delta) }

// dataAt is data for an event of choice index, when a request asked for
// several (n).
func (s *sse) dataAt(v any, index int, delta string) {
	s.send("", v, func(r *traceRecord) { r.addText(index, delta) })
}

// usageData sends the chunk that carries usage.
func (s *sse) usageData(v any) {
	s.send("", v, func(r *traceRecord) { r.Usage = true })
}

// event sends a named event, the framing the Responses API uses.
func (s *sse) event(name string, v any, delta string) {
	s.send(name, v, func(r *traceRecord) { r.addText(0, delta) })
}

// final sends the Responses API's terminal event, which ends its stream.
func (s *sse) final(name string, v any, withUsage bool) {
	s.send(name, v, func(r *traceRecord) { r.Done, r.Usage = true, withUsage })
}

// done ends a Chat Completions stream the way OpenAI does, unless the
// request wants the stream cut: then [DONE] never comes.
func (s *sse) done() {
	s.end()
	s.write([]byte("data: [DONE]\n\n"), func(r *traceRecord) { r.Done = true })
}

// end is where a stream would end cleanly; a cut asked for past the last
// event drops the connection here instead.
func (s *sse) end() {
	if s.pace.cutAfter > 0 && s.err == nil {
		s.cut()
	}
}

func (s *sse) send(name string, v any, note func(*traceRecord)) {
	b, ok := s.encode(v)
	if !ok {
		return
	}
	var buf []byte
	if name != "" {
		buf = fmt.Appendf(buf, "event: %s\n", name)
	}
	buf = fmt.Appendf(buf, "data: %s\n\n", b)
	s.write(buf, note)
}

// encode marshals an event's JSON. It cannot fail on the mock's own
// types; if it did, the stream would end there, as on a write error.
func (s *sse) encode(v any) ([]byte, bool) {
	b, err := json.Marshal(v)
	if err != nil && s.err == nil {
		s.err = fmt.Errorf("marshal event: %w", err)
	}
	return b, err == nil
}

// write sends one event after its pause, and traces it; note, when not
// nil, records what the event carried.
func (s *sse) write(b []byte, note func(*traceRecord)) {
	if s.err != nil {
		return // the client is gone; the rest of the stream goes nowhere
	}
	if s.events > 0 {
		s.wait(s.pause())
		if s.err != nil {
			return
		}
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return
	}
	// Traced before the flush, so that a client holding the event always
	// finds it in the trace; an event whose flush fails was lost with the
	// client anyway.
	s.events++
	s.tr.update(func(r *traceRecord) {
		r.Events++
		if note != nil {
			note(r)
		}
	})
	if s.err = s.w.FlushError(); s.err != nil {
		return
	}
	if s.pace.cutAfter > 0 && s.events >= s.pace.cutAfter {
		s.cut()
	}
}

// pause is the wait before the next event: the stall once, else the chunk
// delay.
func (s *sse) pause() time.Duration {
	if s.pace.stall > 0 && s.events == s.pace.stallAfter {
		return s.pace.stall
	}
	return s.pace.chunkDelay
}

// wait sleeps d unless the client goes away first, which ends the stream.
func (s *sse) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
		s.err = s.ctx.Err()
	}
}

// cut drops the connection mid-stream. Everything written so far was
// flushed, compressed blocks included, so the client decodes the events it
// got; net/http closes the connection without ending the chunked body, and
// the client sees an unexpected EOF, as from a crashed upstream.
func (s *sse) cut() {
	s.w.cut = true
	s.tr.update(func(r *traceRecord) { r.Cut = true })
	panic(http.ErrAbortHandler)
}
