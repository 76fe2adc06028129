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
func TestFirstStreamAfterReady(t *testing.T) {
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: streamConfig, FakeClock: labClock})
	r := &rig{Stack: s, t: t}
	resp := r.send("first-key", "/v1/chat/completions", chatBody(t, true), "x-mock-completion-tokens", "3")
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the first streamed request got %d, want 200", resp.StatusCode)
	}
	r.record() // fails on a reply that missed the front's message_timeout
	const wellInside = 100 * time.Millisecond
	sum := r.metric("tokengate_decision_duration_seconds_sum", "phase", "request_body")
	n := r.metric("tokengate_decision_duration_seconds_count", "phase", "request_body")
	if n != 1 {
		t.Fatalf("%v request_body replies timed, want 1", n)
	}
	if took := time.Duration(sum * float64(time.Second)); took > wellInside {
		t.Errorf("the first request_body reply after ready took %v, want under %v: tokengate said ready before loading its vocabularies",
			took.Round(time.Millisecond), wellInside)
	}
}
