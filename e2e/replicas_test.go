package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/e2e/load"
)

// The replicated accuracy run: the load of TestStrictModeNoOvershoot (64
// clients, about 47,000 tokens asked of a 20,000 budget every fake second),
// spread round-robin over three tokengate processes that share one
// redis-server. Charges are placed on each replica's fake clock
// (store.redis.clock: client), and the harness moves every replica's clock
// together between rounds.
const (
	replicasN = 3
	// Bound of one run: three processes and Redis on 2 cores take about
	// twice the single-process memory run's time.
	replicasMaxWall = 40 * time.Second
	// apimReplicaFactor bounds the APIM total across replicas against one
	// process's on the same load; see TestReplicasShareOneBudget.
	apimReplicaFactor = 1.5
	// replicasRedisTimeout is the store's dial, read and write timeout:
	// 64 clients on three replicas and Redis on two loaded cores can hold
	// a healthy Redis's reply past tokengate's default 50 ms (and past
	// 500 ms: seen), or a write past its 50 ms deadline ("redis reserve:
	// i/o timeout": seen), and a replica that then falls back (on_error:
	// fail_open) admits what the shared budget would refuse, so the
	// strict bound fails for the machine's sake. Under the fronts'
	// loadMessageTimeout.
	replicasRedisTimeout = loadMessageTimeout / 2
)

func replicasConfig(redisAddr string, strict bool) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], clock: client, dial_timeout: %v, read_timeout: %v, write_timeout: %v}
`, redisAddr, replicasRedisTimeout, replicasRedisTimeout, replicasRedisTimeout) + accuracyPolicy(strict)
}

// TestReplicasShareOneBudget is issue 6's proof that the Redis store makes
// one budget of several replicas.
//
// Strict mode: the overshoot bound of one process (limit × 1.01 in any
// 60 s window) must hold for three. With per-replica counters each
// replica would admit its own limit: three times it.
//
// APIM mode (refuse once used ≥ limit, charge when the response is back)
// overshoots by design, so its figure is compared with one process's on
// the same load, same seed, same store. One process admits a whole round
// (~47,000 tokens, 64 requests decided at once on used < limit) and then
// nothing until that round leaves the window: its worst window is about
// one round. Replicas sharing the counter see the same used and admit the
// same rounds. Replicas counting apart would each admit their third of a
// round until their own count passes the limit, two rounds or more each:
// at least twice one process's figure. apimReplicaFactor (1.5) sits
// between the two, above the round-to-round variation of the load.
//
// Both bounds were tried against replicas that count apart (three
// memory-store processes, same load): strict mode's worst window was
// 59,928 tokens (3.0 × the limit) and APIM's 104,738 (2.09 × one
// process's 50,172), so either assertion fails when the budget is not
// shared.
func TestReplicasShareOneBudget(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	rds := harness.StartRedis(t)

	var strict, apim, single load.Result
	ok := t.Run("strict", func(t *testing.T) {
		strict = runReplicated(t, rds.Addr(), replicasN, true, "replicas-strict")
		t.Logf("strict, %d replicas on one redis: %s", replicasN, strict.Report(accuracyLimit))
		checkNoOvershoot(t, fmt.Sprintf("strict mode across %d replicas", replicasN), strict)
		checkPressed(t, strict, accuracyLimit*9/10)
	})
	ok = t.Run("apim", func(t *testing.T) {
		apim = runReplicated(t, rds.Addr(), replicasN, false, "replicas-apim")
		t.Logf("apim, %d replicas on one redis: %s", replicasN, apim.Report(accuracyLimit))
	}) && ok
	ok = t.Run("apim_single", func(t *testing.T) {
		single = runReplicated(t, rds.Addr(), 1, false, "single-apim")
		t.Logf("apim, 1 process on redis: %s", single.Report(accuracyLimit))
	}) && ok
	if !ok {
		t.Fatal("a run failed; no comparison")
	}
	ratio := float64(apim.Worst.Tokens) / float64(single.Worst.Tokens)
	t.Logf("apim: worst window with %d replicas %d tokens, with 1 process %d: × %.2f (bound × %.1f; per-replica counters would give ≥ × 2)",
		replicasN, apim.Worst.Tokens, single.Worst.Tokens, ratio, apimReplicaFactor)
	if single.Worst.Tokens <= accuracyLimit {
		t.Errorf("one APIM process's worst window %d does not exceed the limit %d: the load does not press it, the comparison proves nothing",
			single.Worst.Tokens, accuracyLimit)
	}
	if ratio > apimReplicaFactor {
		t.Errorf("APIM mode across %d replicas admitted %d tokens in a window, × %.2f one process's %d (bound × %.1f): the replicas do not share the budget",
			replicasN, apim.Worst.Tokens, ratio, single.Worst.Tokens, apimReplicaFactor)
	}
}

// runReplicated starts n replicas on the shared Redis and drives the
// accuracy load through all of them; every request must be admitted or
// refused, none fail or be cut, and every replica must have decided its
// share.
func runReplicated(t *testing.T, redisAddr string, n int, strict bool, key string) load.Result {
	t.Helper()
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: n, ConfigYAML: replicasConfig(redisAddr, strict), FakeClock: accuracyClock, Filter: patientFront})
	warmUp(t, r)
	client := loadClient()
	defer client.CloseIdleConnections()
	res := runAccuracy(t, r.URLs, r.Admins(), key, replicasMaxWall, func(o *load.Options) { o.HTTP = client })
	// Whether the shared store answered every call in time: a replica
	// that took Redis for down decided per on_error (fail_open: admitted
	// unshared), which the figures above then include.
	for i, p := range r.Tokengates {
		t.Logf("replica %d: %v store errors (%v timeouts), %d \"redis store unavailable\" log lines",
			i, r.Metric(i, "tokengate_store_errors_total"), r.Metric(i, "tokengate_store_errors_total", "kind", "timeout"),
			len(unavailableLines(p.Stderr())))
	}
	// Round-robin gives each replica Requests/n; the last round's
	// decisions may still be being counted when the load returns.
	for i := range n {
		decided := r.Metric(i, "tokengate_requests_total", "policy", "accuracy")
		if least := float64(res.Requests/n - accuracyClients); decided < least {
			t.Errorf("replica %d decided %v requests, want ≥ %v of the %d sent: the load was not spread", i, decided, least, res.Requests)
		}
	}
	return res
}

// warmUp sends one estimated chat through every replica, on a key of its
// own, before the load: a replica loads its tokenizer vocabularies after
// its ready line (see TestFirstStreamAfterReady), and three loading at once
// under 64 clients would turn the load's first round into 504s, a bug
// already on record rather than what this test measures.
func warmUp(t *testing.T, r *harness.Replicas) {
	t.Helper()
	for i, u := range r.URLs {
		resp, body := postChat(t, u, fmt.Sprintf("warm-up-%d", i), 5)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("warm-up through replica %d: %d %s", i, resp.StatusCode, body)
		}
	}
}

// loadClient pools one connection per load client, and is the test's to
// close, so no keep-alive goroutine outlives it.
func loadClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = accuracyClients
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
