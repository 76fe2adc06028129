package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// streamedConfig counts streams by their reported usage, injected.
const evStreamedE2EConfig = `store: {backend: memory}
policies:
- name: streamed
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
`

// The usage the test upstream reports at the end of every stream.
const (
	evSseUsagePrompt     = 21
	evSseUsageCompletion = 4
)

func evUpSSEEvent(content string) string {
	return fmt.Sprintf(`data: {"id":"chatcmpl-e2e","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`+"\n\n", content)
}

var evSseUsageEvent = fmt.Sprintf(`data: {"id":"chatcmpl-e2e","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n",
	evSseUsagePrompt, evSseUsageCompletion, evSseUsagePrompt+evSseUsageCompletion)

// evSseEvents is the whole stream the test upstream sends, in events.
var evSseEvents = []string{evUpSSEEvent("The"), evUpSSEEvent(" quick"), evUpSSEEvent(" brown"), evUpSSEEvent(" fox"), evSseUsageEvent, "data: [DONE]\n\n"}

// evSseServer is an upstream whose event stream is written as the test
// says: write gets the response and the events, and decides how to send
// them. The usage event is only sent when the request asked for it
// (tokengate injects stream_options.include_usage).
type evSseServer struct {
	url   string
	write atomic.Pointer[func(w http.ResponseWriter, r *http.Request, events []string)]
	asked atomic.Int64 // requests that asked for usage
}

func evStartSSEServer(t *testing.T) *evSseServer {
	t.Helper()
	u := &evSseServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req)
		events := evSseEvents
		if req.StreamOptions.IncludeUsage {
			u.asked.Add(1)
		} else {
			events = []string{evSseEvents[0], evSseEvents[1], evSseEvents[2], evSseEvents[3], evSseEvents[5]}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		(*u.write.Load())(w, r, events)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func evFlush(w http.ResponseWriter) { http.NewResponseController(w).Flush() }

// evStreamedRig is a stack with the test upstream behind one more front.
type evStreamedRig struct {
	*harness.Stack
	up      *evSseServer
	replies chan string // phases the front got replies for
	n       int
}

func evStartStreamedRig(t *testing.T, delay time.Duration) (*evStreamedRig, *front.Front, string) {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evStreamedE2EConfig, FakeClock: labClock})
	r := &evStreamedRig{Stack: s, up: evStartSSEServer(t), replies: make(chan string, 256)}
	f, url := evStartFront(t, s, r.up.url, func(c *front.Config) {
		c.OnReply = func(e front.ReplyEvent) { r.replies <- e.Phase }
		if delay > 0 {
			// tokengate's replies come late, later than the upstream's
			// events: a slow network or a busy processor.
			p := harness.StartLatencyProxy(t, s.Tokengate.Field("grpc"))
			p.SetDelay(delay)
			c.ExtProcAddr = p.Addr()
		}
	})
	return r, f, url
}

// awaitReplies waits until the front has had n more replies to
// response_body messages.
func (r *evStreamedRig) awaitReplies(t *testing.T, n int) {
	for n > 0 {
		select {
		case p := <-r.replies:
			if p == "response_body" {
				n--
			}
		case <-time.After(10 * time.Second):
			t.Error("no reply from tokengate within 10s")
			return
		}
	}
}

// awaitHeadersReply waits until the front has tokengate's reply to the
// response headers.
func (r *evStreamedRig) awaitHeadersReply(t *testing.T) {
	for {
		select {
		case p := <-r.replies:
			if p == "response_headers" {
				return
			}
		case <-time.After(10 * time.Second):
			t.Error("no reply to the response headers within 10s")
			return
		}
	}
}

// stream sends a streamed chat, checks the client got the stream intact
// and tokengate charged exactly the usage the upstream reported, and
// returns the front's record.
func (r *evStreamedRig) stream(t *testing.T, f *front.Front, url, key string) front.RequestStats {
	t.Helper()
	body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Tell me about the fox."}]}`)
	before, beforeSettled := evReadCharges(t, r.Stack, "streamed"), evSettled(t, r.Stack, "streamed")
	resp, got := evPost(t, evPlainClient, url, "/v1/chat/completions", body, "api-key", key)
	if resp.StatusCode != http.StatusOK || string(got) != strings.Join(evSseEvents, "") {
		t.Errorf("client got %d %q, want the upstream's stream intact", resp.StatusCode, got)
	}
	r.n++
	recs, err := f.WaitCompleted(r.n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := recs[r.n-1]
	if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" || rec.ModeOverrides != 1 {
		t.Errorf("record %+v: want one mode override (to STREAMED) and no protocol trouble", rec)
	}
	evWaitSettled(t, r.Stack, "streamed", beforeSettled+1)
	d := evReadCharges(t, r.Stack, "streamed").delta(before)
	if want := float64(evSseUsagePrompt + evSseUsageCompletion); d["reported"] != want || len(d) != 1 {
		t.Errorf("charged %v, want exactly the reported %v", d, want)
	}
	return rec
}

func evResponseBodies(rec front.RequestStats) []front.BodyMessage {
	var out []front.BodyMessage
	for _, b := range rec.Bodies {
		if b.Phase == "response_body" {
			out = append(out, b)
		}
	}
	return out
}

// Each event its own chunk, in step with tokengate's replies, and the end
// of an HTTP/1.1 chunked stream alone: an empty final message with
// end_of_stream.
func TestStreamedSeparateEventsAndEmptyEnd(t *testing.T) {
	r, f, url := evStartStreamedRig(t, 0)
	write := func(w http.ResponseWriter, req *http.Request, events []string) {
		evFlush(w)
		for _, e := range events {
			io.WriteString(w, e)
			evFlush(w)
			r.awaitReplies(t, 1) // the chunk went, alone, and came back
		}
	}
	r.up.write.Store(&write)
	rec := r.stream(t, f, url, "separate")
	bs := evResponseBodies(rec)
	if len(bs) != len(evSseEvents)+1 {
		t.Fatalf("%d response_body messages %+v, want one per event and the end", len(bs), bs)
	}
	for i, b := range bs[:len(evSseEvents)] {
		if b.Bytes != len(evSseEvents[i]) || b.EndOfStream {
			t.Errorf("message %d: %+v, want event %d alone without end_of_stream", i, b, i)
		}
	}
	if last := bs[len(bs)-1]; last.Bytes != 0 || !last.EndOfStream {
		t.Errorf("last message %+v, want an empty one with end_of_stream", last)
	}
}

// Several events in one read go to tokengate as one chunk.
func TestStreamedCoalescedEvents(t *testing.T) {
	r, f, url := evStartStreamedRig(t, 0)
	write := func(w http.ResponseWriter, req *http.Request, events []string) {
		evFlush(w)
		io.WriteString(w, events[0])
		evFlush(w)
		r.awaitReplies(t, 1)
		io.WriteString(w, strings.Join(events[1:], "")) // one write, one flush: one chunk
		evFlush(w)
		r.awaitReplies(t, 1)
	}
	r.up.write.Store(&write)
	rec := r.stream(t, f, url, "coalesced")
	bs := evResponseBodies(rec)
	rest := len(strings.Join(evSseEvents[1:], ""))
	if len(bs) < 2 || bs[0].Bytes != len(evSseEvents[0]) || bs[1].Bytes != rest {
		t.Errorf("response_body messages %+v, want the first event alone, then the other %d events (%d bytes) in one", bs, len(evSseEvents)-1, rest)
	}
}

// A stream that had arrived whole by the time tokengate answered the
// response headers (here tokengate's replies take 200 ms) goes as a single
// message with end_of_stream.
func TestStreamedWholeStreamInOneMessage(t *testing.T) {
	r, f, url := evStartStreamedRig(t, 200*time.Millisecond)
	write := func(w http.ResponseWriter, req *http.Request, events []string) {
		io.WriteString(w, strings.Join(events, "")) // headers, body and end in one go
	}
	r.up.write.Store(&write)
	rec := r.stream(t, f, url, "whole")
	if bs := evResponseBodies(rec); len(bs) != 1 || bs[0].Bytes != len(strings.Join(evSseEvents, "")) || !bs[0].EndOfStream {
		t.Errorf("response_body messages %+v, want the whole stream in one message with end_of_stream", bs)
	}
}

// tokengate's replies are slower than the upstream (300 ms each, events
// every 20 ms once the response headers are answered): chunks go out as
// they arrive, several await replies at once, and come back in order.
func TestStreamedRepliesSlowerThanUpstream(t *testing.T) {
	r, f, url := evStartStreamedRig(t, 300*time.Millisecond)
	write := func(w http.ResponseWriter, req *http.Request, events []string) {
		evFlush(w)
		r.awaitHeadersReply(t)
		for _, e := range events {
			io.WriteString(w, e)
			evFlush(w)
			time.Sleep(20 * time.Millisecond)
		}
	}
	r.up.write.Store(&write)
	rec := r.stream(t, f, url, "slow-replies")
	if rec.MaxInFlight < 2 {
		t.Errorf("at most %d chunk awaited its reply at once: the chunks were not pipelined (messages %+v)", rec.MaxInFlight, evResponseBodies(rec))
	}
	t.Logf("%d response_body messages, up to %d in flight", len(evResponseBodies(rec)), rec.MaxInFlight)
}
