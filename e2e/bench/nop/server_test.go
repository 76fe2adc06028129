package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dial serves the nop on a loopback port and returns a client to it.
func dial(t *testing.T) extprocv3.ExternalProcessorClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, server{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

// TestEveryKindContinues plays one stream with every message kind Envoy
// sends and checks each reply is the matching kind, a plain CONTINUE
// without mutations, and that the stream then ends cleanly.
func TestEveryKindContinues(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		req  *extprocv3.ProcessingRequest
		ok   func(*extprocv3.ProcessingResponse) bool
	}{
		{"request headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}},
			func(r *extprocv3.ProcessingResponse) bool { return plain(r.GetRequestHeaders().GetResponse()) }},
		{"request body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("{}"), EndOfStream: true}}},
			func(r *extprocv3.ProcessingResponse) bool { return plain(r.GetRequestBody().GetResponse()) }},
		{"request trailers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestTrailers() != nil }},
		{"response headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}},
			func(r *extprocv3.ProcessingResponse) bool { return plain(r.GetResponseHeaders().GetResponse()) }},
		{"response body chunk", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("data: x\n\n")}}},
			func(r *extprocv3.ProcessingResponse) bool { return plain(r.GetResponseBody().GetResponse()) }},
		{"response body end", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{EndOfStream: true}}},
			func(r *extprocv3.ProcessingResponse) bool { return plain(r.GetResponseBody().GetResponse()) }},
		{"response trailers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseTrailers() != nil }},
	}
	for i, s := range steps {
		if err := stream.Send(s.req); err != nil {
			t.Fatalf("step %d (%s): send: %v", i, s.name, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("step %d (%s): recv: %v", i, s.name, err)
		}
		if !s.ok(resp) {
			t.Errorf("step %d (%s): got %v, want a plain continue of the same kind", i, s.name, resp)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after CloseSend: got %v, want io.EOF (the stream ends with OK)", err)
	}
}

// plain reports whether a common response is CONTINUE with nothing else.
func plain(c *extprocv3.CommonResponse) bool {
	return c != nil && c.GetStatus() == extprocv3.CommonResponse_CONTINUE &&
		c.GetHeaderMutation() == nil && c.GetBodyMutation() == nil
}

// TestUnknownKindEndsStream: a message the nop does not know ends the
// stream without a reply rather than a reply of the wrong kind.
func TestUnknownKindEndsStream(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("got %v, %v; want io.EOF", resp, err)
	}
}

// TestReadyLine runs the command's main path and checks the line the bench
// tool waits for, then that cancelling stops it.
func TestReadyLine(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, pw, io.Discard); pw.Close() }()
	buf := make([]byte, 128)
	n, err := pr.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := string(buf[:n])
	var addr string
	if _, err := fmt.Sscanf(line, "nop ready grpc=%s\n", &addr); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
		t.Errorf("ready line %q: address %q: %v", line, addr, err)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
