package front

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/e2e/internal/ports"
	"github.com/tokengate/tokengate/internal/proc"
)

func TestParseEnvoyVersion(t *testing.T) {
	for in, want := range map[string]EnvoyVersion{
		"v1.33.2": Envoy133,
		"v1.30.0": Envoy133,
		"v1.29.9": Envoy129,
		"envoy  5f1a5b7c1d0e/1.34.0/Clean/RELEASE/BoringSSL": Envoy134,
		"v1.36.4":  Envoy134,
		"1.37.0":   Envoy137,
		"v1.39.1":  Envoy137,
		"v1.2.0":   Envoy129,
		"dev-1.40": 0, // no x.y.z: refused
	} {
		got, _, err := ParseEnvoyVersion(in)
		if want == 0 {
			if err == nil {
				t.Errorf("%q: parsed as %v, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %v (%v), want %v", in, got, err, want)
		}
	}
}

// The front's default line must be the Envoy the demo stack runs.
func TestPinnedEnvoyIsDockerComposes(t *testing.T) {
	root, err := proc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`image:\s*envoyproxy/envoy:(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("docker-compose.yaml names no envoyproxy/envoy image")
	}
	v, release, err := ParseEnvoyVersion(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if v != PinnedEnvoy {
		t.Errorf("docker-compose.yaml runs Envoy %s (%v), the front imitates %v by default: update PinnedEnvoy", release, v, PinnedEnvoy)
	}
}

func TestProtocolConfigPerVersion(t *testing.T) {
	for _, v := range EnvoyVersions {
		t.Run(v.String(), func(t *testing.T) {
			s := newStand(t, filterConfig(), passAll, nil, func(c *Config) { c.Envoy = v })
			s.do(t, "POST", "/v1/chat/completions", `{}`)
			s.last(t, 1)
			msgs := s.proc.messages(0)
			if len(msgs) < 2 {
				t.Fatalf("messages %s", kinds(msgs))
			}
			pc := msgs[0].GetProtocolConfig()
			if v.SendsProtocolConfig() != (pc != nil) {
				t.Errorf("first message protocol_config %v, want one: %v", pc, v.SendsProtocolConfig())
			}
			if pc != nil && (pc.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || pc.GetResponseBodyMode() != extprocv3.ProcessingMode_BUFFERED) {
				t.Errorf("protocol_config %v, want the configured body modes", pc)
			}
			for i, m := range msgs[1:] {
				if m.GetProtocolConfig() != nil {
					t.Errorf("message %d carries protocol_config again", i+1)
				}
			}
		})
	}
}

// The router's local replies reach the processor up to 1.33 and from 1.37,
// not from 1.34 to 1.36 (skip_ext_proc_on_local_reply): there the
// processor sees its stream closed after the request body.
func TestLocalRepliesPerEnvoyVersion(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	kinds := []struct {
		name    string
		status  int
		details string
		stand   func(t *testing.T, v EnvoyVersion) *stand
	}{
		{"upstream unreachable", http.StatusServiceUnavailable, "upstream_reset_before_response_started{connection_failure}",
			func(t *testing.T, v EnvoyVersion) *stand {
				return newStand(t, filterConfig(), passAll, nil, func(c *Config) { c.Envoy, c.Upstream = v, "http://"+ports.Dead(t) })
			}},
		{"route timeout", http.StatusGatewayTimeout, "upstream_response_timeout",
			func(t *testing.T, v EnvoyVersion) *stand {
				return newStand(t, filterConfig(), passAll, slow, func(c *Config) { c.Envoy, c.RouteTimeout = v, 100*time.Millisecond })
			}},
	}
	for _, k := range kinds {
		for _, v := range EnvoyVersions {
			t.Run(k.name+"/"+v.String(), func(t *testing.T) {
				s := k.stand(t, v)
				resp, body := s.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o"}`)
				if resp.StatusCode != k.status || resp.Header.Get("Content-Type") != "text/plain" || len(body) == 0 {
					t.Errorf("client got %d %q (%s), want the router's %d in text/plain", resp.StatusCode, body, resp.Header.Get("Content-Type"), k.status)
				}
				st := s.last(t, 1)
				if st.RouterReply != k.details || st.LocalReplyProcessed != v.LocalRepliesReachProcessor() {
					t.Errorf("router reply %q processed %v, want %q processed %v", st.RouterReply, st.LocalReplyProcessed, k.details, v.LocalRepliesReachProcessor())
				}
				if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
					t.Errorf("stream ended with %v, want Envoy's close", err)
				}
				msgs := s.proc.messages(0)
				want := "request_headers,request_body"
				if v.LocalRepliesReachProcessor() {
					want += ",response_headers,response_body"
				}
				if got := kindsOf(msgs); got != want {
					t.Fatalf("processor saw %s, want %s", got, want)
				}
				if !v.LocalRepliesReachProcessor() {
					return
				}
				rh := msgs[2].GetResponseHeaders().GetHeaders()
				if got, _ := headerOf(rh, ":status"); got != strconv.Itoa(k.status) {
					t.Errorf("response :status %s, want %d", got, k.status)
				}
				if got, _ := headerOf(rh, "content-type"); got != "text/plain" {
					t.Errorf("response content-type %q, want text/plain", got)
				}
				if _, ok := headerOf(rh, "x-envoy-upstream-service-time"); ok {
					t.Error("x-envoy-upstream-service-time on a local reply: the router adds it to upstream responses only")
				}
				if b := msgs[3].GetResponseBody(); !b.GetEndOfStream() || string(b.GetBody()) != string(body) {
					t.Errorf("response_body %q eos=%v, want the reply's body %q with end_of_stream", b.GetBody(), b.GetEndOfStream(), body)
				}
			})
		}
	}
}

// kindsOf is kinds with trailers messages named too.
func kindsOf(msgs []*extprocsvc.ProcessingRequest) string {
	var out []string
	for _, m := range msgs {
		switch {
		case m.GetRequestTrailers() != nil:
			out = append(out, "request_trailers")
		case m.GetResponseTrailers() != nil:
			out = append(out, "response_trailers")
		default:
			out = append(out, kinds([]*extprocsvc.ProcessingRequest{m}))
		}
	}
	return strings.Join(out, ",")
}

// Once the response has started, the route timeout resets the stream.
func TestRouteTimeoutAfterHeadersResets(t *testing.T) {
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: a\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	f := filterConfig(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
	})
	s := newStand(t, f, passAll, answer, func(c *Config) { c.RouteTimeout = 300 * time.Millisecond })
	resp, rd := s.open(t, "POST", "/v1/chat/completions", `{}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got, err := io.ReadAll(rd)
	if err == nil {
		t.Errorf("read %q to a clean end, want the response cut by the route timeout", got)
	}
	if st := s.last(t, 1); !st.Aborted || st.RouterReply != "" {
		t.Errorf("stats %+v, want the response aborted (no local reply once started)", st)
	}
}

// What Envoy adds before the filters run is in the headers the processor
// sees: x-request-id (generated, or the client's kept) and
// x-forwarded-proto on the request, x-envoy-upstream-service-time on an
// upstream's response.
func TestEnvoyAddedHeaders(t *testing.T) {
	s := newStand(t, filterConfig(), passAll, nil)
	s.do(t, "POST", "/v1/chat/completions", `{}`)
	s.do(t, "POST", "/v1/chat/completions", `{}`, "X-Request-Id", "client-chosen")
	s.last(t, 2)
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for i, want := range []string{"", "client-chosen"} {
		msgs := s.proc.messages(i)
		rh := msgs[0].GetRequestHeaders().GetHeaders()
		id, _ := headerOf(rh, "x-request-id")
		if want == "" && !uuid.MatchString(id) || want != "" && id != want {
			t.Errorf("request %d: x-request-id %q, want %s", i, id, map[bool]string{true: "a v4 UUID", false: want}[want == ""])
		}
		if got, _ := headerOf(rh, "x-forwarded-proto"); got != "http" {
			t.Errorf("request %d: x-forwarded-proto %q, want http", i, got)
		}
		var resp *extprocsvc.HttpHeaders
		for _, m := range msgs {
			if m.GetResponseHeaders() != nil {
				resp = m.GetResponseHeaders()
			}
		}
		ms, ok := headerOf(resp.GetHeaders(), "x-envoy-upstream-service-time")
		if n, err := strconv.Atoi(ms); !ok || err != nil || n < 0 {
			t.Errorf("request %d: x-envoy-upstream-service-time %q, want a number of milliseconds", i, ms)
		}
	}
	// The upstream gets the id the processor saw.
	calls := s.up.called()
	if got := calls[1].header.Get("X-Request-Id"); got != "client-chosen" {
		t.Errorf("upstream x-request-id %q, want client-chosen", got)
	}
}

// By default Envoy resets the stream right after its half-close; with
// ext_proc_graceful_grpc_close it waits for the processor's end, which then
// always sees a clean end of stream.
func TestStreamCloseModes(t *testing.T) {
	s := newStand(t, filterConfig(), passAll, nil, func(c *Config) { c.GracefulClose = true })
	for i := range 3 {
		s.do(t, "POST", "/v1/chat/completions", `{}`)
		if err := s.proc.waitEnd(t, i); err != endedOK {
			t.Errorf("graceful close %d: the processor saw %v, want a clean end of stream", i, err)
		}
	}
	if st := s.last(t, 3); st.StreamLeftOpen {
		t.Errorf("stats %+v: the processor ended at once, the stream was not left open", st)
	}
	if _, err := New(Config{Filter: filterConfig(), ExtProcAddr: "127.0.0.1:1", Upstream: "http://127.0.0.1:1",
		Envoy: Envoy133, GracefulClose: true}); err == nil {
		t.Error("New accepted GracefulClose for 1.33, which has no such runtime guard")
	}
}

// From 1.37 the stream is closed as soon as the last reply a STREAMED
// response needs is in; before, when the request ends. BUFFERED bodies are
// left out of that optimisation.
func TestCloseAfterLastReplyPerVersion(t *testing.T) {
	streamed := filterConfig(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
	})
	for _, tt := range []struct {
		v        EnvoyVersion
		filter   *extprocv3.ExternalProcessor
		name     string
		wantEarl bool
	}{
		{Envoy134, streamed, "streamed", false},
		{Envoy137, streamed, "streamed", true},
		{Envoy137, filterConfig(), "buffered", false},
	} {
		t.Run(tt.v.String()+"/"+tt.name, func(t *testing.T) {
			// The second event waits for a body message, so the stream is
			// not whole when the headers are answered (a whole body goes
			// as one buffered message, which 1.37 does not close after).
			gate := make(chan struct{})
			var once sync.Once
			h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
				if req.GetResponseBody() != nil || req.GetResponseHeaders() != nil && tt.name == "buffered" {
					once.Do(func() { close(gate) })
				}
				return passAll(n, req)
			}
			s := newStand(t, tt.filter, h, sseUpstream(gate), func(c *Config) { c.Envoy = tt.v })
			_, body := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`)
			if string(body) != "data: a\n\ndata: b\n\n" {
				t.Errorf("client got %q", body)
			}
			st := s.last(t, 1)
			if st.ClosedEarly != tt.wantEarl {
				t.Errorf("closed early %v, want %v", st.ClosedEarly, tt.wantEarl)
			}
			if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
				t.Errorf("stream end %v", err)
			}
		})
	}
}

// The buffer limit's 413 is Envoy's own local reply: like the router's,
// it reaches the processor's response phases except from 1.34 to 1.36.
func TestBufferLimitReplyPerVersion(t *testing.T) {
	for _, v := range EnvoyVersions {
		t.Run(v.String(), func(t *testing.T) {
			s := newStand(t, filterConfig(), passAll, nil, func(c *Config) { c.Envoy, c.BufferLimit = v, 24 })
			resp, body := s.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "Payload Too Large" {
				t.Errorf("client got %d %q, want 413 Payload Too Large", resp.StatusCode, body)
			}
			if st := s.last(t, 1); st.RouterReply != "request_payload_too_large" || st.UpstreamCalled {
				t.Errorf("stats %+v", st)
			}
			if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
				t.Errorf("stream end %v", err)
			}
			want := "request_headers"
			if v.LocalRepliesReachProcessor() {
				want += ",response_headers,response_body"
			}
			if got := kindsOf(s.proc.messages(0)); got != want {
				t.Errorf("processor saw %s, want %s", got, want)
			}
		})
	}
}

// CONTINUE_AND_REPLACE in a headers reply replaces the body, and nothing
// more of that direction goes to the processor.
func TestContinueAndReplace(t *testing.T) {
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() != nil {
			return []*extprocsvc.ProcessingResponse{pass(req, &extprocsvc.CommonResponse{
				Status:       extprocsvc.CommonResponse_CONTINUE_AND_REPLACE,
				BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(`{"replaced":true}`)}},
			})}
		}
		return passAll(n, req)
	}
	s := newStand(t, filterConfig(), h, nil)
	s.do(t, "POST", "/v1/chat/completions", `{"original":true}`)
	s.last(t, 1)
	if got := kindsOf(s.proc.messages(0)); got != "request_headers,response_headers,response_body" {
		t.Errorf("processor saw %s, want no request_body after CONTINUE_AND_REPLACE", got)
	}
	if calls := s.up.called(); len(calls) != 1 || string(calls[0].body) != `{"replaced":true}` || calls[0].contentLength != -1 {
		t.Errorf("upstream calls %+v, want the replacement, its content-length dropped", calls)
	}
}
