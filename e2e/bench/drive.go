package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// bound says when a run stops: after a number of streams when requests is
// set, else once duration has passed (streams in flight then finish).
type bound struct {
	duration    time.Duration
	requests    int64
	concurrency int
}

// stretch is what one server did in one measured run of streams.
type stretch struct {
	streams  int64
	messages int64
	wall     time.Duration
	cpu      time.Duration // the server process's CPU time (user + system); < 0 when unknown
	storeCPU time.Duration // its store's (redis-server's), 0 when it has none
	req      *hist         // per stream: opening it to the last reply
	msg      *hist         // per message: send to its reply
}

func newStretch() *stretch { return &stretch{req: newHist(), msg: newHist()} }

// add folds another stretch into r: rounds of one server add up.
func (r *stretch) add(o *stretch) {
	r.streams += o.streams
	r.messages += o.messages
	r.wall += o.wall
	if r.cpu < 0 || o.cpu < 0 {
		r.cpu = -1 // unknown in one stretch: unknown in the sum
	} else {
		r.cpu += o.cpu
	}
	r.storeCPU += o.storeCPU
	r.req.merge(o.req)
	r.msg.merge(o.msg)
}

// drive plays streams against clients (one per connection, used in turn)
// from b.concurrency goroutines, each waiting for a stream to end before
// it opens the next, as an Envoy worker's requests do not wait on one
// another but each request's messages do. The first failure stops the run:
// on loopback against a server that only says "continue" there should be
// none, and a figure made of errors is not a figure.
func drive(ctx context.Context, clients []extprocv3.ExternalProcessorClient, w *workload, b bound, seq *atomic.Int64) (*stretch, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var deadline time.Time
	if b.requests <= 0 {
		deadline = time.Now().Add(b.duration)
	}
	var started atomic.Int64
	out := newStretch()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for g := range b.concurrency {
		wg.Go(func() {
			local := newStretch()
			c := clients[g%len(clients)]
			buf := make([]*extprocv3.ProcessingRequest, 0, w.perStream())
			for ctx.Err() == nil {
				if b.requests > 0 && started.Add(1) > b.requests {
					break
				}
				if b.requests <= 0 && !time.Now().Before(deadline) {
					break
				}
				msgs := w.messages(int(seq.Add(1)), buf)
				if err := oneStream(ctx, c, msgs, local); err != nil {
					cancel(err)
					break
				}
				local.streams++
				local.messages += int64(len(msgs))
			}
			mu.Lock()
			out.add(local)
			mu.Unlock()
		})
	}
	wg.Wait()
	out.wall = time.Since(start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return out, err
	}
	return out, ctx.Err()
}

// oneStream plays one HTTP request: each message is sent once the reply
// to the previous one is in, as Envoy does. The request's latency runs
// from opening the stream to the last reply, the time the request spends
// waiting on its processor; closing the stream and reading its status
// come after, off the request's path but still on the worker's.
func oneStream(ctx context.Context, c extprocv3.ExternalProcessorClient, msgs []*extprocv3.ProcessingRequest, r *stretch) error {
	t0 := time.Now()
	stream, err := c.Process(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	for i, m := range msgs {
		t := time.Now()
		if err := stream.Send(m); err != nil {
			return fmt.Errorf("message %d: send: %w", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("message %d: recv: %w", i, err)
		}
		r.msg.record(time.Since(t))
		if err := checkReply(m, resp); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	r.req.record(time.Since(t0))
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if resp, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the last message: got %v, %v; want the stream to end", resp, err)
	}
	return nil
}

// checkReply makes sure the server answered req with the reply kind Envoy
// waits for and let the request go on: an immediate response (a 429, a
// 401) would mean the bench measured refusals, not counted requests.
func checkReply(req *extprocv3.ProcessingRequest, resp *extprocv3.ProcessingResponse) error {
	if ir := resp.GetImmediateResponse(); ir != nil {
		return fmt.Errorf("immediate response %d %q: the server refused the request", ir.GetStatus().GetCode(), ir.GetBody())
	}
	var common *extprocv3.CommonResponse
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		common = resp.GetRequestHeaders().GetResponse()
		if resp.GetRequestHeaders() == nil {
			return fmt.Errorf("request headers answered with %T", resp.Response)
		}
	case *extprocv3.ProcessingRequest_RequestBody:
		common = resp.GetRequestBody().GetResponse()
		if resp.GetRequestBody() == nil {
			return fmt.Errorf("request body answered with %T", resp.Response)
		}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		common = resp.GetResponseHeaders().GetResponse()
		if resp.GetResponseHeaders() == nil {
			return fmt.Errorf("response headers answered with %T", resp.Response)
		}
	case *extprocv3.ProcessingRequest_ResponseBody:
		common = resp.GetResponseBody().GetResponse()
		if resp.GetResponseBody() == nil {
			return fmt.Errorf("response body answered with %T", resp.Response)
		}
	}
	if s := common.GetStatus(); s != extprocv3.CommonResponse_CONTINUE && s != extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		return fmt.Errorf("status %v, want CONTINUE", s)
	}
	return nil
}
