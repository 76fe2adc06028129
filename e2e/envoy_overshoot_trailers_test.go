package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/e2e/load"
)

// The strict-mode accuracy run of overshoot_test.go, with every client
// speaking HTTP/2 and ending every body in trailers that come after the
// front has the reply to the request headers: the body then reaches
// tokengate without end_of_stream, the way a client would dodge the
// strict reservation if tokengate waited for one. The window must still
// hold within 1 % of the limit.
const (
	trOvershootLimit   int64 = 20000
	trOvershootClients       = 64
	trOvershootClock         = "2026-01-05T10:00:00Z"
	trOvershootSim           = 3 * time.Minute
	trOvershootMaxWall       = 30 * time.Second
	trOvershootMaxReqs       = 50000
)

func TestStrictModeNoOvershootWithTrailers(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	gates := evNewBodyGates()
	cfg := fmt.Sprintf(`store: {backend: memory}
policies:
- name: accuracy
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
`, trOvershootLimit)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: trOvershootClock, Filter: patientFront,
		Front: func(c *front.Config) { c.OnReply = gates.onReply }})
	start, err := time.Parse(time.RFC3339, trOvershootClock)
	if err != nil {
		t.Fatal(err)
	}
	res, err := load.Run(context.Background(), load.Options{
		URLs:        []string{s.URL},
		Clients:     trOvershootClients,
		Key:         "accuracy-trailers",
		Advance:     load.ClockAdvancer(s.Tokengate.Field("admin")),
		Start:       start,
		SimDuration: trOvershootSim,
		MaxRequests: trOvershootMaxReqs,
		MaxWall:     trOvershootMaxWall,
		Seed:        1,
		HTTP:        evNewTrailerClient(gates, 30*time.Second),
	})
	t.Log(res.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed > 0 || res.Cancelled > 0 {
		t.Fatalf("%d requests failed, %d were cut: the records are not the whole account; first failure %+v", res.Failed, res.Cancelled, res.Failures)
	}
	if res.Stopped != "" {
		t.Logf("the run stopped after %d of %d rounds: %s", res.Ticks, res.Rounds, res.Stopped)
	}
	t.Logf("strict, every body in trailers: %s", res.Report(trOvershootLimit))
	if most := trOvershootLimit * 101 / 100; res.Worst.Tokens > most {
		t.Errorf("strict mode let %d tokens through in the 60 s from %v: more than limit × 1.01 = %d",
			res.Worst.Tokens, res.Worst.From.Format(time.TimeOnly), most)
	}
	if res.RateLimited == 0 || res.Worst.Tokens < trOvershootLimit*9/10 || res.AdmittedTokens < 2*trOvershootLimit {
		t.Errorf("the limit was not pressed: %d refused, worst window %d, %d tokens admitted in all",
			res.RateLimited, res.Worst.Tokens, res.AdmittedTokens)
	}

	// The run proves something only if the bodies went as meant: over
	// HTTP/2, ended in trailers, sent to tokengate without end_of_stream.
	recs := s.Front.Completed()
	bodies, eos := 0, 0
	for _, r := range recs {
		// A request refused at its headers is answered before the front
		// reads its body, and so its trailers: only those that reached
		// the body phase must show them.
		refusedEarly := r.Immediate && r.ImmediatePhase == "request_headers"
		if r.Proto != "HTTP/2.0" || (!r.RequestTrailers && !refusedEarly) {
			t.Fatalf("record %+v: want HTTP/2 with trailers", r)
		}
		for _, b := range r.Bodies {
			if b.Phase == "request_body" {
				bodies++
				if b.EndOfStream {
					eos++
				}
			}
		}
	}
	if bodies == 0 || eos > 0 {
		t.Errorf("%d request bodies sent to tokengate, %d with end_of_stream: want them all without", bodies, eos)
	}
	t.Logf("%d requests over HTTP/2 with trailers, %d request bodies without end_of_stream", len(recs), bodies)
}
