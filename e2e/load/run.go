package load

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Run drives the load: round k sends one request per client, all at
// once, at fake time Start + k·Tick, and the clock is advanced by Tick only
// after every request of the round has been answered. It returns what was
// seen, also when it stops early; the error says why a run could not go on
// (bad options, the clock not moving, ctx ended).
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.fill(); err != nil {
		return Result{}, err
	}
	r := &runner{o: &o, res: Result{Rounds: int(o.SimDuration / o.Tick), Now: o.Start}}
	r.clients = make([]*client, o.Clients)
	for i := range r.clients {
		r.clients[i] = &client{id: i, rng: rand.New(rand.NewPCG(o.Seed, uint64(i)))}
	}
	began := time.Now()
	err := r.drive(ctx, began.Add(o.MaxWall))
	r.res.Wall = time.Since(began)
	r.res.Worst = WorstWindow(r.res.Records, WindowSpan)
	return r.res, err
}

type runner struct {
	o       *Options
	clients []*client

	mu   sync.Mutex // guards res while a round runs
	res  Result
	sent int // requests sent, for the round-robin
}

// drive runs the rounds until the last, a bound, or an error. The bounds
// are checked between rounds, never by cutting one: a request cut in
// flight may have been charged without the harness seeing its tokens,
// and the records would no longer be the whole account. A round is
// itself bounded by the client's timeout.
func (r *runner) drive(ctx context.Context, deadline time.Time) error {
	for k := range r.res.Rounds {
		switch {
		case ctx.Err() != nil:
			r.res.Stopped = "context ended: " + ctx.Err().Error()
			return ctx.Err()
		case !time.Now().Before(deadline):
			r.res.Stopped = fmt.Sprintf("wall-time bound %v reached", r.o.MaxWall)
			return nil
		case r.res.Requests+r.o.Clients > r.o.MaxRequests:
			r.res.Stopped = fmt.Sprintf("request bound %d reached", r.o.MaxRequests)
			return nil
		}
		if k > 0 {
			if err := r.o.Advance(r.o.Tick); err != nil {
				r.res.Stopped = fmt.Sprintf("advancing the clock before tick %d failed", k)
				return fmt.Errorf("load: advance the fake clock to tick %d: %w", k, err)
			}
			r.res.Now = r.res.Now.Add(r.o.Tick)
		}
		r.round(ctx, k)
		r.res.Ticks = k + 1
	}
	return nil
}

// round sends one request per client and waits for every answer, so the
// clock is never moved under a request.
func (r *runner) round(ctx context.Context, tick int) {
	var wg sync.WaitGroup
	for _, c := range r.clients {
		url := r.o.URLs[r.sent%len(r.o.URLs)]
		r.sent++
		r.res.Requests++
		wg.Go(func() { r.send(ctx, c, url, tick) })
	}
	wg.Wait()
}

// send makes one request and files its outcome.
func (r *runner) send(ctx context.Context, c *client, url string, tick int) {
	prompt := promptText(c.rng, between(c.rng, r.o.PromptWords))
	completion := between(c.rng, r.o.CompletionTokens)
	req, err := r.o.newRequest(ctx, url, prompt, completion)
	if err != nil {
		r.fail(ctx, Failure{Client: c.id, Tick: tick, Received: time.Now(), Err: err.Error()})
		return
	}
	resp, err := r.o.HTTP.Do(req)
	if err != nil {
		r.fail(ctx, Failure{Client: c.id, Tick: tick, Received: time.Now(), Err: err.Error()})
		return
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		p, cpl, total, err := readUsage(resp)
		received := time.Now()
		if err != nil {
			r.fail(ctx, Failure{Client: c.id, Tick: tick, Received: received, Status: resp.StatusCode, Err: err.Error()})
			return
		}
		rec := Record{Client: c.id, Tick: tick, At: r.res.Now, Received: received, Prompt: p, Completion: cpl, Total: total}
		r.mu.Lock()
		r.res.Admitted++
		r.res.AdmittedTokens += total
		r.res.Records = append(r.res.Records, rec)
		r.mu.Unlock()
		if r.o.OnRecord != nil {
			r.o.OnRecord(rec)
		}
	case http.StatusTooManyRequests, http.StatusForbidden:
		r.mu.Lock()
		if resp.StatusCode == http.StatusTooManyRequests {
			r.res.RateLimited++
		} else {
			r.res.QuotaExceeded++
		}
		r.mu.Unlock()
	default:
		r.fail(ctx, Failure{Client: c.id, Tick: tick, Received: time.Now(), Status: resp.StatusCode,
			Err: fmt.Sprintf("unexpected status %s", resp.Status)})
	}
}

// fail files an outcome that is neither an admission nor a refusal. A
// request cut by the caller's context (no answer, or a 200 whose body was
// cut) is only counted; any other status is the gateway's doing and is
// kept.
func (r *runner) fail(ctx context.Context, f Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil && (f.Status == 0 || f.Status == http.StatusOK) {
		r.res.Cancelled++
		return
	}
	r.res.Failed++
	if len(r.res.Failures) < maxFailures {
		r.res.Failures = append(r.res.Failures, f)
	}
}
