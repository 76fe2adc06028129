package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

func tpm(n int64) limiter.Limits { return limiter.Limits{TokensPerMinute: n} }

// testAdmitsUpToTheLimit: a request fits while used+held+max(n,1) <=
// limit, so a check (n = 0) passes until the window is spent.
func testAdmitsUpToTheLimit(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		charge(0, 99),
		reserve(1*s, 0, ok(99, 1, 59*s)),
		status(1*s, ok(99, 1, 59*s)),
		reserve(1*s, 1, ok(100, 0, 59*s)), // 3
		reserve(2*s, 0, no(100, 0, 58*s, 58*s)),
		status(2*s, no(100, 0, 58*s, 58*s)),
		settle(2*s, 3, 1),
		reserve(2*s, 0, no(100, 0, 60*s, 58*s)),
		reserve(60*s, 0, ok(1, 99, 2*s)),
	})
}

// testTokensLeaveAtSecondPlus60: tokens charged in second s count while
// now < s+60.
func testTokensLeaveAtSecondPlus60(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		charge(500*ms, 40), // charged to second t0
		status(59*s+999*ms, ok(40, 60, 1*ms)),
		status(60*s, ok(0, 100, 0)),
	})
}

// testWindowSlidesSecondBySecond charges ten seconds in a row and follows
// them out of the window a second at a time, against a model of the
// contract: used, remaining, reset and the retry-after of a request that
// needs a quarter of the budget.
func testWindowSlidesSecondBySecond(t *testing.T, su *suite) {
	const limit, perSecond, n = 100, 10, 25
	e := su.env(t, t0)
	lim := tpm(limit)
	for sec := range 10 {
		e.at(time.Duration(sec)*s + 500*ms)
		e.settle("k", lim, limiter.Hold{}, perSecond)
	}
	for sec := 10; sec <= 71; sec++ {
		at := time.Duration(sec)*s + 250*ms
		now := e.at(at)
		// Seconds 0..9 each hold perSecond tokens until second+60.
		var live []int
		for b := range 10 {
			if b+60 > sec {
				live = append(live, b)
			}
		}
		used := int64(perSecond * len(live))
		want := limiter.Decision{Allowed: used < limit, Limit: limit, Used: used, Remaining: limit - used}
		if len(live) > 0 {
			want.Reset = t0.Add(time.Duration(live[len(live)-1]+60) * s).Sub(now)
		}
		if !want.Allowed {
			want.Reason = limiter.RateLimited
			want.RetryAfter = t0.Add(time.Duration(live[0]+60) * s).Sub(now)
		}
		if got := e.status("k", lim); got != want {
			t.Errorf("status at start+%v:\n got %+v\nwant %+v", at, got, want)
		}
		// n fits once used-k*perSecond+n <= limit, k the seconds that
		// must leave first.
		want.Allowed, want.Reason, want.RetryAfter = used+n <= limit, limiter.ReasonNone, 0
		if want.Allowed {
			want.Used += n
			want.Remaining = limit - want.Used
			want.Hold.Tokens = n
		} else {
			k := (used + n - limit + perSecond - 1) / perSecond
			want.Reason = limiter.RateLimited
			want.RetryAfter = t0.Add(time.Duration(live[k-1]+60) * s).Sub(now)
		}
		got := e.reserve("k", lim, n)
		h := got.Hold
		got.Hold.ID = ""
		if got != want {
			t.Errorf("reserve(%d) at start+%v:\n got %+v\nwant %+v", n, at, got, want)
		}
		e.settle("k", lim, h, 0)
	}
}

// testRetryAfter: the retry-after of a refused request is the time until
// enough of the oldest tokens leave for it to fit, in-flight tokens
// included; when in-flight tokens alone block it, a whole window.
func testRetryAfter(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		charge(0, 30),
		charge(10*s+900*ms, 30),
		charge(20*s, 30),
		reserve(25*s+250*ms, 10, ok(100, 0, 54*s+750*ms)), // 3
		settle(25*s+250*ms, 3, 0),
		reserve(25*s+250*ms, 11, no(90, 10, 54*s+750*ms, 34*s+750*ms)),
		reserve(25*s+250*ms, 40, no(90, 10, 54*s+750*ms, 34*s+750*ms)),
		reserve(25*s+250*ms, 41, no(90, 10, 54*s+750*ms, 44*s+750*ms)),
		reserve(25*s+250*ms, 70, no(90, 10, 54*s+750*ms, 44*s+750*ms)),
		reserve(25*s+250*ms, 71, no(90, 10, 54*s+750*ms, 54*s+750*ms)),
		reserve(25*s+250*ms, 100, no(90, 10, 54*s+750*ms, 54*s+750*ms)),
		// When the first bucket has left, 40 fits at last.
		reserve(59*s+999*ms, 40, no(90, 10, 20*s+1*ms, 1*ms)),
		reserve(60*s, 40, ok(100, 0, 20*s)),
	})
}

// testRetryAfterFits checks, over many fills, that a request refused with
// RetryAfter d is still refused a millisecond before d and admitted at d.
func testRetryAfterFits(t *testing.T, su *suite) {
	e := su.env(t, t0)
	lim := tpm(60)
	cell := 0
	for _, fill := range []int{1, 2, 3, 5, 10, 30, 59, 60} {
		for _, n := range []int64{1, 7, 30, 59, 60} {
			key := fmt.Sprintf("fill%d-n%d", fill, n)
			base := time.Duration(cell) * 10 * time.Minute
			cell++
			// Second k gets k+1 tokens, for k < fill.
			for k := range fill {
				e.at(base + time.Duration(k)*s)
				e.settle(key, lim, limiter.Hold{}, int64(k+1))
			}
			at := base + time.Duration(fill)*s + 123*ms
			e.at(at)
			d := e.reserve(key, lim, n)
			if d.Allowed {
				e.settle(key, lim, d.Hold, 0)
				continue
			}
			e.at(at + d.RetryAfter - ms)
			if early := e.reserve(key, lim, n); early.Allowed {
				t.Errorf("%s: admitted 1ms before RetryAfter %v", key, d.RetryAfter)
				e.settle(key, lim, early.Hold, 0)
			}
			e.at(at + d.RetryAfter)
			late := e.reserve(key, lim, n)
			if !late.Allowed {
				t.Errorf("%s: refused at RetryAfter %v: %+v", key, d.RetryAfter, late)
				continue
			}
			e.settle(key, lim, late.Hold, 0)
		}
	}
}

// testResetFollowsNewestBucket: Reset is the time until the newest charge
// leaves the window.
func testResetFollowsNewestBucket(t *testing.T, su *suite) {
	su.play(t, t0, tpm(1000), []step{
		reserve(0, 5, ok(5, 995, 0)),
		settle(1*s, 0, 5),
		charge(30*s, 7),
		status(30*s+400*ms, ok(12, 988, 59*s+600*ms)),
		status(61*s, ok(7, 993, 29*s)),
		charge(61*s, 1),
		status(89*s, ok(8, 992, 32*s)),
		status(120*s, ok(1, 999, 1*s)),
		status(121*s, ok(0, 1000, 0)),
	})
}

func testLongGapEmptiesWindow(t *testing.T, su *suite) {
	su.play(t, t0, tpm(10), []step{
		charge(0, 4),
		charge(59*s, 4),
		reserve(59*s, 3, no(8, 2, 60*s, 1*s)),
		reserve(60*s, 3, ok(7, 3, 59*s)), // 3
		settle(60*s, 3, 0),
		reserve(10*time.Hour, 10, ok(10, 0, 0)), // 5
		settle(10*time.Hour, 5, 10),
		status(10*time.Hour+59*s, no(10, 0, 1*s, 1*s)),
	})
}

// testMoreThanTheLimitNeverFits: n > limit is refused with a whole window
// to wait, since no expiry can make it fit.
func testMoreThanTheLimitNeverFits(t *testing.T, su *suite) {
	su.play(t, t0, tpm(100), []step{
		reserve(0, 101, no(0, 100, 0, limiter.Window)),
		charge(0, 1),
		reserve(0, 100, no(1, 99, 60*s, 60*s)),
		reserve(0, 101, no(1, 99, 60*s, limiter.Window)),
	})
}

// testKeysAreApart: each key has its own window.
func testKeysAreApart(t *testing.T, su *suite) {
	e := su.env(t, t0)
	lim := tpm(100)
	a, b := e.reserve("a", lim, 60), e.reserve("b", lim, 60)
	if !a.Allowed || !b.Allowed {
		t.Fatalf("refused: a %+v, b %+v", a, b)
	}
	e.at(1 * s)
	e.settle("a", lim, a.Hold, 70)
	e.settle("b", lim, b.Hold, 5)
	e.at(2 * s)
	for key, want := range map[string]int64{"a": 70, "b": 5, "c": 0} {
		if got := e.used(key); got != want {
			t.Errorf("%s: used %d, want %d", key, got, want)
		}
	}
	want := limiter.Decision{Reason: limiter.RateLimited, Limit: 100, Used: 70, Remaining: 30, RetryAfter: 59 * s, Reset: 59 * s}
	if d := e.reserve("a", lim, 31); d != want {
		t.Errorf("a:\n got %+v\nwant %+v", d, want)
	}
}
