package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// RawProcessClient speaks ext_proc to tokengate without any of Envoy's
// manners: it sends whatever message it is given, in any order, as many
// times as asked. The front never does that; a buggy or hostile client
// (or a future Envoy) might, and tokengate must neither panic nor leak a
// reservation when it happens.
type RawProcessClient struct {
	conn   *grpc.ClientConn
	client extprocsvc.ExternalProcessorClient
}

// DialRawProcess connects to tokengate's ext_proc address; the connection
// is closed when the test ends.
func DialRawProcess(t testing.TB, addr string) *RawProcessClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("raw ext_proc client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &RawProcessClient{conn: conn, client: extprocsvc.NewExternalProcessorClient(conn)}
}

// RawStream is one Process stream. Replies are read by a goroutine so that
// every wait is bounded by a timer, never by a blocking Recv.
type RawStream struct {
	stream  extprocsvc.ExternalProcessor_ProcessClient
	cancel  context.CancelFunc
	replies chan rawReply
	ended   error // the status the stream ended with, once seen
	clean   bool  // the server ended the stream with OK
}

type rawReply struct {
	msg *extprocsvc.ProcessingResponse
	err error
}

// Open starts a Process stream; it is reset when the test ends if the test
// did not end it.
func (c *RawProcessClient) Open(t testing.TB) *RawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.client.Process(ctx)
	if err != nil {
		cancel()
		t.Fatalf("raw ext_proc: open stream: %v", err)
	}
	rs := &RawStream{stream: s, cancel: cancel, replies: make(chan rawReply, 16)}
	go func() {
		for {
			m, err := s.Recv()
			select {
			case rs.replies <- rawReply{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(cancel)
	return rs
}

// ErrStreamEnded wraps the status a stream ended with while a reply was
// awaited: a server that refuses a message ends the stream with a status.
var ErrStreamEnded = errors.New("raw ext_proc: stream ended")

// Exchange sends msg and returns the next reply, or an error wrapping
// ErrStreamEnded (with the status) if the server ended the stream, or a
// timeout error if nothing came within timeout.
func (s *RawStream) Exchange(msg *extprocsvc.ProcessingRequest, timeout time.Duration) (*extprocsvc.ProcessingResponse, error) {
	if s.ended != nil {
		return nil, s.ended
	}
	// A failed Send means the stream is over; Recv reports why.
	_ = s.stream.Send(msg)
	return s.next(timeout)
}

func (s *RawStream) next(timeout time.Duration) (*extprocsvc.ProcessingResponse, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-s.replies:
		if r.err != nil {
			s.clean = errors.Is(r.err, io.EOF)
			s.ended = fmt.Errorf("%w: %s", ErrStreamEnded, statusText(r.err))
			return nil, s.ended
		}
		return r.msg, nil
	case <-timer.C:
		return nil, fmt.Errorf("raw ext_proc: no reply within %v", timeout)
	}
}

// Close ends the stream cleanly, as Envoy does at the end of a request,
// and waits up to timeout for the server to end its side with OK. A reply
// arriving then is an error: nothing was awaited any more.
func (s *RawStream) Close(timeout time.Duration) error {
	defer s.cancel()
	if s.ended == nil {
		if err := s.stream.CloseSend(); err != nil {
			return fmt.Errorf("raw ext_proc: close send: %w", err)
		}
		m, err := s.next(timeout)
		if err == nil {
			return fmt.Errorf("raw ext_proc: unexpected reply after close: %v", m)
		}
		if !errors.Is(err, ErrStreamEnded) {
			return err
		}
	}
	if s.clean {
		return nil
	}
	return s.ended
}

// Reset cancels the stream, as Envoy does when the client goes away.
func (s *RawStream) Reset() { s.cancel() }

func statusText(err error) string {
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	st := status.Convert(err)
	return st.Code().String() + ": " + st.Message()
}

// RawHeaders builds an Envoy header map from name, value pairs; values go
// in raw_value as current Envoy sends them.
func RawHeaders(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

// RawRequestHeaders is a request_headers message for a POST to path with
// the extra headers given as pairs.
func RawRequestHeaders(path string, kv ...string) *extprocsvc.ProcessingRequest {
	h := append([]string{":method", "POST", ":path", path, ":scheme", "http", ":authority", "tokengate.test",
		"content-type", "application/json"}, kv...)
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocsvc.HttpHeaders{Headers: RawHeaders(h...)},
	}}
}

// RawRequestBody is a request_body message.
func RawRequestBody(body []byte, endOfStream bool) *extprocsvc.ProcessingRequest {
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{
		RequestBody: &extprocsvc.HttpBody{Body: body, EndOfStream: endOfStream},
	}}
}

// RawResponseHeaders is a response_headers message with status and
// content-type.
func RawResponseHeaders(code int, contentType string) *extprocsvc.ProcessingRequest {
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocsvc.HttpHeaders{Headers: RawHeaders(":status", strconv.Itoa(code), "content-type", contentType)},
	}}
}

// RawResponseBody is a response_body message.
func RawResponseBody(body []byte, endOfStream bool) *extprocsvc.ProcessingRequest {
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocsvc.HttpBody{Body: body, EndOfStream: endOfStream},
	}}
}

// RawTrailers is a request_trailers (request true) or response_trailers
// message; tokengate's filter config skips trailers, so Envoy never sends
// these.
func RawTrailers(request bool) *extprocsvc.ProcessingRequest {
	tr := &extprocsvc.HttpTrailers{Trailers: RawHeaders("x-trailer", "1")}
	if request {
		return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestTrailers{RequestTrailers: tr}}
	}
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseTrailers{ResponseTrailers: tr}}
}

// RawReplyKind names the kind of a reply, as the request kind it answers:
// "request_headers", ..., "immediate_response", or "empty".
func RawReplyKind(m *extprocsvc.ProcessingResponse) string {
	switch m.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocsvc.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocsvc.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocsvc.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocsvc.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocsvc.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	}
	return "empty"
}

// RawRequestKind names the kind of a message sent.
func RawRequestKind(m *extprocsvc.ProcessingRequest) string {
	switch m.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocsvc.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocsvc.ProcessingRequest_RequestTrailers:
		return "request_trailers"
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocsvc.ProcessingRequest_ResponseBody:
		return "response_body"
	case *extprocsvc.ProcessingRequest_ResponseTrailers:
		return "response_trailers"
	}
	return "empty"
}
