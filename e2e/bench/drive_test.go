package main

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fakeServer continues everything, or refuses the request body when
// refuse is set, as tokengate does with a spent budget.
type fakeServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	refuse bool
}

func (f fakeServer) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		var resp *extprocv3.ProcessingResponse
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
			if f.refuse {
				resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
					ImmediateResponse: &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}}}}
			}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

func serveFake(t *testing.T, f fakeServer) []extprocv3.ExternalProcessorClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return []extprocv3.ExternalProcessorClient{extprocv3.NewExternalProcessorClient(conn)}
}

func TestDriveCountBound(t *testing.T) {
	c := serveFake(t, fakeServer{})
	var seq atomic.Int64
	r, err := drive(context.Background(), c, newWorkload(false), bound{requests: 101, concurrency: 4}, &seq)
	if err != nil {
		t.Fatal(err)
	}
	if r.streams != 101 || r.messages != 404 || r.req.n != 101 || r.msg.n != 404 || seq.Load() != 101 {
		t.Errorf("streams %d messages %d, latencies %d/%d, seq %d; want 101 streams of 4 messages",
			r.streams, r.messages, r.req.n, r.msg.n, seq.Load())
	}
	if r.req.quantile(0.5) < r.msg.quantile(0.5) {
		t.Errorf("a request (p50 %v) cannot be faster than one of its messages (p50 %v)", r.req.quantile(0.5), r.msg.quantile(0.5))
	}
}

func TestDriveTimeBound(t *testing.T) {
	c := serveFake(t, fakeServer{})
	var seq atomic.Int64
	start := time.Now()
	r, err := drive(context.Background(), c, newWorkload(true), bound{duration: 200 * time.Millisecond, concurrency: 2}, &seq)
	if err != nil {
		t.Fatal(err)
	}
	// The bound is on a hang (a drive the duration does not stop runs
	// until the test's own timeout), not on the machine's speed: streams
	// in flight at the deadline still finish.
	if took := time.Since(start); took > 30*time.Second || r.streams == 0 || r.messages != r.streams*505 {
		t.Errorf("took %v for %d streams, %d messages", took, r.streams, r.messages)
	}
}

// TestDriveStopsOnRefusal: a 429 means the bench is measuring refusals;
// the run must fail and say so rather than print figures.
func TestDriveStopsOnRefusal(t *testing.T) {
	c := serveFake(t, fakeServer{refuse: true})
	var seq atomic.Int64
	_, err := drive(context.Background(), c, newWorkload(false), bound{requests: 50, concurrency: 2}, &seq)
	if err == nil || !strings.Contains(err.Error(), "immediate response 429") {
		t.Errorf("got %v, want an immediate-response error", err)
	}
}
