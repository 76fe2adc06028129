package extproc

import (
	"context"
	"io"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
)

// fakeStream plays Envoy's side of one Process stream: it hands the server
// the queued messages, then EOF, and records the replies.
type fakeStream struct {
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	out  []*extprocv3.ProcessingResponse
	stop int // when > 0, end the stream after this many replies, as Envoy does after an immediate response
}

var _ extprocv3.ExternalProcessor_ProcessServer = (*fakeStream)(nil)

func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(f.in) == 0 || (f.stop > 0 && len(f.out) >= f.stop) {
		return nil, io.EOF
	}
	m := f.in[0]
	f.in = f.in[1:]
	return m, nil
}

// Send keeps the reply as Envoy would read it: marshalled and parsed again,
// as gRPC carries it.
func (f *fakeStream) Send(sent *extprocv3.ProcessingResponse) error {
	b, err := proto.Marshal(sent)
	if err != nil {
		return err
	}
	r := &extprocv3.ProcessingResponse{}
	if err := proto.Unmarshal(b, r); err != nil {
		return err
	}
	f.out = append(f.out, r)
	if r.GetImmediateResponse() != nil {
		f.in = nil // Envoy sends nothing more once it has answered locally
	}
	return nil
}

func (f *fakeStream) Context() context.Context     { return f.ctx }
func (f *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)       {}
func (f *fakeStream) SendMsg(any) error            { return nil }
func (f *fakeStream) RecvMsg(any) error            { return nil }

func httpHeaders(eos bool, kv ...string) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}
}

func reqHeaders(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: httpHeaders(eos, kv...)}}
}

func reqBody(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}
}

func respHeaders(status string, eos bool, kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: httpHeaders(eos, append([]string{":status", status}, kv...)...)}}
}

func respBody(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}
}

// headerOf finds a header in a mutation; ok is false when it is absent, and
// count tells how many times it was set.
func headerOf(m *extprocv3.HeaderMutation, name string) (value string, count int) {
	for _, h := range m.GetSetHeaders() {
		if h.GetHeader().GetKey() == name {
			value = string(h.GetHeader().GetRawValue())
			count++
		}
	}
	return value, count
}

// hashKey is HashKey without a salt, as the test servers run.
func hashKey(key string) string { return HashKey(nil, key) }

// compiled compiles policies built or parsed by a test.
func compiled(t testing.TB, specs ...config.Policy) []*policy.Policy {
	t.Helper()
	ps, err := policy.CompileAll(specs, config.Prices{})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
