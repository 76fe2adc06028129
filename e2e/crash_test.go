package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/e2e/load"
)

// The crash run: a bbolt store written behind every crashFlush, budgets
// far beyond the load so that nothing is refused and every answer is a
// charge, and a monthly quota, persisted on every settle.
const (
	// crashFlush is long enough that the one interval the check below
	// allows for a flush's own time (waiting for bbolt's writer behind
	// the settles' quota commits, then its fsync) holds on a loaded
	// machine with a busy disk; the check is in intervals either way.
	crashFlush   = 500 * time.Millisecond
	crashLimit   = 100_000_000
	crashQuota   = 1_000_000_000
	crashClock   = "2026-03-14T09:00:00Z"
	crashClients = 16
	// crashSim is the fake time the load may cover, in ticks of 50 ms:
	// 1,000 rounds, far more than run before the kill, and under a minute,
	// so no charge of the run can leave the window before the check,
	// whatever second the restarted clock reads within it.
	crashSim  = 50 * time.Second
	crashTick = 50 * time.Millisecond
	// The kill comes once this many answers were seen over at least this
	// long: several flushes have happened, and the load is still going.
	crashKillAfterAnswers = 200
	crashKillAfterWall    = 6 * crashFlush
	crashMaxWall          = 20 * time.Second
	crashMaxRequests      = 20000
)

// crashMaxRequestTokens is the most one load request can be charged: the
// longest prompt (words are one token each, plus 7 of chat framing) and
// the longest completion.
var crashMaxRequestTokens = int64(load.DefaultPromptWords.Max + 7 + load.DefaultCompletionTokens.Max)

var crashConfig = fmt.Sprintf(`store: {backend: bbolt, bbolt: {path: "{{DB}}", flush_interval: %v}}
policies:
- name: crash
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
  token_quota: %d
  token_quota_period: monthly
  headers: {remaining_quota_tokens: x-quota-remaining}
`, crashFlush, crashLimit, crashQuota)

func TestKillDuringLoadKeepsQuota(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: crashConfig, FakeClock: crashClock, Filter: patientFront})
	start, err := time.Parse(time.RFC3339, crashClock)
	if err != nil {
		t.Fatal(err)
	}

	killPoint := newKillPoint()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan loadOutcome, 1)
	go func() {
		res, err := load.Run(ctx, load.Options{
			URLs: []string{s.URL}, Clients: crashClients, Key: "crash-key",
			Advance: load.ClockAdvancer(s.Tokengate.Field("admin")),
			Start:   start, SimDuration: crashSim, Tick: crashTick,
			MaxRequests: crashMaxRequests, MaxWall: crashMaxWall, Seed: 2,
			OnRecord: killPoint.see,
		})
		done <- loadOutcome{res, err}
	}()
	deadline := time.NewTimer(crashMaxWall + 10*time.Second)
	defer deadline.Stop()
	select {
	case <-killPoint.reached:
	case out := <-done:
		t.Fatalf("the load ended before the kill point (%v): %s", out.err, out.res.String())
	case <-deadline.C:
		t.Fatal("neither the kill point nor the load's end came")
	}

	killAt := s.KillTokengate()
	cancel()
	var out loadOutcome
	select {
	case out = <-done:
	case <-deadline.C:
		t.Fatal("the load did not stop after the kill")
	}
	res := out.res
	t.Logf("load until the kill: %s (ended by: %v)", res.String(), out.err)
	if res.Ticks >= res.Rounds {
		t.Fatalf("the load had finished all %d rounds before the kill: not a kill during load", res.Rounds)
	}
	for _, f := range res.Failures {
		if f.Received.Before(killAt) {
			t.Fatalf("a request failed before the kill: %+v", f)
		}
	}
	seen := sumSeen(res.Records, killAt)

	// The restarted process reads the fake time the dead one last read:
	// the driver's clock, or one tick more if an advance was in flight at
	// the kill. Either way every charge of the run (under crashSim) is
	// still inside the window, in the same month.
	s.StartTokengateAt(res.Now.Format(time.RFC3339Nano))
	resp, body := s.Chat("crash-key", labMessages...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request after the restart: %d %s", resp.StatusCode, body)
	}
	own := int64(usageTotal(t, "after the restart", body))
	quotaLeft, err := strconv.ParseInt(only(t, "after the restart", resp.Header, "X-Quota-Remaining"), 10, 64)
	if err != nil {
		t.Fatalf("x-quota-remaining: %v", err)
	}
	// Both headers are computed after the request's own charge.
	quotaUsed := crashQuota - quotaLeft - own
	windowUsed := crashLimit - int64(remaining(t, "after the restart", resp.Header)) - own

	t.Logf("crash: clients saw %d answers, %d tokens, %d of them in the last %v before the kill; after the restart: quota used %d, window used %d (%d requests in flight at the kill)",
		seen.answers, seen.total, seen.late, 2*crashFlush, quotaUsed, windowUsed, res.Failed+res.Cancelled)
	checkRestored(t, seen, quotaUsed, windowUsed)
}

// checkRestored holds the restored counters to the bounds the store
// promises.
//
// Every answer a client saw was settled before it was sent: its quota
// charge written to the file, its window charge in memory until the next
// flush. So the quota may never be below the total seen (seen.total). The
// window loses what was settled after the last flush that committed before
// the kill. Flushes run every crashFlush; allowing one more interval for a
// flush's drain-to-commit time and scheduling delay under load, every
// answer received more than 2·crashFlush before the kill was settled
// before a committed flush drained the window. Answers received later may
// be lost: that is seen.late, and the window must hold at least
// seen.total − seen.late.
//
// Neither counter may exceed what was seen plus what was in flight at the
// kill: at most one request per client, settled but never answered.
func checkRestored(t *testing.T, seen seenTotals, quotaUsed, windowUsed int64) {
	t.Helper()
	if quotaUsed < seen.total {
		t.Errorf("quota used %d after the restart < %d tokens the clients were answered before the kill: the crash refunded %d",
			quotaUsed, seen.total, seen.total-quotaUsed)
	}
	if least := seen.total - seen.late; windowUsed < least {
		t.Errorf("window used %d after the restart < %d seen − %d seen in the last %v = %d: more than one flush interval lost",
			windowUsed, seen.total, seen.late, 2*crashFlush, least)
	}
	most := seen.total + crashClients*crashMaxRequestTokens
	if quotaUsed > most || windowUsed > most {
		t.Errorf("quota used %d, window used %d: more than the %d seen plus %d clients' requests in flight (%d)",
			quotaUsed, windowUsed, seen.total, crashClients, most)
	}
}

type loadOutcome struct {
	res load.Result
	err error
}

// seenTotals sum the admitted answers of a run that ended in a kill.
type seenTotals struct {
	answers int
	total   int64 // tokens of every answer the clients received
	late    int64 // tokens of those received less than 2·crashFlush before the kill, or after it
}

func sumSeen(recs []load.Record, killAt time.Time) seenTotals {
	var s seenTotals
	cutoff := killAt.Add(-2 * crashFlush)
	for _, r := range recs {
		s.answers++
		s.total += r.Total
		if r.Received.After(cutoff) {
			s.late += r.Total
		}
	}
	return s
}

// killPoint closes reached once the load has answered enough requests
// over long enough for several flushes to have run: a condition on what
// was seen, not a sleep.
type killPoint struct {
	reached chan struct{}

	mu    sync.Mutex
	n     int
	first time.Time
	once  sync.Once
}

func newKillPoint() *killPoint { return &killPoint{reached: make(chan struct{})} }

func (k *killPoint) see(r load.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	if k.first.IsZero() {
		k.first = r.Received
	}
	if k.n >= crashKillAfterAnswers && r.Received.Sub(k.first) >= crashKillAfterWall {
		k.once.Do(func() { close(k.reached) })
	}
}
