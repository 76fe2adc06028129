package storetest

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// testQuotaPeriods spends a quota in the last second of each kind of
// period, leap years and ISO weeks included, and finds it whole in the
// first second of the next.
func testQuotaPeriods(t *testing.T, su *suite) {
	for _, b := range []struct {
		p           limiter.Period
		last, first time.Time // the last second of a period, the first of the next
	}{
		{limiter.Hourly, utc(2026, 5, 5, 10, 59, 59), utc(2026, 5, 5, 11, 0, 0)},
		{limiter.Daily, utc(2026, 5, 5, 23, 59, 59), utc(2026, 5, 6, 0, 0, 0)},
		{limiter.Weekly, utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 30, 0, 0, 0)}, // Sunday → Monday
		{limiter.Weekly, utc(2027, 1, 3, 23, 59, 59), utc(2027, 1, 4, 0, 0, 0)},     // across a new year
		{limiter.Monthly, utc(2026, 2, 28, 23, 59, 59), utc(2026, 3, 1, 0, 0, 0)},
		{limiter.Monthly, utc(2028, 2, 29, 23, 59, 59), utc(2028, 3, 1, 0, 0, 0)},
		{limiter.Monthly, utc(2026, 4, 30, 23, 59, 59), utc(2026, 5, 1, 0, 0, 0)},
		{limiter.Monthly, utc(2026, 7, 31, 23, 59, 59), utc(2026, 8, 1, 0, 0, 0)},
		{limiter.Monthly, utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0)},
		{limiter.Yearly, utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0)},
		{limiter.Yearly, utc(2100, 12, 31, 23, 59, 59), utc(2101, 1, 1, 0, 0, 0)},
	} {
		t.Run(b.p.String()+"/"+b.first.Format("2006-01-02T15"), func(t *testing.T) {
			lim := limiter.Limits{Quota: 1000, Period: b.p}
			_, end := b.p.Bounds(b.first)
			next := b.first.Sub(b.last)
			su.play(t, b.last, lim, []step{
				reserve(0, 600, limiter.Decision{Allowed: true, Used: 600,
					Quota: limiter.QuotaState{Limit: 1000, Used: 600, Remaining: 400, Reset: 1 * s}}), // 0
				settle(0, 0, 1000),
				// The quota refuses, with the time to the period's end
				// to wait; a quota-only key advertises no window.
				reserve(500*ms, 0, limiter.Decision{Reason: limiter.QuotaExceeded, Used: 1000, RetryAfter: 500 * ms,
					Quota: limiter.QuotaState{Limit: 1000, Used: 1000, Remaining: 0, Reset: 500 * ms}}),
				status(900*ms, limiter.Decision{Reason: limiter.QuotaExceeded, Used: 1000, RetryAfter: 100 * ms,
					Quota: limiter.QuotaState{Limit: 1000, Used: 1000, Remaining: 0, Reset: 100 * ms}}),
				status(next, limiter.Decision{Allowed: true, Used: 1000,
					Quota: limiter.QuotaState{Limit: 1000, Used: 0, Remaining: 1000, Reset: end.Sub(b.first)}}),
				reserve(next, 10, limiter.Decision{Allowed: true, Used: 1010,
					Quota: limiter.QuotaState{Limit: 1000, Used: 10, Remaining: 990, Reset: end.Sub(b.first)}}),
			})
		})
	}
}

// testQuotaAndWindowTogether: a request must fit both budgets; the window
// refuses for a minute, the quota for the rest of its period.
func testQuotaAndWindowTogether(t *testing.T, su *suite) {
	lim := limiter.Limits{TokensPerMinute: 100, Quota: 150, Period: limiter.Daily}
	e := su.env(t, utc(2026, 5, 5, 10, 0, 0))
	for i, st := range []struct {
		at      time.Duration
		n, used int64 // used: settled when admitted
		allowed bool
		reason  limiter.Reason
	}{
		{0, 50, 90, true, limiter.ReasonNone},
		{0, 20, 0, false, limiter.RateLimited},                    // window: 90+20 > 100
		{60 * s, 50, 50, true, limiter.ReasonNone},                // window empty again; quota 90+50 = 140
		{120 * s, 20, 0, false, limiter.QuotaExceeded},            // the quota: 140+20 > 150
		{180 * s, 10, 10, true, limiter.ReasonNone},               // 140+10 = 150 fits exactly
		{180 * s, 0, 0, false, limiter.QuotaExceeded},             // a check, once the quota is spent
		{14*time.Hour - 1*ms, 0, 0, false, limiter.QuotaExceeded}, // until midnight
		{14 * time.Hour, 100, 0, true, limiter.ReasonNone},
	} {
		now := e.at(st.at)
		d := e.reserve("k", lim, st.n)
		if d.Allowed != st.allowed || d.Reason != st.reason {
			t.Fatalf("step %d: %+v, want allowed %v reason %v", i, d, st.allowed, st.reason)
		}
		if st.reason == limiter.QuotaExceeded {
			_, end := lim.Period.Bounds(now)
			if d.RetryAfter != end.Sub(now) || d.Quota.Reset != end.Sub(now) {
				t.Errorf("step %d: retry after %v, quota reset %v; want both %v, the period's end", i, d.RetryAfter, d.Quota.Reset, end.Sub(now))
			}
		}
		if d.Allowed {
			e.settle("k", lim, d.Hold, st.used)
		}
	}
}

// testQuotaOnly: a key with a quota and no window counts its window all
// the same (Used) but advertises no limit, remaining or reset for it.
func testQuotaOnly(t *testing.T, su *suite) {
	lim := limiter.Limits{Quota: 100, Period: limiter.Daily}
	su.play(t, utc(2026, 5, 5, 23, 0, 0), lim, []step{
		charge(0, 30),
		status(1*s, limiter.Decision{Allowed: true, Used: 30,
			Quota: limiter.QuotaState{Limit: 100, Used: 30, Remaining: 70, Reset: time.Hour - 1*s}}),
		reserve(1*s, 71, limiter.Decision{Reason: limiter.QuotaExceeded, Used: 30, RetryAfter: time.Hour - 1*s,
			Quota: limiter.QuotaState{Limit: 100, Used: 30, Remaining: 70, Reset: time.Hour - 1*s}}),
	})
}

// testHoldOutlivesAPeriod: a hold made in one period and settled in the
// next charges the next, and is counted in flight by both.
func testHoldOutlivesAPeriod(t *testing.T, su *suite) {
	lim := limiter.Limits{Quota: 100, Period: limiter.Hourly}
	quota := func(used int64, reset time.Duration) limiter.QuotaState {
		return limiter.QuotaState{Limit: 100, Used: used, Remaining: 100 - used, Reset: reset}
	}
	su.play(t, utc(2026, 5, 5, 10, 59, 59).Add(500*ms), lim, []step{
		charge(0, 30),
		reserve(0, 60, limiter.Decision{Allowed: true, Used: 90, Quota: quota(90, 500*ms)}), // 1
		status(1*s, limiter.Decision{Allowed: true, Used: 90, Quota: quota(60, time.Hour-500*ms)}),
		settle(2*s, 1, 50),
		status(2*s, limiter.Decision{Allowed: true, Used: 80, Quota: quota(50, time.Hour-1500*ms)}),
		status(time.Hour+1*s, limiter.Decision{Allowed: true, Quota: quota(0, time.Hour-500*ms)}),
	})
}
