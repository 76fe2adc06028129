package limiter

import (
	"math"
	"time"
)

// reserve admits n tokens when they fit both the window and the quota, and
// holds them in both.
func (e *entry) reserve(lim Limits, n int64, now time.Time) Decision {
	n = max(n, 0)
	q := e.quotaFor(lim, now)
	if q != nil && !q.fits(lim.Quota, max(n, 1)) {
		d := e.window.status(windowLimit(lim), now)
		d.Allowed, d.Reason = false, QuotaExceeded
		d.Quota = q.state(lim.Quota, now)
		d.RetryAfter = d.Quota.Reset
		return noWindow(lim, d)
	}
	d := e.window.reserve(windowLimit(lim), n, now)
	switch {
	case !d.Allowed:
		d.Reason = RateLimited
	case q != nil:
		q.reserved += n
	}
	if d.Allowed && n > 0 {
		d.Hold.Tokens = n
	}
	if q != nil {
		d.Quota = q.state(lim.Quota, now)
	}
	return noWindow(lim, d)
}

// settleAll settles the window and, when the key has one, the quota.
func (e *entry) settleAll(lim Limits, reserved, used int64, now time.Time) {
	e.window.settle(reserved, used, now)
	if q := e.quotaFor(lim, now); q != nil {
		q.settle(reserved, used)
	} else if e.quota != nil { // the quota was dropped from the config: just release
		e.quota.settle(reserved, 0)
	}
}

// statusAll is reserve(lim, 0, now) without changing anything.
func (e *entry) statusAll(lim Limits, now time.Time) Decision {
	d := e.window.status(windowLimit(lim), now)
	if !d.Allowed {
		d.Reason = RateLimited
	}
	if lim.Quota > 0 {
		var q quota
		if e.quota != nil {
			q = *e.quota
		}
		q.roll(lim.Period, now)
		d.Quota = q.state(lim.Quota, now)
		if !q.fits(lim.Quota, 1) {
			d.Allowed, d.Reason, d.RetryAfter = false, QuotaExceeded, d.Quota.Reset
		}
	}
	return noWindow(lim, d)
}

// idle reports whether the entry holds nothing a fresh one would not.
func (e *entry) idle(now time.Time) bool {
	return e.window.idle(now) && (e.quota == nil || e.quota.idle(now))
}

// quotaFor returns the key's quota rolled into now's period, creating it
// when lim has a quota; nil when lim has none.
func (e *entry) quotaFor(lim Limits, now time.Time) *quota {
	if lim.Quota <= 0 || lim.Period == NoPeriod {
		return nil
	}
	if e.quota == nil {
		e.quota = &quota{}
	}
	e.quota.roll(lim.Period, now)
	return e.quota
}

// windowLimit is the window's budget; without one the window still counts,
// for the headers, but never refuses.
func windowLimit(lim Limits) int64 {
	if lim.TokensPerMinute <= 0 {
		return math.MaxInt64
	}
	return lim.TokensPerMinute
}

// noWindow blanks the window's figures of a key that has no rate limit, so
// callers don't advertise an infinite budget.
func noWindow(lim Limits, d Decision) Decision {
	if lim.TokensPerMinute <= 0 {
		d.Limit, d.Remaining, d.Reset = 0, 0, 0
	}
	return d
}
