package front

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// streamedConfig is the filter with STREAMED response bodies, as tokengate
// asks for event streams through mode_override.
func streamedConfig() *extprocv3.ExternalProcessor {
	return filterConfig(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
	})
}

// upperReply answers a response_body with its body uppercased.
func upperReply(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
	return pass(req, upperBodies(&extprocsvc.CommonResponse{}, req.GetResponseBody().GetBody()))
}

// passUntilBody passes every message and closes the channel it returns
// at the first response_body: an upstream that waits on it ends its
// response only once the front has sent a chunk.
func passUntilBody() (handler, <-chan struct{}) {
	first := make(chan struct{})
	var once sync.Once
	return func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetResponseBody() != nil {
			once.Do(func() { close(first) })
		}
		return passAll(n, req)
	}, first
}

// responseBodies describes the response_body messages of the stand's
// first stream: each body quoted, with its end_of_stream.
func (s *stand) responseBodies() string {
	var parts []string
	for _, m := range s.proc.messages(0) {
		if b := m.GetResponseBody(); b != nil {
			parts = append(parts, fmt.Sprintf("%q/eos=%v", b.GetBody(), b.GetEndOfStream()))
		}
	}
	return strings.Join(parts, " ")
}

// events writes SSE events one flush each; after each but the last, it
// waits for next (when not nil) before going on.
func events(w http.ResponseWriter, r *http.Request, next <-chan struct{}, evs ...string) {
	for i, e := range evs {
		io.WriteString(w, e)
		http.NewResponseController(w).Flush()
		if next != nil && i < len(evs)-1 {
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
				return
			}
		}
	}
}

// Envoy sends each chunk as it arrives, without waiting for the reply to
// the one before, and releases them in order as the replies come back.
// This processor answers nothing until it holds three chunks: a front that
// waits for each reply before sending the next would never get there.
func TestStreamedChunksArePipelined(t *testing.T) {
	got := make(chan struct{}, 16)
	var mu sync.Mutex
	var held []*extprocsvc.ProcessingRequest
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		b := req.GetResponseBody()
		if b == nil {
			return passAll(n, req)
		}
		got <- struct{}{}
		mu.Lock()
		defer mu.Unlock()
		held = append(held, req)
		if len(held) < 3 && !b.GetEndOfStream() {
			return nil
		}
		var out []*extprocsvc.ProcessingResponse
		for _, r := range held {
			out = append(out, upperReply(r))
		}
		held = nil
		return out
	}
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		events(w, r, got, "data: 1\n\n", "data: 2\n\n", "data: 3\n\n")
		// Wait for the third chunk too, so the end comes alone.
		select {
		case <-got:
		case <-time.After(5 * time.Second):
		}
	}
	s := newStand(t, streamedConfig(), h, answer)
	_, body := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	if string(body) != "DATA: 1\n\nDATA: 2\n\nDATA: 3\n\n" {
		t.Errorf("client got %q, want the three events, in order, as the processor changed them", body)
	}
	st := s.last(t, 1)
	if st.MaxInFlight < 3 || st.TimedOut {
		t.Errorf("at most %d chunks awaited replies at once (timed out: %v), want 3: the chunks were not pipelined", st.MaxInFlight, st.TimedOut)
	}
	if d := s.responseBodies(); d != `"data: 1\n\n"/eos=false "data: 2\n\n"/eos=false "data: 3\n\n"/eos=false ""/eos=true` {
		t.Errorf("response_body messages %s, want one per event and an empty end of stream (HTTP/1.1 chunked end)", d)
	}
}

// waitRead returns a headersApplied hook that waits until the response
// source has read n bytes (or ended, when n < 0).
func waitRead(t *testing.T, n int64) func(phase, *bodySource) {
	return func(p phase, src *bodySource) {
		if p != phaseResponseHeaders {
			return
		}
		deadline := time.After(5 * time.Second)
		for {
			ch := src.wait()
			src.mu.Lock()
			total, done := src.total, src.done
			src.mu.Unlock()
			if n < 0 && done || n >= 0 && total >= n {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				t.Errorf("the front read %d bytes in 5s, waiting for %d", total, n)
				return
			}
		}
	}
}

// Data that arrived while the response headers were with the processor
// goes as one chunk.
func TestStreamedDataDuringHeadersIsOneChunk(t *testing.T) {
	evs := []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n"}
	h, first := passUntilBody()
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		events(w, r, nil, evs...)
		select { // end only after the first chunk went, so the stream is not whole
		case <-first:
		case <-time.After(5 * time.Second):
		}
	}
	s := newStand(t, streamedConfig(), h, answer, func(c *Config) {
		c.headersApplied = waitRead(t, int64(len(strings.Join(evs, ""))))
	})
	_, body := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	if string(body) != strings.Join(evs, "") {
		t.Errorf("client got %q", body)
	}
	s.last(t, 1)
	if d := s.responseBodies(); d != `"data: 1\n\ndata: 2\n\ndata: 3\n\n"/eos=false ""/eos=true` {
		t.Errorf("response_body messages %s, want the three events in one chunk, then the end", d)
	}
}

// A stream that had arrived whole when the mode was applied goes as a
// single message with end_of_stream, and since the headers are still held
// then, its reply may change them.
func TestStreamedWholeStreamInOneMessage(t *testing.T) {
	evs := []string{"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"}
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetResponseBody() != nil {
			r := upperReply(req)
			r.GetResponseBody().Response.HeaderMutation = &extprocsvc.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{setHeader("x-counted", "yes", 0)},
			}
			return []*extprocsvc.ProcessingResponse{r}
		}
		r := pass(req, nil)
		if req.GetResponseHeaders() != nil {
			r.ModeOverride = &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}
		}
		return []*extprocsvc.ProcessingResponse{r}
	}
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		events(w, r, nil, evs...)
	}
	s := newStand(t, filterConfig(), h, answer, func(c *Config) { c.headersApplied = waitRead(t, -1) })
	resp, body := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	if string(body) != strings.ToUpper(strings.Join(evs, "")) || resp.Header.Get("X-Counted") != "yes" {
		t.Errorf("client got %q with x-counted %q, want the processed stream and its header", body, resp.Header.Get("X-Counted"))
	}
	if st := s.last(t, 1); st.ModeOverrides != 1 {
		t.Errorf("mode overrides %d, want 1", st.ModeOverrides)
	}
	if d := s.responseBodies(); d != strconv.Quote(strings.Join(evs, ""))+"/eos=true" {
		t.Errorf("response_body messages %s, want the whole stream in one message with end_of_stream", d)
	}
}

// With a content-length, Envoy's HTTP/1 codec knows the last data is the
// last: end_of_stream rides on it, with no empty message after.
func TestStreamedContentLengthEndsOnLastChunk(t *testing.T) {
	h, first := passUntilBody()
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "10")
		events(w, r, first, "01234", "56789")
	}
	s := newStand(t, streamedConfig(), h, answer)
	_, body := s.do(t, "GET", "/v1/models", "")
	if string(body) != "0123456789" {
		t.Errorf("client got %q", body)
	}
	s.last(t, 1)
	if d := s.responseBodies(); d != `"01234"/eos=false "56789"/eos=true` {
		t.Errorf("response_body messages %s, want two chunks, end_of_stream on the second", d)
	}
}

// Chunks wait for their replies in a queue bounded by the buffer limit:
// past it, Envoy stops reading the upstream until replies come back. This
// processor is slow (each reply takes 20 ms) and the upstream fast, so an
// unbounded queue would fill with every chunk.
func TestStreamedQueueIsBounded(t *testing.T) {
	const limit = 64
	var mu sync.Mutex
	var held *extprocsvc.ProcessingRequest
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		b := req.GetResponseBody()
		if b == nil {
			return passAll(n, req)
		}
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		// Answer one behind, so two chunks are in flight when the front
		// allows it; answer at once what could block a bounded front.
		var out []*extprocsvc.ProcessingResponse
		if held != nil {
			out = append(out, upperReply(held))
			held = nil
		}
		if b.GetEndOfStream() || len(b.GetBody()) > limit {
			return append(out, upperReply(req))
		}
		held = req
		return out
	}
	chunk := strings.Repeat("x", 38) + "\n\n" // 40 bytes
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 10 {
			io.WriteString(w, chunk)
			http.NewResponseController(w).Flush()
			time.Sleep(2 * time.Millisecond)
		}
	}
	s := newStand(t, streamedConfig(), h, answer, func(c *Config) { c.BufferLimit = limit })
	_, body := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	if string(body) != strings.ToUpper(strings.Repeat(chunk, 10)) {
		t.Errorf("client got %d bytes, want the 10 chunks processed", len(body))
	}
	st := s.last(t, 1)
	if st.MaxInFlight > 2 || st.TimedOut {
		t.Errorf("%d chunks awaited replies at once (timed out: %v): the queue went past the %d-byte limit", st.MaxInFlight, st.TimedOut, limit)
	}
}

// Envoy restarts the message timer with every chunk sent and stops it at
// every reply: chunks already sent are not timed once a reply came. Here
// the three chunks are sent within some 40 ms, each reply takes 150 ms of
// a 200 ms message_timeout, and the third reply comes some 450 ms after
// its chunk was sent: no timeout (a timer per chunk would fire).
func TestStreamedTimerRestartsPerSendStopsPerReply(t *testing.T) {
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetResponseBody() != nil {
			time.Sleep(150 * time.Millisecond)
		}
		return passAll(n, req)
	}
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", "36")
		for _, e := range []string{"data: 1\n\n...", "data: 2\n\n...", "data: 3\n\n..."} {
			io.WriteString(w, e)
			http.NewResponseController(w).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}
	f := streamedConfig()
	f.MessageTimeout = durationpb.New(200 * time.Millisecond)
	s := newStand(t, f, h, answer)
	_, body := s.do(t, "GET", "/v1/models", "")
	st := s.last(t, 1)
	if st.TimedOut || string(body) != "data: 1\n\n...data: 2\n\n...data: 3\n\n..." {
		t.Errorf("timed out %v, client got %q: want no timeout and the whole body", st.TimedOut, body)
	}
	if st.MaxInFlight < 2 {
		t.Errorf("at most %d chunks in flight: the case is not the one meant", st.MaxInFlight)
	}
}

// An upstream that resets mid-stream while the headers are with the
// processor: the front lets the data before the reset through the
// processor to the client, then cuts the response (the timing where
// Envoy's reset comes after those replies; see ENVOY.md). The data goes
// without end_of_stream: a reset is not an end.
func TestStreamedUpstreamResetDuringHeaders(t *testing.T) {
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\ndata: 2\n\n")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no last chunk: a reset, not an end
		}
	}
	s := newStand(t, streamedConfig(), passAll, answer, func(c *Config) { c.headersApplied = waitRead(t, -1) })
	resp, rd := s.open(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	got, err := io.ReadAll(rd)
	if resp.StatusCode != 200 || string(got) != "data: 1\n\ndata: 2\n\n" || err == nil {
		t.Errorf("client got %d %q (%v), want the two events, then the response cut", resp.StatusCode, got, err)
	}
	st := s.last(t, 1)
	if !st.Aborted {
		t.Errorf("stats %+v, want the response aborted", st)
	}
	if d := s.responseBodies(); d != `"data: 1\n\ndata: 2\n\n"/eos=false` {
		t.Errorf("response_body messages %s, want the data before the reset, without end_of_stream", d)
	}
}
