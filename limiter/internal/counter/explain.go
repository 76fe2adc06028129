package counter

import (
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Explain draws the Decision for a verdict reached elsewhere (a Redis
// script) from the state it saw at now: the window's buckets as (Unix
// second, tokens) pairs, the tokens held, and the quota used in now's
// period. It is the arithmetic Counter uses, so that a remote store
// answers exactly as a local one would. reason is the verdict:
// limiter.ReasonNone for an admission.
func Explain(lim limiter.Limits, n int64, reason limiter.Reason, now time.Time, buckets []int64, held, qused int64) limiter.Decision {
	var w Window
	sec := now.Unix()
	w.head = sec
	for i := 0; i+1 < len(buckets); i += 2 {
		s, c := buckets[i], buckets[i+1]
		if s > sec-Buckets && s <= sec && c > 0 {
			w.buckets[slot(s)] += min(c, maxBucket)
			w.sum += min(c, maxBucket)
		}
	}
	w.reserved = held
	d := w.decide(windowLimit(lim), n, sec, now, w.sum, reason == limiter.ReasonNone)
	if lim.Quota > 0 {
		start, _ := lim.Period.Bounds(now)
		q := Quota{period: lim.Period, start: start.Unix(), used: qused, reserved: held}
		d.Quota = q.state(lim.Quota, now)
	}
	d.Reason = reason
	if reason == limiter.QuotaExceeded {
		d.RetryAfter = d.Quota.Reset
	}
	return noWindow(lim, d)
}
