package front

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// h2c is a client speaking HTTP/2 over cleartext with prior knowledge, as
// Envoy's AUTO codec accepts it.
func h2c() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 30 * time.Second}
}

// http1 is a client that never upgrades.
func http1() *http.Client {
	return &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
}

// afterHeaders returns an OnReply that closes the returned channel once
// the request headers have been answered.
func afterHeaders() (func(ReplyEvent), <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	return func(e ReplyEvent) {
		if e.Phase == "request_headers" {
			once.Do(func() { close(ch) })
		}
	}, ch
}

// waitSource blocks until src has ended; for the headersApplied hook.
func waitSource(t *testing.T) func(phase, *bodySource) {
	return func(_ phase, src *bodySource) {
		deadline := time.After(5 * time.Second)
		for {
			ch := src.wait()
			if src.ended() {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				t.Error("the body did not end within 5s")
				return
			}
		}
	}
}

// trailerRequest posts body to url ending in an x-checksum trailer. With
// gate, the body is only written once gate is closed (after the headers
// reply), as a client whose body follows its headers later would.
func trailerRequest(t *testing.T, client *http.Client, url, body string, gate <-chan struct{}) (*http.Response, string) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.Background(), "POST", url+"/v1/chat/completions", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Trailer = http.Header{"X-Checksum": nil}
	go func() {
		if gate != nil {
			select {
			case <-gate:
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(pw, body)
		req.Trailer.Set("X-Checksum", "c0ffee")
		pw.Close()
	}()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(got)
}

func TestHTTP2RequestTrailers(t *testing.T) {
	const body = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	send := func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.RequestTrailerMode = extprocv3.ProcessingMode_SEND
	}
	tests := []struct {
		name      string
		client    *http.Client
		filter    *extprocv3.ExternalProcessor
		h1        bool // Config.DownstreamHTTP1Trailers
		whole     bool // the whole request is in when the headers are answered
		body      string
		wantMsgs  string
		wantEOS   bool
		trailered bool
	}{
		// onTrailers: the buffered body goes without end_of_stream, and
		// nothing follows it while trailers are SKIP.
		{"h2 trailers after the headers reply", h2c(), filterConfig(), false, false, body,
			"request_headers,request_body,response_headers,response_body", false, true},
		// handleHeadersResponse: a request that was whole (trailers
		// included) during the headers round trip goes with end_of_stream.
		{"h2 trailers during the headers round trip", h2c(), filterConfig(), false, true, body,
			"request_headers,request_body,response_headers,response_body", true, true},
		// SEND: the trailers follow in their own message.
		{"h2 trailers sent", h2c(), filterConfig(send), false, false, body,
			"request_headers,request_body,request_trailers,response_headers,response_body", false, true},
		// No data, then trailers: Envoy has no buffered body to send.
		{"h2 trailers without a body", h2c(), filterConfig(), false, false, "",
			"request_headers,response_headers,response_body", false, true},
		// HTTP/1.1 trailers are dropped by Envoy's codec unless the
		// connection manager enables them.
		{"http/1.1 trailers dropped", http1(), filterConfig(), false, false, body,
			"request_headers,request_body,response_headers,response_body", true, false},
		{"http/1.1 trailers enabled", http1(), filterConfig(), true, false, body,
			"request_headers,request_body,response_headers,response_body", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			onReply, answered := afterHeaders()
			s := newStand(t, tt.filter, passAll, nil, func(c *Config) {
				c.DownstreamHTTP1Trailers = tt.h1
				c.OnReply = onReply
				if tt.whole {
					c.headersApplied = waitSource(t)
				}
			})
			var gate <-chan struct{} = answered
			if tt.whole {
				gate = nil
			}
			resp, got := trailerRequest(t, tt.client, s.url, tt.body, gate)
			wantProto := 2
			if tt.client.Transport.(*http.Transport).Protocols == nil {
				wantProto = 1
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != wantProto || got != `{"ok":true}` {
				t.Fatalf("client got %s %d %q, want HTTP/%d 200 and the upstream's answer", resp.Proto, resp.StatusCode, got, wantProto)
			}
			st := s.last(t, 1)
			msgs := s.proc.messages(0)
			if k := kindsOf(msgs); k != tt.wantMsgs {
				t.Fatalf("processor saw %s, want %s", k, tt.wantMsgs)
			}
			if st.RequestTrailers != tt.trailered {
				t.Errorf("request trailers kept: %v, want %v", st.RequestTrailers, tt.trailered)
			}
			for _, m := range msgs {
				if b := m.GetRequestBody(); b != nil && (string(b.GetBody()) != tt.body || b.GetEndOfStream() != tt.wantEOS) {
					t.Errorf("request_body %q end_of_stream=%v, want the whole body with end_of_stream=%v", b.GetBody(), b.GetEndOfStream(), tt.wantEOS)
				}
				if tr := m.GetRequestTrailers(); tr != nil {
					if v, _ := headerOf(tr.GetTrailers(), "x-checksum"); v != "c0ffee" {
						t.Errorf("request_trailers %v, want x-checksum: c0ffee", tr.GetTrailers())
					}
				}
			}
			if calls := s.up.called(); len(calls) != 1 || string(calls[0].body) != tt.body {
				t.Errorf("upstream calls %+v, want the body once", calls)
			}
		})
	}
}

// trailerUpstream answers a chunked JSON body ending in an x-upstream
// trailer; the body is only written once gate is closed.
func trailerUpstream(gate <-chan struct{}) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", "X-Upstream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, `{"usage":{"total_tokens":3}}`)
		w.Header().Set("X-Upstream", "done")
	}
}

func TestResponseTrailers(t *testing.T) {
	send := filterConfig(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.ResponseTrailerMode = extprocv3.ProcessingMode_SEND
	})
	tests := []struct {
		name        string
		filter      *extprocv3.ExternalProcessor
		enabled     bool // Config.UpstreamHTTP1Trailers
		wantMsgs    string
		wantEOS     bool
		wantTrailer string
	}{
		{"dropped by the cluster's codec", filterConfig(), false,
			"request_headers,response_headers,response_body", true, ""},
		{"kept, trailers skipped", filterConfig(), true,
			"request_headers,response_headers,response_body", false, "done"},
		{"kept, trailers sent and mutated", send, true,
			"request_headers,response_headers,response_body,response_trailers", false, "mutated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gate := make(chan struct{})
			var once sync.Once
			h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
				if req.GetResponseTrailers() != nil {
					return []*extprocsvc.ProcessingResponse{{Response: &extprocsvc.ProcessingResponse_ResponseTrailers{
						ResponseTrailers: &extprocsvc.TrailersResponse{HeaderMutation: &extprocsvc.HeaderMutation{
							SetHeaders: []*corev3.HeaderValueOption{setHeader("x-upstream", "mutated", 0)},
						}},
					}}}
				}
				return passAll(n, req)
			}
			// The upstream's body and trailers come once the response
			// headers are answered.
			s := newStand(t, tt.filter, h, trailerUpstream(gate), func(c *Config) {
				c.UpstreamHTTP1Trailers = tt.enabled
				c.OnReply = func(e ReplyEvent) {
					if e.Phase == "response_headers" {
						once.Do(func() { close(gate) })
					}
				}
			})
			req, err := http.NewRequestWithContext(context.Background(), "GET", s.url+"/v1/models", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := h2c().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !strings.Contains(string(got), "total_tokens") {
				t.Fatalf("client got %q (%v)", got, err)
			}
			if tr := resp.Trailer.Get("X-Upstream"); tr != tt.wantTrailer {
				t.Errorf("client trailer x-upstream %q, want %q", tr, tt.wantTrailer)
			}
			s.last(t, 1)
			msgs := s.proc.messages(0)
			if k := kindsOf(msgs); k != tt.wantMsgs {
				t.Fatalf("processor saw %s, want %s", k, tt.wantMsgs)
			}
			for _, m := range msgs {
				if b := m.GetResponseBody(); b != nil && (string(b.GetBody()) != string(got) || b.GetEndOfStream() != tt.wantEOS) {
					t.Errorf("response_body %q end_of_stream=%v, want the whole body with end_of_stream=%v", b.GetBody(), b.GetEndOfStream(), tt.wantEOS)
				}
			}
		})
	}
}

// The listener speaks HTTP/2 with prior knowledge and HTTP/1.1 on the same
// port, and the processor sees the same request headers from both.
func TestHTTP2AndHTTP1Alike(t *testing.T) {
	s := newStand(t, filterConfig(), passAll, nil)
	for i, c := range []*http.Client{http1(), h2c()} {
		req, err := http.NewRequestWithContext(context.Background(), "POST", s.url+"/v1/chat/completions?x=1", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Api-Key", "k")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != i+1 {
			t.Errorf("client %d spoke %s", i, resp.Proto)
		}
		s.last(t, i+1)
		rh := s.proc.messages(i)[0].GetRequestHeaders().GetHeaders()
		for key, want := range map[string]string{
			":method": "POST", ":path": "/v1/chat/completions?x=1", ":scheme": "http", "api-key": "k",
			":authority": strings.TrimPrefix(s.url, "http://"), "content-length": "2",
		} {
			if got, _ := headerOf(rh, key); got != want {
				t.Errorf("%s: %s = %q, want %q", resp.Proto, key, got, want)
			}
		}
	}
}
