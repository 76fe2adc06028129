package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// TestFirstStreamAfterReady sends a streamed request the moment tokengate
// says it is ready, and checks its request_body reply came well inside
// Envoy's default 200 ms message_timeout (SPEC §2, §9).
// tokengate loads its vocabularies before it says ready; it once loaded
// them in the background, and the first stream after start then waited
// for the load inside its reply.
//
// The reply's duration is wall-clock time, which a busy machine can
// stretch past any bound for one request. A tokengate that loads its
// vocabularies inside the reply is slow on every start, though, so the
// check is made on fresh starts until one is fast: it fails only when
// every start was slow.
func TestFirstStreamAfterReady(t *testing.T) {
	needBinaries(t)
	const (
		wellInside = 100 * time.Millisecond
		starts     = 3
	)
	var took []time.Duration
	for range starts {
		d := firstStreamReply(t)
		took = append(took, d)
		t.Logf("start %d: the first request_body reply after ready took %v", len(took), d.Round(time.Millisecond))
		if d <= wellInside {
			return
		}
	}
	t.Errorf("the first request_body reply after ready took %v on %d fresh starts, want one under %v: tokengate said ready before loading its vocabularies",
		took, starts, wellInside)
}

// firstStreamReply starts a stack, sends a streamed request through it at
// once, and returns how long tokengate took on its request_body message
// (its own decision histogram).
func firstStreamReply(t *testing.T) time.Duration {
	t.Helper()
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: streamConfig, FakeClock: labClock})
	r := &rig{Stack: s, t: t}
	resp := r.send("first-key", "/v1/chat/completions", chatBody(t, true), "x-mock-completion-tokens", "3")
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the first streamed request got %d, want 200", resp.StatusCode)
	}
	r.record() // fails on a reply that missed the front's message_timeout
	sum := r.metric("tokengate_decision_duration_seconds_sum", "phase", "request_body")
	n := r.metric("tokengate_decision_duration_seconds_count", "phase", "request_body")
	if n != 1 {
		t.Fatalf("%v request_body replies timed, want 1", n)
	}
	return time.Duration(sum * float64(time.Second))
}
