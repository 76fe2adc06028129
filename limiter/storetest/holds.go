package storetest

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// testHoldsBlockSettleReleases: held tokens count as used until their
// settle, which charges what was used and releases the rest.
func testHoldsBlockSettleReleases(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		reserve(0, 60, ok(60, 40, 0)), // 0
		reserve(0, 50, no(60, 40, 0, limiter.Window)),
		reserve(0, 40, ok(100, 0, 0)), // 2
		status(0, no(100, 0, 0, limiter.Window)),
		settle(5*s, 0, 10), // 10 charged, 40 still held
		reserve(5*s, 61, no(50, 50, 60*s, limiter.Window)),
		reserve(5*s, 51, no(50, 50, 60*s, 60*s)),
		reserve(5*s, 50, ok(100, 0, 60*s)), // 7
		settle(6*s, 2, 0),
		settle(6*s, 7, 0),
		status(6*s, ok(10, 90, 59*s)),
		reserve(6*s, -3, ok(10, 90, 59*s)),
	})
}

// testSettleReleasesOnlyItsHold: settling one request leaves the other
// requests' holds in place, whatever it used.
func testSettleReleasesOnlyItsHold(t *testing.T, su *suite) {
	su.play(t, t0, tpm(1000), []step{
		reserve(0, 60, ok(60, 940, 0)), // 0
		reserve(0, 30, ok(90, 910, 0)), // 1
		settle(1*s, 0, 100),            // more than it held
		status(1*s, ok(130, 870, 60*s)),
		settle(2*s, 1, 0),
		status(2*s, ok(100, 900, 59*s)),
	})
}

// testSettleOnce: the zero Hold a check returns settles like any, charging
// without releasing; a Hold settled twice (the caller's bug) is charged
// twice but releases nothing more than the key holds.
func testSettleOnce(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		reserve(0, 0, ok(0, 100, 0)), // the zero Hold
		settle(0, 0, 25),
		status(0, ok(25, 75, 60*s)),
		reserve(1*s, 50, ok(75, 25, 59*s)), // 3
		settle(1*s, 3, 30),
		status(1*s, ok(55, 45, 60*s)),
		settle(1*s, 3, 30), // again: charged, nothing released
		status(1*s, ok(85, 15, 60*s)),
		reserve(2*s, 15, ok(100, 0, 59*s)), // 8: the count of holds is right
		reserve(2*s, 1, no(100, 0, 59*s, 58*s)),
		settle(2*s, 8, 0),
		status(2*s, ok(85, 15, 59*s)),
	})
}

// testNegativeAndZero: a negative n is a check; a negative used charges
// nothing.
func testNegativeAndZero(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		reserve(0, -3, ok(0, 100, 0)),
		reserve(0, 0, ok(0, 100, 0)),
		charge(0, -5),
		charge(0, 0),
		status(0, ok(0, 100, 0)),
		charge(1*s, 100),
		reserve(1*s, 0, no(100, 0, 60*s, 60*s)),
		reserve(1*s, -3, no(100, 0, 60*s, 60*s)),
		reserve(1*s, 1, no(100, 0, 60*s, 60*s)),
	})
}

// testHoldExpiry: a store with a hold TTL drops a hold left unsettled that
// long, and a late settle of it charges its use and releases nothing
// twice; a store without one keeps holds until they are settled.
func testHoldExpiry(t *testing.T, su *suite) {
	lim := tpm(100)
	if su.holdTTL <= 0 {
		su.play(t, t0, lim, []step{
			reserve(0, 80, ok(80, 20, 0)), // 0
			reserve(24*time.Hour, 30, no(80, 20, 0, limiter.Window)),
			settle(24*time.Hour+1*s, 0, 10),
			status(24*time.Hour+1*s, ok(10, 90, 60*s)),
		})
		return
	}
	ttl := su.holdTTL
	su.play(t, t0, lim, []step{
		reserve(0, 80, ok(80, 20, 0)), // 0
		reserve(ttl-1*ms, 30, no(80, 20, 0, limiter.Window)),
		reserve(ttl, 30, ok(30, 70, 0)), // 2: the first hold is gone
		settle(ttl+1*s, 0, 10),          // the expired hold: charged, the other still held
		status(ttl+1*s, ok(40, 60, 60*s)),
		settle(ttl+1*s, 2, 0),
		status(ttl+1*s, ok(10, 90, 60*s)),
	})
}

// testLimitsPerCall: every call is answered by the limits it brings, as
// after a reload: a window raised or lowered between a reserve and its
// settle, a quota that appears or goes away. A quota counts only what is
// settled under limits that have one.
func testLimitsPerCall(t *testing.T, su *suite) {
	day := utc(2026, 5, 5, 10, 0, 0)
	wq := limiter.Limits{TokensPerMinute: 1000, Quota: 500, Period: limiter.Daily}
	q := func(used, remaining int64, reset time.Duration) limiter.QuotaState {
		return limiter.QuotaState{Limit: 500, Used: used, Remaining: remaining, Reset: reset}
	}
	left := 14 * time.Hour // to the next UTC midnight
	withQ := func(d limiter.Decision, qs limiter.QuotaState) limiter.Decision { d.Quota = qs; return d }
	su.play(t, day, tpm(100), []step{
		charge(0, 80),
		reserve(1*s, 30, no(80, 20, 59*s, 59*s)),
		reserve(1*s, 30, ok(110, 90, 59*s)).under(tpm(200)), // 2
		status(1*s, no(110, 0, 59*s, 59*s)),
		settle(2*s, 2, 20), // under the first limits again
		status(2*s, ok(100, 100, 60*s)).under(tpm(200)),
		// A quota appears: it counts from its first call.
		status(3*s, withQ(ok(100, 900, 59*s), q(0, 500, left-3*s))).under(wq),
		reserve(3*s, 40, withQ(ok(140, 860, 59*s), q(40, 460, left-3*s))).under(wq), // 7
		// ... and goes away before the request settles: the hold is
		// released, the use charged to the window only.
		settle(4*s, 7, 40),
		status(4*s, withQ(ok(140, 860, 60*s), q(0, 500, left-4*s))).under(wq),
		charge(5*s, 60).under(wq),
		status(5*s, withQ(ok(200, 800, 60*s), q(60, 440, left-5*s))).under(wq),
	})
}

// testNoOvershoot has many goroutines reserve on one key and never settle:
// exactly limit/n of them get in, never more.
func testNoOvershoot(t *testing.T, su *suite) {
	const (
		limit      = 1000
		n          = 7
		goroutines = 16
		tries      = 40
	)
	e := su.env(t, t0)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				d, err := e.s.Reserve(e.ctx, "k", tpm(limit), n, e.clock.Now())
				if err != nil {
					t.Errorf("goroutine %d try %d: %v", g, i, err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
				if d.Used > limit {
					t.Errorf("goroutine %d try %d: used %d > limit", g, i, d.Used)
				}
			}
		}()
	}
	wg.Wait()
	if got, want := admitted.Load(), int64(limit/n); got != want {
		t.Errorf("admitted %d requests of %d tokens, want %d", got, n, want)
	}
}

// testConcurrentKeys mixes every call over a few keys from many goroutines
// (for the race detector too), and wants the charges to add up.
func testConcurrentKeys(t *testing.T, su *suite) {
	const goroutines, keys, rounds = 8, 4, 100
	e := su.env(t, t0)
	lim := tpm(1 << 40)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint("k", g%keys)
			for range rounds {
				now := e.clock.Now()
				d, err := e.s.Reserve(e.ctx, key, lim, 3, now)
				if err != nil || !d.Allowed {
					t.Errorf("%s: refused: %+v %v", key, d, err)
					return
				}
				if _, err := e.s.Status(e.ctx, key, lim, now); err != nil {
					t.Error(err)
				}
				if _, err := e.s.Settle(e.ctx, key, lim, d.Hold, 2, now); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for k := range keys {
		if got, want := e.used(fmt.Sprint("k", k)), int64(goroutines/keys*rounds*2); got != want {
			t.Errorf("k%d: used %d, want %d", k, got, want)
		}
	}
}

// testListAndReset: List finds the keys under a prefix that hold anything,
// with their use; Reset forgets one key, window, holds and quota.
func testListAndReset(t *testing.T, su *suite) {
	now := utc(2026, 5, 5, 10, 0, 0)
	e := su.env(t, now)
	lim := limiter.Limits{TokensPerMinute: 1000, Quota: 5000, Period: limiter.Monthly}
	for _, c := range []struct {
		key  string
		used int64
	}{{"p:a", 10}, {"p:b", 30}, {"q:c", 20}} {
		e.settle(c.key, lim, limiter.Hold{}, c.used)
	}
	if d := e.reserve("p:a", lim, 5); !d.Allowed {
		t.Fatalf("reserve refused: %+v", d)
	}
	e.reserve("p:idle", lim, 0) // a check leaves nothing to list
	got, err := e.s.List(e.ctx, "p:", now)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Key < got[j].Key })
	want := []limiter.KeyUsage{{Key: "p:a", Used: 15}, {Key: "p:b", Used: 30}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List(p:) = %v, want %v", got, want)
	}
	if err := e.s.Reset(e.ctx, "p:b"); err != nil {
		t.Fatal(err)
	}
	if st := e.status("p:b", lim); st.Used != 0 || st.Quota.Used != 0 {
		t.Errorf("after Reset: %+v", st)
	}
	if st := e.status("q:c", lim); st.Used != 20 || st.Quota.Used != 20 {
		t.Errorf("Reset touched another key: %+v", st)
	}
	if got, _ := e.s.List(e.ctx, "p:b", now); len(got) != 0 {
		t.Errorf("List(p:b) after Reset = %v, want nothing", got)
	}
}
