package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// Redis killed mid-load and restarted, under each store.redis.on_error
// (SPEC §7, and §10: "store unavailable: per on_error; never a hang past
// Envoy's timeout").
const (
	faultReplicas = 2
	// faultRetry is retry_interval: how often a replica tries Redis again
	// while it is down. Short, so recovery is quick to see.
	faultRetry = 100 * time.Millisecond
	// faultRedisTimeout is the store's dial, read and write timeout.
	// tokengate's defaults (100 ms, 50 ms, 50 ms) are for a quiet
	// network; on a loaded two-core machine a healthy loopback Redis can
	// miss 50 ms (a write's deadline too: it runs while the writing
	// goroutine waits for a core), and the replica would then fall back
	// (fail_closed: 503) in a phase where Redis is up. A call to a frozen Redis waits this long, twice at
	// most in one message (the call, then the recovery probe), well
	// inside the message timeout.
	faultRedisTimeout = 250 * time.Millisecond
	// faultMaxLatency is envoy/envoy.yaml's message_timeout: an ext_proc
	// reply later than this is Envoy's 504, so every answer must come
	// sooner, whatever the store does.
	faultMaxLatency = time.Second
	// faultHangLatency bounds a whole answer as the client times it. The
	// front times each ext_proc message against faultMaxLatency and
	// answers 504 past it, which the status checks catch; a request is
	// up to four messages (request headers and body, response headers
	// and body) plus the upstream's work, and a loaded machine stretches
	// all of it. An answer slower than four message timeouts is a hang,
	// not a slow machine; slower than one is only a figure for the log.
	faultHangLatency = 4 * faultMaxLatency
	// faultStateTimeout bounds the fallback gauge's turns: at the first
	// failed call after the kill (the load makes one at once), and after
	// the restart within retry_interval plus go-redis's redial pause (it
	// stops dialing after pool-size failures and retries once a second).
	faultStateTimeout = 5 * time.Second
	// faultPhaseAnswers is how many load answers each phase (before,
	// during, after the outage) must see.
	faultPhaseAnswers = 40
	faultPhaseTimeout = 10 * time.Second
	// faultDownCalls is how many calls to the dead Redis every replica
	// must have seen fail before it is restarted: the outage lasts that
	// many retry intervals (about 2.5 s), long enough for go-redis to give
	// up dialing after a pool's worth of failures (20 on 2 cores) and fall
	// back to its once-a-second redial, the slowest path back.
	faultDownCalls = 25
	// faultGoroutineMargin is how many goroutines more than before the
	// outage a replica may run once idle again: scheduling noise, not one
	// per failed call or per outage.
	faultGoroutineMargin = 2
	faultIdleTimeout     = 10 * time.Second

	// The small key's budget (an override), spent request by request to
	// show whose counter limits it.
	smallKey        = "small-key"
	smallLimit      = 2000
	smallCompletion = 400
	smallMaxSpend   = 20 // requests; about 5 reach the limit
)

func faultConfig(redisAddr, onError string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: %s, retry_interval: %v}
policies:
- name: faults
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  overrides:
  - {key_sha256: %q, tokens_per_minute: %d}
`, redisAddr, faultRedisTimeout, faultRedisTimeout, faultRedisTimeout, onError, faultRetry, keySHA256(smallKey), smallLimit)
}

// TestRedisFaults runs one subtest per on_error mode: two real tokengates
// on one real redis-server, a steady load through both, Redis killed with
// SIGKILL mid-load and restarted empty on the same port, the tokengates
// never restarted. The test process itself must end with no goroutine it
// did not start with (goleak): fronts, clients and health probes closed.
func TestRedisFaults(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs last: after every process is killed
	// and every front closed by the subtests' cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	for _, mode := range []string{"fail_open", "fail_closed", "local"} {
		t.Run(mode, func(t *testing.T) { runRedisFault(t, mode) })
	}
}

func runRedisFault(t *testing.T, mode string) {
	rds := harness.StartRedis(t)
	var fronts frontTally
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: faultReplicas, ConfigYAML: faultConfig(rds.Addr(), mode), OnRequest: fronts.add})
	health := dialHealth(t, r)
	for i, u := range r.URLs {
		if resp, body := postChat(t, u, fmt.Sprintf("warm-up-%d", i), 5); resp.StatusCode != http.StatusOK {
			t.Fatalf("warm-up through replica %d: %d %s", i, resp.StatusCode, body)
		}
	}
	r.WaitMetric("tokengate_store_fallback", 0, faultStateTimeout)
	wantHealth(t, "before the outage", r, health, true)
	base := goroutines(r)

	ld := startSteady(t, r.URLs, "steady")
	before := ld.waitSince(t, "load before the outage", time.Time{}, faultPhaseAnswers, faultPhaseTimeout)
	wantAll(t, "load before the outage", before, http.StatusOK, "")

	killAt := rds.Kill()
	noticed := r.WaitMetric("tokengate_store_fallback", 1, faultStateTimeout)
	downAt := time.Now()
	checkWhileDown(t, mode, r, health)
	failed := waitRedisFailures(t, r, faultDownCalls)
	down := ld.waitSince(t, "load while redis is down", downAt, faultPhaseAnswers, faultPhaseTimeout)

	restartAt := rds.Restart()
	recovered := r.WaitMetric("tokengate_store_fallback", 0, faultStateTimeout)
	upAt := time.Now()
	after := ld.waitSince(t, "load after the restart", upAt, faultPhaseAnswers, faultPhaseTimeout)
	whileDown := endedBefore(down, restartAt)
	if mode == "fail_closed" {
		wantAll(t, "load while redis was down", whileDown, http.StatusServiceUnavailable, "limiter_unavailable")
	} else {
		wantAll(t, "load while redis was down", whileDown, http.StatusOK, "")
	}
	wantAll(t, "load after the restart", after, http.StatusOK, "")
	wantHealth(t, "after the restart", r, health, true)
	if mode == "local" {
		checkSharedAfterRestart(t, r)
	}
	for i, p := range r.Tokengates {
		if p.Exited() {
			t.Errorf("replica %d exited during the outage", i)
		}
	}

	all := ld.stop()
	checkEveryAnswer(t, mode, all, killAt, upAt)
	fronts.check(t)
	storeErrs := make([]float64, faultReplicas)
	for i := range storeErrs {
		storeErrs[i] = r.Metric(i, "tokengate_store_errors_total")
	}
	idle := waitGoroutines(t, r, base, faultGoroutineMargin, faultIdleTimeout)

	slowest, p99 := latencies(all)
	t.Logf("%s: %d replicas, %d load requests: %v; slowest %v, p99 %v (bound %v)",
		mode, faultReplicas, len(all), tally(all), slowest.Round(time.Millisecond), p99.Round(time.Millisecond), faultMaxLatency)
	t.Logf("%s: fallback gauge 1 on every replica %v after the kill; redis down %v, failed calls to it by replica %v; answers while down: %v; gauge 0 %v after the restart; then: %v",
		mode, noticed.Round(time.Millisecond), restartAt.Sub(killAt).Round(time.Millisecond), failed, tally(whileDown),
		recovered.Round(time.Millisecond), tally(after))
	t.Logf("%s: store errors by replica %v; goroutines before the outage %v, idle after it %v (margin %d); front: %s",
		mode, storeErrs, base, idle, faultGoroutineMargin, fronts.String())
}

// checkWhileDown checks, once every replica has noticed the outage, what a
// request and a health check get per the mode: fail_closed refuses with
// 503 and says NOT_SERVING so Envoy routes around the replica; the others
// admit and stay SERVING; local limits each replica on its own.
func checkWhileDown(t *testing.T, mode string, r *harness.Replicas, health *healthProbe) {
	t.Helper()
	for i, u := range r.URLs {
		step := fmt.Sprintf("replica %d while redis is down", i)
		resp, body := postChat(t, u, "direct", 5)
		if mode == "fail_closed" {
			wantJSONError(t, step, resp, body, http.StatusServiceUnavailable, "limiter_unavailable")
		} else if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", step, resp.StatusCode, body)
		}
	}
	wantHealth(t, "while redis is down", r, health, mode != "fail_closed")
	if mode == "local" {
		checkLocalWhileDown(t, r)
	}
}

// endedBefore keeps the outcomes answered before at.
func endedBefore(outs []outcome, at time.Time) []outcome {
	var kept []outcome
	for _, o := range outs {
		if o.end.Before(at) {
			kept = append(kept, o)
		}
	}
	return kept
}

// redisFailures is how many calls replica i made to Redis that failed:
// store errors of every kind but "unavailable", which fail_closed counts
// per refused request without calling Redis.
func redisFailures(r *harness.Replicas, i int) float64 {
	return r.Metric(i, "tokengate_store_errors_total") - r.Metric(i, "tokengate_store_errors_total", "kind", "unavailable")
}

// waitRedisFailures waits until every replica has seen n calls to Redis
// fail, and returns the counts: the outage is measured in the replicas'
// own retries, not in a sleep.
func waitRedisFailures(t *testing.T, r *harness.Replicas, n float64) []float64 {
	t.Helper()
	got := make([]float64, len(r.Tokengates))
	_, err := harness.PollAll(len(got), faultPhaseTimeout, func(i int) (bool, string) {
		got[i] = redisFailures(r, i)
		return got[i] >= n, ""
	})
	if err != nil {
		t.Fatalf("failed calls to redis by replica %v, want %v each: %v (retry_interval %v, the load keeps calling)", got, n, err, faultRetry)
	}
	return got
}

// checkEveryAnswer holds the whole load to the mode: no transport error,
// no hang (an answer past faultHangLatency; the front's 504 for a message
// past the message timeout is a wrong status), and only the statuses the
// mode allows — fail_closed's 503 only for requests that overlapped the
// outage (answered after the kill, sent before the recovery was seen).
// Answers slower than one message timeout are counted in the log.
func checkEveryAnswer(t *testing.T, mode string, all []outcome, killAt, upAt time.Time) {
	t.Helper()
	var slow, hung, wrong []outcome
	for _, o := range all {
		if o.latency() >= faultMaxLatency {
			slow = append(slow, o)
		}
		if o.latency() >= faultHangLatency {
			hung = append(hung, o)
		}
		ok := o.status == http.StatusOK && o.code == ""
		if mode == "fail_closed" && o.status == http.StatusServiceUnavailable && o.code == "limiter_unavailable" {
			ok = o.end.After(killAt) && o.start.Before(upAt)
		}
		if !ok {
			wrong = append(wrong, o)
		}
	}
	if len(slow) > 0 {
		t.Logf("%s: %d of %d answers took %v (one message timeout) or more, whole request as the client timed it; first: %v", mode, len(slow), len(all), faultMaxLatency, slow[0])
	}
	if len(hung) > 0 {
		t.Errorf("%d of %d answers took %v or more (four message timeouts): a hang; first: %v", len(hung), len(all), faultHangLatency, hung[0])
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d answers are not what %s allows (%v); first: %v", len(wrong), len(all), mode, tally(wrong), wrong[0])
	}
}

// checkLocalWhileDown shows on_error: local limits per replica while Redis
// is away: replica 0 refuses the small key once it has spent its limit
// there, and replica 1, which has not seen it, still admits it.
func checkLocalWhileDown(t *testing.T, r *harness.Replicas) {
	t.Helper()
	spent := spendUntilRefused(t, "local, redis down, replica 0", r.URLs[0])
	resp, body := postChat(t, r.URLs[1], smallKey, smallCompletion)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("local, redis down: replica 1 answered the small key %d %s after replica 0 spent %d: want 200, budgets are per replica",
			resp.StatusCode, body, spent)
	}
	resp, body = postChat(t, r.URLs[0], smallKey, smallCompletion)
	wantJSONError(t, "local, redis down, replica 0 again", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
}

// checkSharedAfterRestart shows the replicas back on one budget: the
// restarted Redis is empty, replica 0 spends the small key's limit there,
// and replica 1 (whose local count holds one small request) refuses it.
func checkSharedAfterRestart(t *testing.T, r *harness.Replicas) {
	t.Helper()
	spent := spendUntilRefused(t, "local, redis back, replica 0", r.URLs[0])
	// Replica 0's last charges go to Redis behind their answers, a round
	// trip or so later (README, "The Redis store"): the shared budget is
	// read once they are there.
	waitSettled(t, r.Admins()[0])
	resp, body := postChat(t, r.URLs[1], smallKey, smallCompletion)
	wantJSONError(t, fmt.Sprintf("local, redis back: replica 1 after replica 0 spent %d", spent), resp, body,
		http.StatusTooManyRequests, "rate_limit_exceeded")
}

// spendUntilRefused sends the small key through base until it is refused
// and returns the tokens admitted. With the headers check (refuse once
// used ≥ limit) the refusal comes when the spend first reaches the limit,
// one request's worth at most past it.
func spendUntilRefused(t *testing.T, step, base string) int {
	t.Helper()
	spent, last := 0, 0
	for n := range smallMaxSpend {
		resp, body := postChat(t, base, smallKey, smallCompletion)
		switch resp.StatusCode {
		case http.StatusOK:
			last = usageTotal(t, fmt.Sprintf("%s: request %d", step, n), body)
			spent += last
			continue
		case http.StatusTooManyRequests:
			if spent < smallLimit || spent-last >= smallLimit {
				t.Errorf("%s: refused after %d tokens (last request %d): want the first refusal once the limit %d is reached",
					step, spent, last, smallLimit)
			}
			return spent
		}
		t.Fatalf("%s: request %d: %d %s", step, n, resp.StatusCode, body)
	}
	t.Fatalf("%s: %d requests (%d tokens) admitted, none refused: the limit %d is not applied", step, smallMaxSpend, spent, smallLimit)
	return 0
}

// frontTally counts, over every front, the ext_proc exchanges that went
// wrong in a way the client might not see: a reply past the message
// timeout, a stream the processor left open, a gRPC error.
type frontTally struct {
	mu                            sync.Mutex
	requests, timedOut, leftOpen  int
	grpcErrors                    int
	firstGRPCError, firstTimedOut string
}

func (f *frontTally) add(replica int, st front.RequestStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if st.TimedOut {
		f.timedOut++
		if f.firstTimedOut == "" {
			f.firstTimedOut = fmt.Sprintf("replica %d %s %s after %v", replica, st.Method, st.Path, st.Sent)
		}
	}
	if st.StreamLeftOpen {
		f.leftOpen++
	}
	if st.GRPCError != "" {
		f.grpcErrors++
		if f.firstGRPCError == "" {
			f.firstGRPCError = fmt.Sprintf("replica %d: %s", replica, st.GRPCError)
		}
	}
}

func (f *frontTally) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timedOut > 0 || f.leftOpen > 0 || f.grpcErrors > 0 {
		t.Errorf("front: of %d ext_proc streams, %d missed the message timeout (first: %s), %d were left open, %d ended in a gRPC error (first: %s)",
			f.requests, f.timedOut, f.firstTimedOut, f.leftOpen, f.grpcErrors, f.firstGRPCError)
	}
}

func (f *frontTally) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%d ext_proc streams, %d timed out, %d left open, %d gRPC errors", f.requests, f.timedOut, f.leftOpen, f.grpcErrors)
}
