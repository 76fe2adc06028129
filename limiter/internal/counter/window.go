// Package counter is the arithmetic every store shares: one key's sliding
// window and calendar quota, how a decision is drawn from them, and how
// they are written to a file.
package counter

import (
	"math"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Buckets is limiter's; span is the zero Window's, the Store's minute
// window, and minute the same in milliseconds.
const (
	Buckets = limiter.Buckets
	span    = limiter.Window
	minute  = int64(span / time.Millisecond)
)

// maxBucket caps one bucket so that the sum of all Buckets of them never
// overflows an int64, whatever counts a caller or a damaged file hands us.
const maxBucket = math.MaxInt64 / Buckets

// Window is the sliding window of one key's limit. It is pure arithmetic:
// no lock, no clock; every method takes the time, so the stores decide
// both.
//
// Its span (the window's length, in milliseconds; the zero Window's is a
// minute) is cut into Buckets buckets: bucket i holds the units charged
// in the milliseconds t with floor(t*Buckets/span) == i, which start at
// start(i) = ceil(i*span/Buckets). Bucket i is kept in slot i mod Buckets,
// for the buckets head-Buckets+1 through head. Units charged in bucket i
// count while now is before start(i)+span, the start of bucket
// i+Buckets, and leave then: between span minus one bucket and span
// after they were charged. For the minute, buckets are Unix seconds and
// units charged in second s leave at exactly s+60. Buckets are never
// rewound: a time before head is taken as head, so a clock stepping back
// neither loses units nor lets them count twice.
//
// Its 512 bytes keep a key well under the 1 KiB the spec allows.
type Window struct {
	buckets  [Buckets]int64
	head     int64 // newest bucket the window has been advanced to
	sum      int64 // sum of buckets, so that admission costs no loop
	reserved int64 // units held by requests in flight; never in a bucket
	span     int32 // ms (MaxWindow is 86,400,000); 0 is a minute
	// age is head minus the newest bucket units were charged to, at most
	// Buckets: while the window holds any, that bucket is the newest
	// holding some, so that Reset and Idle read no bucket. (An age rather
	// than the bucket keeps the window in 512 bytes.)
	age int32
}

// NewWindow returns an empty window of span (limiter.MinWindow to
// limiter.MaxWindow, in whole milliseconds; the caller checks).
func NewWindow(span time.Duration) Window {
	ms := int64(span / time.Millisecond)
	if ms == minute {
		ms = 0 // the zero Window's: a minute window compares equal to one
	}
	return Window{span: int32(ms)}
}

// Span is the window's length.
func (w *Window) Span() time.Duration { return time.Duration(w.spanMs()) * time.Millisecond }

func (w *Window) spanMs() int64 {
	if w.span == 0 {
		return minute
	}
	return int64(w.span)
}

// bucket is the bucket of the Unix millisecond ms.
func (w *Window) bucket(ms int64) int64 {
	if w.span == 0 {
		return floorDiv(ms, 1000)
	}
	return floorDiv(ms*Buckets, int64(w.span))
}

// start is the first Unix millisecond of bucket i.
func (w *Window) start(i int64) int64 {
	if w.span == 0 {
		return i * 1000
	}
	return -floorDiv(-i*int64(w.span), Buckets)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// slot is the index in buckets of bucket i, negative ones included.
func slot(i int64) int {
	s := i % Buckets
	if s < 0 {
		s += Buckets
	}
	return int(s)
}

// instant is a time as the window measures it: its Unix millisecond, and
// the nanoseconds past it.
type instant struct{ ms, ns int64 }

func instantOf(t time.Time) instant {
	return instant{t.UnixMilli(), int64(t.Nanosecond() % 1e6)}
}

// moment is a call's now in every form its limits read, worked out once
// per call rather than once per limit.
type moment struct {
	t    time.Time
	at   instant
	sec  int64 // Unix second
	nsec int64 // nanoseconds past sec
}

func momentOf(t time.Time) moment {
	sec, nsec := t.Unix(), int64(t.Nanosecond())
	return moment{t: t, at: instant{sec*1000 + nsec/1e6, nsec % 1e6}, sec: sec, nsec: nsec}
}

// clamp returns the bucket now falls in and now itself, both moved up to
// the start of head when the clock went back, so durations are measured
// from the latest time the window has seen.
func (w *Window) clamp(now time.Time) (int64, instant) {
	return w.clampAt(instantOf(now))
}

// clampAt is clamp for a time already converted.
func (w *Window) clampAt(at instant) (int64, instant) {
	if w.span != 0 && at.ms >= w.start(w.head) && at.ms < w.start(w.head+1) {
		// Still in head: bounds divide by Buckets, a constant, where
		// bucket divides by the span.
		return w.head, at
	}
	if i := w.bucket(at.ms); i >= w.head {
		return i, at
	}
	return w.head, instant{ms: w.start(w.head)}
}

// advance moves head to bucket i, zeroing the buckets that left.
func (w *Window) advance(i int64) {
	if i > w.head {
		w.advanceTo(i)
	}
}

// advanceTo is advance to a bucket after head.
func (w *Window) advanceTo(i int64) {
	if i-w.head >= Buckets {
		w.buckets = [Buckets]int64{}
		w.sum = 0
		w.age = Buckets
	} else {
		for b := w.head + 1; b <= i; b++ {
			s := slot(b)
			w.sum -= w.buckets[s]
			w.buckets[s] = 0
		}
		w.age = min(w.age+int32(i-w.head), Buckets)
	}
	w.head = i
}

// moveTo clamps *now as clampAt does, advances the window to its bucket,
// and returns that bucket, the head. (Through a pointer, so that the
// common case costs no call.)
func (w *Window) moveTo(now *instant) int64 {
	// A minute window's head, the common case, is told without a
	// division (and within the inliner's budget).
	if w.span != 0 || uint64(now.ms-w.head*1000) >= 1000 {
		w.moveSlow(now)
	}
	return w.head
}

// moveSlow is moveTo for a time outside a minute window's head.
func (w *Window) moveSlow(now *instant) {
	var k int64
	k, *now = w.clampAt(*now)
	w.advance(k)
}

// newest is the newest bucket charged: while the window holds units, the
// newest holding some.
func (w *Window) newest() int64 { return w.head - int64(w.age) }

// charged is the sum of the buckets still in the window at bucket i (>=
// head), computed without advancing, so that status can leave the window
// alone.
func (w *Window) charged(i int64) int64 {
	if i <= w.head {
		return w.sum
	}
	if i-w.head >= Buckets {
		return 0
	}
	sum := w.sum
	for b := w.head + 1; b <= i; b++ {
		// The slot that bucket b will reuse holds bucket b-Buckets,
		// which has left by i.
		sum -= w.buckets[slot(b)]
	}
	return sum
}

// fits reports whether need more units fit in limit when used are taken,
// without the overflow that used+need <= limit could hit.
func fits(used, need, limit int64) bool {
	return used <= limit && need <= limit-used
}

// reserveInto holds need units at now when they fit in limit beside those
// charged and held, and then draws the decision into d; it reports whether
// they fit (when not, nothing is held and d is left alone). It is
// ReserveMany's arithmetic for a window, in one call.
func (w *Window) reserveInto(d *limiter.LimitDecision, limit, need int64, now instant) bool {
	w.moveTo(&now)
	used := satAdd(w.sum, w.reserved)
	if !fits(used, max(need, 1), limit) {
		return false
	}
	w.reserved += need
	// Drawn here rather than by draw: what fits already worked out
	// bounds used, which then needs neither saturating nor flooring.
	used += need
	*d = limiter.LimitDecision{Max: limit, Used: used, Remaining: limit - used, Reset: w.reset(now)}
	return true
}

// chargeInto charges used units at now and draws into d the decision of
// a request of nothing right after; it reports whether one would be
// admitted. It is SettleMany's arithmetic for a window, in one call.
func (w *Window) chargeInto(d *limiter.LimitDecision, limit, used int64, now instant) bool {
	k := w.moveTo(&now)
	w.add(k, used)
	u := satAdd(w.sum, w.reserved)
	ok := u < limit // fits(u, 1, limit)
	*d = limiter.LimitDecision{Max: limit, Used: u, Remaining: max(limit-u, 0), Reset: w.reset(now)}
	if !ok {
		d.RetryAfter = w.retryAfter(limit, 0, k, now, w.sum)
	}
	return ok
}

// reserve admits n units when used+reserved+max(n,1) <= limit and holds
// them until settle. A negative n counts as zero.
func (w *Window) reserve(limit, n int64, now time.Time) limiter.Decision {
	n = max(n, 0)
	ok, ld := w.tryReserve(limit, n, now)
	return windowDecision(ok, ld)
}

// tryReserve is reserve's arithmetic: whether n fits, held if so, and the
// limit as the decision sees it after.
func (w *Window) tryReserve(limit, n int64, now time.Time) (bool, limiter.LimitDecision) {
	at := instantOf(now)
	i := w.moveTo(&at)
	ok := w.fits(limit, max(n, 1))
	if ok {
		w.reserved += n
	}
	return ok, w.decide(limit, n, i, at, w.sum, ok)
}

// fits reports whether need more units fit in limit beside those charged
// and held, for a window just advanced.
func (w *Window) fits(limit, need int64) bool {
	return fits(satAdd(w.sum, w.reserved), need, limit)
}

// settle releases reserved units and charges used units to the bucket of
// now. Negative values count as zero, and no more is released than is
// held, so a confused caller cannot mint budget.
func (w *Window) settle(reserved, used int64, now time.Time) {
	w.release(reserved)
	w.charge(used, now)
}

// release lets go of reserved held units, no more than are held.
func (w *Window) release(reserved int64) {
	w.reserved -= min(max(reserved, 0), w.reserved)
}

// charge adds used units to the bucket of now.
func (w *Window) charge(used int64, now time.Time) { w.chargeAt(used, instantOf(now)) }

func (w *Window) chargeAt(used int64, now instant) {
	w.add(w.moveTo(&now), used)
}

// add charges used units to bucket i, the head.
func (w *Window) add(i, used int64) {
	if used > 0 {
		s := slot(i)
		used = min(used, maxBucket-w.buckets[s])
		w.buckets[s] += used
		w.sum += used
		w.age = 0
	}
}

// status is reserve(limit, 0, now) without changing anything: Allowed
// means used+reserved < limit.
func (w *Window) status(limit int64, now time.Time) limiter.Decision {
	return windowDecision(w.peek(limit, now))
}

// peek is status's arithmetic.
func (w *Window) peek(limit int64, now time.Time) (bool, limiter.LimitDecision) {
	i, at := w.clamp(now)
	charged := w.charged(i)
	ok := fits(satAdd(charged, w.reserved), 1, limit)
	return ok, w.decide(limit, 0, i, at, charged, ok)
}

// windowDecision is a window's answer as the Store's single-limit calls
// give it.
func windowDecision(ok bool, ld limiter.LimitDecision) limiter.Decision {
	return limiter.Decision{Allowed: ok, Limit: ld.Max, Used: ld.Used, Remaining: ld.Remaining, Reset: ld.Reset, RetryAfter: ld.RetryAfter}
}

// Idle reports whether the window holds nothing at now: no charged unit
// in the window and none reserved. An idle window can be forgotten, since
// a fresh one answers the same.
func (w *Window) Idle(now time.Time) bool {
	return w.reserved == 0 && now.UnixMilli() >= w.quietFrom()
}

// quietFrom is the Unix millisecond from which no unit charged counts
// (math.MinInt64 when none does): the start of the bucket in which the
// newest bucket charged leaves. The newest bucket charged holds units
// (see newest), so no bucket is read, as the sweep asks this of many
// keys; and a time before head (a clock stepped back) is before it too.
func (w *Window) quietFrom() int64 {
	if w.sum == 0 {
		return math.MinInt64
	}
	return w.start(w.newest() + Buckets)
}

// Used is the units charged in the window at now plus those reserved.
func (w *Window) Used(now time.Time) int64 {
	i, _ := w.clamp(now)
	return satAdd(w.charged(i), w.reserved)
}

// decide draws the limit's figures for a request of n units at bucket i
// (>= head), with charged the units in the window at i. It reads only the
// buckets i-Buckets+1 through head, which hold their own bucket whether or
// not the window was advanced.
func (w *Window) decide(limit, n, i int64, now instant, charged int64, allowed bool) limiter.LimitDecision {
	var d limiter.LimitDecision
	w.decideInto(&d, limit, n, i, now, charged, allowed)
	return d
}

// decideInto is decide writing into d: a Budget's decisions are drawn
// straight into the caller's slice, as returning each by value through
// every caller cost more than drawing it.
func (w *Window) decideInto(d *limiter.LimitDecision, limit, n, i int64, now instant, charged int64, allowed bool) {
	w.draw(d, limit, charged, now)
	if !allowed {
		d.RetryAfter = w.retryAfter(limit, n, i, now, charged)
	}
}

// draw is decideInto for a request the limit admits.
func (w *Window) draw(d *limiter.LimitDecision, limit int64, charged int64, now instant) {
	used := satAdd(charged, w.reserved)
	var reset time.Duration
	if charged > 0 {
		reset = w.reset(now)
	}
	*d = limiter.LimitDecision{Max: limit, Used: used, Remaining: max(limit-used, 0), Reset: reset}
}

// reset is the time until every unit charged has left the window, for a
// window advanced to now.
func (w *Window) reset(now instant) time.Duration {
	if w.sum == 0 {
		return 0
	}
	// Units are charged only to the head, which never goes back: the
	// newest bucket charged is the newest that holds any, and still in
	// the window, or the window would hold nothing.
	return w.leaves(w.newest(), now)
}

// retryAfter is the time until n units fit in limit, for a request at
// bucket i that they do not fit now.
func (w *Window) retryAfter(limit, n, i int64, now instant, charged int64) time.Duration {
	need := max(n, 1)
	if !fits(w.reserved, need, limit) {
		// In-flight units alone block it: no expiry can help, and when
		// they settle is anyone's guess.
		return w.Span()
	}
	// Units that must leave; written so that it cannot overflow.
	excess := charged - (limit - w.reserved - need)
	for b := i - Buckets + 1; b <= w.head; b++ {
		excess -= w.buckets[slot(b)]
		if excess <= 0 {
			return w.leaves(b, now)
		}
	}
	return 0
}

// leaves is the time from now until the units of bucket b leave.
func (w *Window) leaves(b int64, now instant) time.Duration {
	return time.Duration(w.start(b+Buckets)-now.ms)*time.Millisecond - time.Duration(now.ns)
}

// satAdd adds two non-negative counts, stopping at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
