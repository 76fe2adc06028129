package counter

import (
	"math"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Counter is everything a store keeps of one key: its window and, when the
// key has one, its quota. Like Window it is pure arithmetic; the store
// holding it supplies the lock. Its methods are the Store contract's calls
// for one key (see limiter.Store).
type Counter struct {
	window Window
	quota  *Quota // nil for keys without a quota, which most are
}

// Reserve admits n tokens when they fit both the window and the quota, and
// holds them in both. The Hold it answers has no ID: the store holding the
// counter finds it again by key.
func (c *Counter) Reserve(lim limiter.Limits, n int64, now time.Time) limiter.Decision {
	n = max(n, 0)
	q := c.quotaFor(lim, now)
	if q != nil && !q.fits(lim.Quota, max(n, 1)) {
		d := c.window.status(windowLimit(lim), now)
		d.Allowed, d.Reason = false, limiter.QuotaExceeded
		d.Quota = q.state(lim.Quota, now)
		d.RetryAfter = d.Quota.Reset
		return noWindow(lim, d)
	}
	d := c.window.reserve(windowLimit(lim), n, now)
	switch {
	case !d.Allowed:
		d.Reason = limiter.RateLimited
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

// Settle releases reserved tokens and charges used ones, to the window
// and, when the key has one, the quota.
func (c *Counter) Settle(lim limiter.Limits, reserved, used int64, now time.Time) {
	c.window.settle(reserved, used, now)
	if q := c.quotaFor(lim, now); q != nil {
		q.settle(reserved, used)
	} else if c.quota != nil { // the quota was dropped from the config: just release
		c.quota.settle(reserved, 0)
	}
}

// Status is Reserve(lim, 0, now) without changing anything.
func (c *Counter) Status(lim limiter.Limits, now time.Time) limiter.Decision {
	d := c.window.status(windowLimit(lim), now)
	if !d.Allowed {
		d.Reason = limiter.RateLimited
	}
	if lim.Quota > 0 {
		var q Quota
		if c.quota != nil {
			q = *c.quota
		}
		q.roll(lim.Period, now)
		d.Quota = q.state(lim.Quota, now)
		if !q.fits(lim.Quota, 1) {
			d.Allowed, d.Reason, d.RetryAfter = false, limiter.QuotaExceeded, d.Quota.Reset
		}
	}
	return noWindow(lim, d)
}

// Idle reports whether the counter holds nothing a fresh one would not, so
// that its store can forget it.
func (c *Counter) Idle(now time.Time) bool {
	return c.window.Idle(now) && (c.quota == nil || c.quota.Idle(now))
}

// Emptied is Idle for a counter that a Reserve or a Settle at now has
// just advanced to now, where it costs no loop.
func (c *Counter) Emptied(now time.Time) bool {
	return c.window.sum == 0 && c.window.reserved == 0 && (c.quota == nil || c.quota.Idle(now))
}

// Used is the window's charged tokens at now plus those held.
func (c *Counter) Used(now time.Time) int64 { return c.window.Used(now) }

// SetWindow replaces the window, with one restored from a file.
func (c *Counter) SetWindow(w Window) { c.window = w }

// SetQuota replaces the quota, with one restored from a file.
func (c *Counter) SetQuota(q Quota) { c.quota = &q }

// AppendWindow appends the window's encoding to dst (see encoding.go).
func (c *Counter) AppendWindow(dst []byte) []byte { return appendWindow(dst, &c.window) }

// AppendQuota appends the quota's encoding to dst; ok is false when there
// is no quota worth keeping at now.
func (c *Counter) AppendQuota(dst []byte, now time.Time) (_ []byte, ok bool) {
	if c.quota == nil || c.quota.Idle(now) {
		return dst, false
	}
	return appendQuota(dst, c.quota), true
}

// quotaFor returns the key's quota rolled into now's period, creating it
// when lim has a quota; nil when lim has none.
func (c *Counter) quotaFor(lim limiter.Limits, now time.Time) *Quota {
	if lim.Quota <= 0 || lim.Period == limiter.NoPeriod {
		return nil
	}
	if c.quota == nil {
		c.quota = &Quota{}
	}
	c.quota.roll(lim.Period, now)
	return c.quota
}

// windowLimit is the window's budget; without one the window still counts,
// for the headers, but never refuses.
func windowLimit(lim limiter.Limits) int64 {
	if lim.TokensPerMinute <= 0 {
		return math.MaxInt64
	}
	return lim.TokensPerMinute
}

// noWindow blanks the window's figures of a key that has no rate limit, so
// callers don't advertise an infinite budget.
func noWindow(lim limiter.Limits, d limiter.Decision) limiter.Decision {
	if lim.TokensPerMinute <= 0 {
		d.Limit, d.Remaining, d.Reset = 0, 0, 0
	}
	return d
}
