package e2e

import (
	"fmt"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"testing"
	"time"
)

// TestProvidersStreamedThrough shows that the streams whose content type
// alone does not say "stream" (Bedrock's eventstream, Converse's and
// InvokeModel's; Gemini's JSON array, sent as application/json) and
// Gemini's SSE pass through the front chunk by chunk: tokengate answered
// their response headers with the STREAMED mode override, so nothing
// buffered them. The mock stalls after its first event; the client must
// hold that event while the mock still holds the rest (asked of the mock
// itself, the proof), and long before the stall ends (the figure, with a
// generous bound).
func TestProvidersStreamedThrough(t *testing.T) {
	const stall, firstWithin = 2 * time.Second, 1500 * time.Millisecond
	r := pvStart(t)
	for i, c := range pvPick(t, "bedrock converse-stream", "bedrock invoke-with-response-stream", "gemini array", "gemini sse") {
		t.Run(c.name, func(t *testing.T) {
			key := fmt.Sprintf("pv-streamed-%d", i)
			before := r.charges(t)
			start := time.Now()
			resp, rid := r.send(t, c, key, "x-mock-stall", stall.String(), "x-mock-completion-tokens", "12")
			pvWantStream(t, c, resp)
			rd := pvNewReader(c.framing, resp.Body)
			s, err := pvReadStream(t, c, rd, func(s *pvStream) bool { return s.events == 1 })
			firstAt := time.Since(start)
			if err != nil || s.events != 1 {
				t.Fatalf("first event: %d read, %v", s.events, err)
			}
			// Bedrock's answers carry their trace id in a header; Gemini's
			// first chunk carries it.
			id := pvTraceID(c, resp, s.id)
			if tr := traceOf(t, r.Mock.Field("http"), id); tr.Events != 1 || tr.Finished {
				t.Fatalf("when the client read the first event the mock had sent %d events (finished %v), want 1: the stream was held on the way",
					tr.Events, tr.Finished)
			}
			rest, err := pvReadStream(t, c, rd, nil)
			lastAt := time.Since(start)
			if err != nil || !rest.finished {
				t.Fatalf("the rest of the stream: %d events, finished %v, %v", rest.events, rest.finished, err)
			}
			t.Logf("%s: first event after %v, last after %v (stall %v)", c.name, firstAt.Round(time.Millisecond), lastAt.Round(time.Millisecond), stall)
			if firstAt >= firstWithin {
				t.Errorf("the first event came after %v, want it within %v, long before the %v stall ends", firstAt, firstWithin, stall)
			}
			if lastAt < stall {
				t.Errorf("the last event came after %v, before the %v stall could end", lastAt, stall)
			}
			r.waitSettled(t, c.name, before.requests+1)
			rec := r.record(t, rid)
			if rec.ModeOverrides != 1 || responseBodies(rec) < 2 {
				t.Errorf("%d mode overrides honoured, %d response_body messages: want STREAMED, the first event apart",
					rec.ModeOverrides, responseBodies(rec))
			}
		})
	}
}

// TestProvidersStreamHeldWithoutOverride is the failure the override
// prevents, reproduced by the front as Envoy has it: with the filter's
// response body mode BUFFERED and mode overrides not allowed, a stream
// reaches the client only once the upstream has finished it, stall and
// all. (The test above is the same stream with the override.)
func TestProvidersStreamHeldWithoutOverride(t *testing.T) {
	const stall = 2 * time.Second
	r := pvStartWith(t, func(f *extprocv3.ExternalProcessor) { f.AllowModeOverride = false })
	for i, c := range pvPick(t, "bedrock converse-stream", "gemini array") {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			resp, _ := r.send(t, c, fmt.Sprintf("pv-held-%d", i), "x-mock-stall", stall.String(), "x-mock-completion-tokens", "12")
			rd := pvNewReader(c.framing, resp.Body)
			s, err := pvReadStream(t, c, rd, func(s *pvStream) bool { return s.events == 1 })
			firstAt := time.Since(start)
			if err != nil || s.events != 1 {
				t.Fatalf("first event: %d read, %v", s.events, err)
			}
			t.Logf("%s without the override: first event after %v (stall %v)", c.name, firstAt.Round(time.Millisecond), stall)
			if firstAt < stall {
				t.Errorf("the first event came after %v, before the %v stall ended: the front did not hold the buffered stream as Envoy does", firstAt, stall)
			}
		})
	}
}
