package front

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// handler scripts the fake processor: given the n-th message of a stream
// (from 0), it returns the replies to send; none means "do not answer",
// and a nil entry ends the stream with an Internal error.
type handler func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse

// processor is a real gRPC ext_proc server on loopback that answers as its
// handler says and records what it received and how each stream ended.
type processor struct {
	extprocsvc.UnimplementedExternalProcessorServer
	handle handler
	addr   string

	mu      sync.Mutex
	streams [][]*extprocsvc.ProcessingRequest
	ends    []error // per stream: nil when the front closed its side cleanly
	changed chan struct{}
}

func startProcessor(t *testing.T, h handler) *processor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &processor{handle: h, addr: ln.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, p)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return p
}

func (p *processor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	p.mu.Lock()
	id := len(p.streams)
	p.streams = append(p.streams, nil)
	p.ends = append(p.ends, nil)
	p.mu.Unlock()
	for n := 0; ; n++ {
		req, err := s.Recv()
		if err != nil {
			p.end(id, err)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		p.mu.Lock()
		p.streams[id] = append(p.streams[id], req)
		p.mu.Unlock()
		for _, r := range p.handle(n, req) {
			if r == nil {
				err := status.Error(codes.Internal, "boom")
				p.end(id, err)
				return err
			}
			if err := s.Send(r); err != nil {
				p.end(id, err)
				return err
			}
		}
	}
}

// endedOK is recorded for a stream the front half-closed cleanly.
var endedOK = errors.New("ended cleanly")

// closedByFront reports whether a stream ended the way Envoy's
// ExternalProcessorStreamImpl::close ends it: a half-close followed at
// once by a reset, of which the processor sees the first to arrive.
func closedByFront(err error) bool {
	return errors.Is(err, endedOK) || status.Code(err) == codes.Canceled
}

func (p *processor) end(id int, err error) {
	if errors.Is(err, io.EOF) {
		err = endedOK
	}
	p.mu.Lock()
	p.ends[id] = err
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// waitEnd waits until stream id has ended and reports how.
func (p *processor) waitEnd(t *testing.T, id int) error {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		var end error
		if id < len(p.ends) {
			end = p.ends[id]
		}
		changed := p.changed
		p.mu.Unlock()
		if end != nil {
			return end
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("stream %d did not end within 5s", id)
		}
	}
}

// messages returns what stream id received so far.
func (p *processor) messages(id int) []*extprocsvc.ProcessingRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id >= len(p.streams) {
		return nil
	}
	return append([]*extprocsvc.ProcessingRequest(nil), p.streams[id]...)
}

// upstreamCall is what the test upstream saw.
type upstreamCall struct {
	method, path  string
	header        http.Header
	body          []byte
	contentLength int64
}

// upstream is an httptest server recording its calls; answer writes the
// response (a small JSON document when nil).
type upstream struct {
	url    string
	mu     sync.Mutex
	calls  []upstreamCall
	answer func(w http.ResponseWriter, r *http.Request)
}

func startUpstream(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *upstream {
	t.Helper()
	u := &upstream{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.calls = append(u.calls, upstreamCall{r.Method, r.URL.RequestURI(), r.Header.Clone(), body, r.ContentLength})
		u.mu.Unlock()
		if u.answer != nil {
			u.answer(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func (u *upstream) called() []upstreamCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamCall(nil), u.calls...)
}

// filterConfig is envoy.yaml's ext_proc filter, hand-built, with changes.
func filterConfig(change ...func(*extprocv3.ExternalProcessor)) *extprocv3.ExternalProcessor {
	f := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "tokengate"},
		}},
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			ResponseBodyMode:    extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		AllowModeOverride: true,
		MessageTimeout:    durationpb.New(2 * time.Second),
		MetadataOptions: &extprocv3.MetadataOptions{ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{
			Untyped: []string{"tokengate"},
		}},
	}
	for _, c := range change {
		c(f)
	}
	return f
}

// stand is one front between a processor and an upstream.
type stand struct {
	front *Front
	url   string
	proc  *processor
	up    *upstream
}

func newStand(t *testing.T, f *extprocv3.ExternalProcessor, h handler, answer func(http.ResponseWriter, *http.Request), change ...func(*Config)) *stand {
	t.Helper()
	s := &stand{proc: startProcessor(t, h), up: startUpstream(t, answer)}
	cfg := Config{Filter: f, ExtProcAddr: s.proc.addr, Upstream: s.up.url}
	for _, c := range change {
		c(&cfg)
	}
	fr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fr.Close() })
	s.front = fr
	if s.url, err = fr.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return s
}

// do sends a request through the front and reads the whole answer.
func (s *stand) do(t *testing.T, method, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, got
}

// last waits for the n-th request's record (1-based).
func (s *stand) last(t *testing.T, n int) RequestStats {
	t.Helper()
	done, err := s.front.WaitCompleted(n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return done[n-1]
}

// passAll answers every message with an empty reply of its own kind.
func passAll(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
	return []*extprocsvc.ProcessingResponse{pass(req, nil)}
}

// pass builds the reply to req carrying cr (nil: plain CONTINUE).
func pass(req *extprocsvc.ProcessingRequest, cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	if cr == nil {
		cr = &extprocsvc.CommonResponse{}
	}
	switch {
	case req.GetRequestHeaders() != nil:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
	case req.GetResponseHeaders() != nil:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
	case req.GetRequestBody() != nil:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: cr}}}
	case req.GetRequestTrailers() != nil:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocsvc.TrailersResponse{HeaderMutation: cr.GetHeaderMutation()}}}
	case req.GetResponseTrailers() != nil:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocsvc.TrailersResponse{HeaderMutation: cr.GetHeaderMutation()}}}
	default:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{Response: cr}}}
	}
}

// setHeader is a set_headers entry with the value in raw_value.
func setHeader(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}, AppendAction: action}
}

// kinds lists the kind of each message received, for "step N" messages.
func kinds(msgs []*extprocsvc.ProcessingRequest) string {
	var b bytes.Buffer
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		switch {
		case m.GetRequestHeaders() != nil:
			b.WriteString("request_headers")
		case m.GetRequestBody() != nil:
			b.WriteString("request_body")
		case m.GetResponseHeaders() != nil:
			b.WriteString("response_headers")
		case m.GetResponseBody() != nil:
			b.WriteString("response_body")
		default:
			b.WriteString("?")
		}
	}
	return b.String()
}

// headerOf returns the raw value of key in a HeaderMap, and whether the
// value field was (wrongly, for current Envoy) used instead.
func headerOf(m *corev3.HeaderMap, key string) (string, bool) {
	for _, h := range m.GetHeaders() {
		if h.GetKey() == key {
			return string(h.GetRawValue()), h.GetValue() == ""
		}
	}
	return "", false
}
