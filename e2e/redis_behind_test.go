package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// settleLossWindow is how long before a kill -9 an answer's charge may
// still be on its way to Redis, settled behind the response. A settle is
// queued as its answer goes and sent in the next batch, one round trip
// later; the window allows for a batch ahead of it taking a loaded
// machine's longest round trip (the 500 ms timeouts these tests set) and
// its own. README, "The Redis store", states it.
const settleLossWindow = 1 * time.Second

// Settles behind the response are all made across a graceful shutdown:
// under load, SIGTERM drains the streams, then the queue, before the
// process exits, and Redis holds every answer's charge and no hold.
func TestSettleBehindDrainedOnShutdown(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	rds := harness.StartRedis(t)
	cfg := fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], clock: server, dial_timeout: 500ms, read_timeout: 500ms, write_timeout: 500ms, on_error: fail_closed}
policies:
- name: drain
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  token_quota: 1000000000
  token_quota_period: monthly
`, rds.Addr())
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg})
	body := faultChatBody(t, "Count every token of the drained replica.", 30, false)
	hdr := []string{"x-mock-completion-tokens", "30"}
	first := faultSend(context.Background(), directClient, s.URL, "drain-key", body, hdr...)
	if first.status != http.StatusOK || first.total <= 0 {
		t.Fatalf("first request: %d %s", first.status, first.err)
	}
	cost := first.total

	ld := startFaultLoad(t, 8, s.URL, "drain-key", body, hdr...)
	ld.waitAnswers(t, "load before the shutdown", http.StatusOK, 200, 20*time.Second)
	batches := faultMetric(t, s.Tokengate.Field("admin"), "tokengate_settle_batch_size_count")
	if code := s.StopTokengate(); code != 0 {
		t.Fatalf("tokengate exited %d on SIGTERM", code)
	}
	replies := ld.stop()
	calls, _ := s.MockCalls()
	answered := int64(1)
	for _, r := range replies {
		if r.status == http.StatusOK {
			answered++
		}
	}
	red := readRedis(t, rds.Addr())
	settled := red.quota / cost
	t.Logf("graceful shutdown under load: %d answered, %d charged in redis (%d tokens), %d upstream calls, %v settle batches sent before it, %d holds left",
		answered, settled, red.quota, calls, batches, len(red.holds))
	if red.quota%cost != 0 || settled < answered || settled > int64(calls) {
		t.Errorf("redis charged %d tokens (%d requests of %d); want every one of the %d answers, and at most the %d upstream calls",
			red.quota, settled, cost, answered, calls)
	}
	if red.window != red.quota {
		t.Errorf("window %d ≠ quota %d", red.window, red.quota)
	}
	if len(red.holds) != 0 {
		t.Errorf("holds left after a drained shutdown: %v", red.holds)
	}
	if batches == 0 {
		t.Error("no settle went behind a response: the test did not test it")
	}
}
