package e2e

import (
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
const trOvershootMaxWall = 30 * time.Second

func TestStrictModeNoOvershootWithTrailers(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	gates := evNewBodyGates()
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: overshootConfig(true), FakeClock: accuracyClock, Filter: patientFront,
		Front: func(c *front.Config) { c.OnReply = gates.onReply }})
	res := runAccuracy(t, []string{s.URL}, []string{s.Tokengate.Field("admin")}, "accuracy-trailers", trOvershootMaxWall,
		func(o *load.Options) { o.HTTP = evNewTrailerClient(gates, 30*time.Second) })
	t.Logf("strict, every body in trailers: %s", res.Report(accuracyLimit))
	checkNoOvershoot(t, "strict mode", res)
	checkPressed(t, res, accuracyLimit*9/10)

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
