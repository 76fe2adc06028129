package counter

import (
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// ExplainWindow draws a window limit's decision for a verdict reached
// elsewhere (a Redis script) from the state it saw at now: the units
// charged in the window (sum) and the newest bucket holding any, the
// units held (a reservation just admitted included), and, when the
// window alone does not admit the request, its buckets as (bucket, units)
// pairs; without them the sum is taken to be in the newest bucket, which
// is all that Used, Remaining and Reset read. admitted is the verdict on
// the whole Budget; n is what the request asked of this limit. It is the
// arithmetic Counter uses, so that a remote store answers exactly as a
// local one would.
func ExplainWindow(l limiter.Limit, n int64, admitted bool, now time.Time, sum, newest int64, buckets []int64, held int64) limiter.LimitDecision {
	w := NewWindow(l.Window)
	i := w.bucket(now.UnixMilli())
	w.head = i
	if buckets == nil && sum > 0 && newest > i-Buckets && newest <= i {
		buckets = []int64{newest, sum}
	}
	w.age = Buckets
	for k := 0; k+1 < len(buckets); k += 2 {
		b, c := buckets[k], buckets[k+1]
		if b > i-Buckets && b <= i && c > 0 {
			c = min(c, maxBucket-w.buckets[slot(b)])
			w.buckets[slot(b)] += c
			w.sum += c
			w.age = min(w.age, int32(i-b))
		}
	}
	w.reserved = max(held, 0)
	n = max(n, 0)
	ok := admitted || w.fits(l.Max, max(n, 1))
	return w.decide(l.Max, n, i, instantOf(now), w.sum, ok)
}

// ExplainQuota is ExplainWindow for a calendar limit: used is what the
// script saw charged in now's period.
func ExplainQuota(l limiter.Limit, n int64, admitted bool, now time.Time, used, held int64) limiter.LimitDecision {
	start, _ := l.Period.Bounds(now)
	q := Quota{period: l.Period, start: start.Unix(), used: max(used, 0), reserved: max(held, 0)}
	ok := admitted || q.fits(l.Max, max(n, 1))
	return q.decide(l.Max, now, ok)
}
