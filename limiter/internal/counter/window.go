// Package counter is the arithmetic every store shares: one key's sliding
// window and calendar quota, how a decision is drawn from them, and how
// they are written to a file.
package counter

import (
	"math"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Buckets and span are limiter's, shortened.
const (
	Buckets = limiter.Buckets
	span    = limiter.Window
)

// maxBucket caps one bucket so that the sum of all Buckets of them never
// overflows an int64, whatever counts a caller or a damaged file hands us.
const maxBucket = math.MaxInt64 / Buckets

// Window is the sliding window of one key. It is pure arithmetic: no lock, no
// clock; every method takes the time, so the stores decide both.
//
// Bucket i holds the tokens charged in the Unix second s with s mod Buckets
// == i, for the seconds head-Buckets+1 through head. Tokens charged in second
// s count while now < s+Window and leave at exactly s+Window. Seconds are
// never rewound: a time before head is taken as head, so a clock stepping
// back neither loses tokens nor lets them count twice.
//
// Its 504 bytes keep a key well under the 1 KiB the spec allows.
type Window struct {
	buckets  [Buckets]int64
	head     int64 // newest second the window has been advanced to
	sum      int64 // sum of buckets, so that admission costs no loop
	reserved int64 // tokens held by requests in flight; never in a bucket
}

// slot is the bucket index of second sec, negative seconds included.
func slot(sec int64) int {
	i := sec % Buckets
	if i < 0 {
		i += Buckets
	}
	return int(i)
}

// clamp returns the second now falls in and now itself, both moved up to the
// start of head when the clock went back, so durations are measured from
// the latest time the window has seen.
func (w *Window) clamp(now time.Time) (int64, time.Time) {
	sec := now.Unix()
	if sec < w.head {
		return w.head, time.Unix(w.head, 0)
	}
	return sec, now
}

// advance moves head to sec, zeroing the buckets of the seconds that left.
func (w *Window) advance(sec int64) {
	if sec <= w.head {
		return
	}
	if sec-w.head >= Buckets {
		w.buckets = [Buckets]int64{}
		w.sum = 0
	} else {
		for s := w.head + 1; s <= sec; s++ {
			i := slot(s)
			w.sum -= w.buckets[i]
			w.buckets[i] = 0
		}
	}
	w.head = sec
}

// charged is the sum of the buckets still in the window at sec (>= head),
// computed without advancing, so that status can leave the window alone.
func (w *Window) charged(sec int64) int64 {
	if sec <= w.head {
		return w.sum
	}
	if sec-w.head >= Buckets {
		return 0
	}
	sum := w.sum
	for s := w.head + 1; s <= sec; s++ {
		// The bucket that second s will reuse holds second s-Buckets,
		// which has left by sec.
		sum -= w.buckets[slot(s)]
	}
	return sum
}

// fits reports whether need more tokens fit in limit when used are taken,
// without the overflow that used+need <= limit could hit.
func fits(used, need, limit int64) bool {
	return used <= limit && need <= limit-used
}

// reserve admits n tokens when used+reserved+max(n,1) <= limit and holds
// them until settle. A negative n counts as zero.
func (w *Window) reserve(limit, n int64, now time.Time) limiter.Decision {
	n = max(n, 0)
	sec, now := w.clamp(now)
	w.advance(sec)
	ok := fits(satAdd(w.sum, w.reserved), max(n, 1), limit)
	if ok {
		w.reserved += n
	}
	return w.decide(limit, n, sec, now, w.sum, ok)
}

// settle releases reserved tokens and charges used tokens to the second of
// now. Negative values count as zero, and no more is released than is held,
// so a confused caller cannot mint budget.
func (w *Window) settle(reserved, used int64, now time.Time) {
	sec, _ := w.clamp(now)
	w.advance(sec)
	w.reserved -= min(max(reserved, 0), w.reserved)
	if used > 0 {
		i := slot(sec)
		used = min(used, maxBucket-w.buckets[i])
		w.buckets[i] += used
		w.sum += used
	}
}

// status is reserve(limit, 0, now) without changing anything: Allowed means
// used+reserved < limit.
func (w *Window) status(limit int64, now time.Time) limiter.Decision {
	sec, now := w.clamp(now)
	charged := w.charged(sec)
	ok := fits(satAdd(charged, w.reserved), 1, limit)
	return w.decide(limit, 0, sec, now, charged, ok)
}

// Idle reports whether the window holds nothing at now: no charged token
// in the window and none reserved. An idle window can be forgotten, since a
// fresh one answers the same.
func (w *Window) Idle(now time.Time) bool {
	sec, _ := w.clamp(now)
	return w.reserved == 0 && w.charged(sec) == 0
}

// Used is the tokens charged in the window at now plus those reserved.
func (w *Window) Used(now time.Time) int64 {
	sec, _ := w.clamp(now)
	return satAdd(w.charged(sec), w.reserved)
}

// decide builds the Decision for a request of n tokens at sec (>= head),
// with charged the tokens in the window at sec. It reads only the buckets of
// seconds sec-Buckets+1 through head, which hold their own second whether or
// not the window was advanced.
func (w *Window) decide(limit, n, sec int64, now time.Time, charged int64, allowed bool) limiter.Decision {
	used := satAdd(charged, w.reserved)
	d := limiter.Decision{Allowed: allowed, Limit: limit, Used: used}
	if used < limit {
		d.Remaining = limit - used
	}
	oldest := sec - Buckets + 1
	if charged > 0 {
		for s := w.head; s >= oldest; s-- {
			if w.buckets[slot(s)] != 0 {
				d.Reset = time.Unix(s+Buckets, 0).Sub(now)
				break
			}
		}
	}
	if allowed {
		return d
	}
	need := max(n, 1)
	if !fits(w.reserved, need, limit) {
		// In-flight tokens alone block it: no expiry can help, and when
		// they settle is anyone's guess.
		d.RetryAfter = span
		return d
	}
	// Tokens that must leave; written so that it cannot overflow.
	excess := charged - (limit - w.reserved - need)
	for s := oldest; s <= w.head; s++ {
		excess -= w.buckets[slot(s)]
		if excess <= 0 {
			d.RetryAfter = time.Unix(s+Buckets, 0).Sub(now)
			break
		}
	}
	return d
}

// satAdd adds two non-negative counts, stopping at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
