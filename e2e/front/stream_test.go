package front

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// sseUpstream answers two server-sent events. When gated, the second is
// only written once the client has received the first, which proves the
// front forwarded the first at once instead of buffering it.
func sseUpstream(gate <-chan struct{}) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: a\n\n")
		http.NewResponseController(w).Flush()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
				return // the client never got the first event: the test fails on the body
			}
		}
		io.WriteString(w, "data: b\n\n")
	}
}

// upperBodies uppercases every body chunk, so the test can tell the
// processor's answer from the original.
func upperBodies(cr *extprocsvc.CommonResponse, body []byte) *extprocsvc.CommonResponse {
	cr.BodyMutation = &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: bytes.ToUpper(body)}}
	return cr
}

func TestModeOverride(t *testing.T) {
	streamed := &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}
	tests := []struct {
		name        string
		allow       bool
		at          func(*extprocsvc.ProcessingRequest) bool
		wantStream  bool
		wantReqBody bool
	}{
		// An override naming only the response body mode also sets the
		// request body mode to NONE (body modes are always taken), so
		// one sent with the response headers changes nothing upstream...
		{"honoured at response headers", true, isResponseHeaders, true, true},
		// ...but one sent with the request headers skips the request body.
		{"honoured at request headers", true, isRequestHeaders, true, false},
		{"ignored when not allowed", false, isResponseHeaders, false, true},
		{"ignored in a body reply", true, isRequestBody, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
				cr := &extprocsvc.CommonResponse{}
				if b := req.GetResponseBody(); b != nil {
					cr = upperBodies(cr, b.GetBody())
				}
				r := pass(req, cr)
				if tt.at(req) {
					r.ModeOverride = streamed
				}
				return []*extprocsvc.ProcessingResponse{r}
			}
			var gate chan struct{}
			if tt.wantStream {
				gate = make(chan struct{})
			}
			s := newStand(t, filterConfig(func(f *extprocv3.ExternalProcessor) { f.AllowModeOverride = tt.allow }), h, sseUpstream(gate))
			resp, rd := s.open(t, "POST", "/v1/chat/completions", `{"stream":true}`)
			first, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if gate != nil {
				close(gate)
			}
			rest, _ := io.ReadAll(rd)
			resp.Body.Close()
			if got := first + string(rest); got != "DATA: A\n\nDATA: B\n\n" {
				t.Errorf("client got %q, want both events uppercased by the processor", got)
			}
			st := s.last(t, 1)
			msgs := s.proc.messages(0)
			checkBodies(t, msgs, tt.wantStream, "data: a\n\ndata: b\n\n")
			if got := strings.Contains(kinds(msgs), "request_body"); got != tt.wantReqBody {
				t.Errorf("messages %s: request body sent = %v, want %v", kinds(msgs), got, tt.wantReqBody)
			}
			if tt.wantStream != (st.ModeOverrides == 1) || tt.wantStream == (st.IgnoredModeOverrides == 1) {
				t.Errorf("overrides honoured %d, ignored %d", st.ModeOverrides, st.IgnoredModeOverrides)
			}
		})
	}
}

func isRequestHeaders(r *extprocsvc.ProcessingRequest) bool  { return r.GetRequestHeaders() != nil }
func isResponseHeaders(r *extprocsvc.ProcessingRequest) bool { return r.GetResponseHeaders() != nil }
func isRequestBody(r *extprocsvc.ProcessingRequest) bool     { return r.GetRequestBody() != nil }

// checkBodies checks the response_body messages: one whole buffered body,
// or (streamed) several chunks, end_of_stream on the last only, adding up
// to the body.
func checkBodies(t *testing.T, msgs []*extprocsvc.ProcessingRequest, streamed bool, want string) {
	t.Helper()
	var bodies []*extprocsvc.HttpBody
	for _, m := range msgs {
		if b := m.GetResponseBody(); b != nil {
			bodies = append(bodies, b)
		}
	}
	if len(bodies) == 0 {
		t.Fatal("no response_body message")
	}
	if !streamed && len(bodies) != 1 {
		t.Errorf("%d response_body messages, want 1 (buffered)", len(bodies))
	}
	if streamed && len(bodies) < 2 {
		t.Errorf("%d response_body messages, want one per chunk (streamed)", len(bodies))
	}
	var all strings.Builder
	for i, b := range bodies {
		all.Write(b.GetBody())
		if last := i == len(bodies)-1; b.GetEndOfStream() != last {
			t.Errorf("step %d: end_of_stream = %v, want %v", i, b.GetEndOfStream(), last)
		}
	}
	if all.String() != want {
		t.Errorf("response bodies add up to %q, want %q", all.String(), want)
	}
}

// open sends a request and returns the response unread, for tests that
// read it step by step.
func (s *stand) open(t *testing.T, method, path, body string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func TestClientDisconnectResetsStream(t *testing.T) {
	h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		r := pass(req, nil)
		if req.GetResponseHeaders() != nil {
			r.ModeOverride = &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}
		}
		return []*extprocsvc.ProcessingResponse{r}
	}
	never := make(chan struct{}) // the second event never comes
	s := newStand(t, filterConfig(), h, sseUpstream(never))
	resp, rd := s.open(t, "POST", "/v1/chat/completions", `{"stream":true}`)
	if _, err := rd.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // mid-stream: the connection is dropped
	// Envoy destroys the filter, which half-closes and resets the stream:
	// the processor sees one or the other, and no message after the first
	// chunk.
	if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
		t.Errorf("processor saw the stream end with %v, want Envoy's half-close and reset", err)
	}
	if got := kinds(s.proc.messages(0)); strings.Count(got, "response_body") != 1 {
		t.Errorf("messages %s, want one response_body and nothing after the client left", got)
	}
	if st := s.last(t, 1); !st.ClientGone {
		t.Errorf("stats %+v, want ClientGone", st)
	}
}

func TestStreamedRequestBody(t *testing.T) {
	h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		cr := &extprocsvc.CommonResponse{}
		if b := req.GetRequestBody(); b != nil {
			cr = upperBodies(cr, b.GetBody())
		}
		return []*extprocsvc.ProcessingResponse{pass(req, cr)}
	}
	f := filterConfig(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
	})
	s := newStand(t, f, h, nil)
	const body = `{"messages":[{"role":"user","content":"hi"}]}`
	resp, _ := s.do(t, "POST", "/v1/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	calls := s.up.called()
	if len(calls) != 1 || string(calls[0].body) != strings.ToUpper(body) || calls[0].contentLength != -1 {
		t.Fatalf("upstream calls %+v, want the uppercased body, chunked (content-length dropped)", calls)
	}
	var sent strings.Builder
	var eos bool
	for _, m := range s.proc.messages(0) {
		if b := m.GetRequestBody(); b != nil {
			sent.Write(b.GetBody())
			eos = b.GetEndOfStream()
		}
	}
	if sent.String() != body || !eos {
		t.Errorf("request_body messages carried %q (last end_of_stream %v), want the body and end_of_stream", sent.String(), eos)
	}
	if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
		t.Errorf("stream end %v, want Envoy's half-close and reset", err)
	}
}
