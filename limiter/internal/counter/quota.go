package counter

import (
	"math"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Quota is one key's count for its current period. Reservations are held
// apart, as in the window, and outlive a period boundary: they are settled
// into the period the request ends in.
type Quota struct {
	period   limiter.Period
	start    int64 // Unix second the counted period began
	end      int64 // Unix second it ends; 0 until rollAt works it out
	used     int64
	reserved int64
}

// rollAt moves the quota into the period of now, starting the count afresh
// when that period is a later one. A clock that went back stays in the
// period already counted. A quota whose period changed (a reload) keeps
// its count only when the new period starts where the counted one did, as
// the Redis store, which keeps no period, counts it. sec is now's Unix
// second, which callers deciding on several limits work out once.
func (q *Quota) rollAt(p limiter.Period, now time.Time, sec int64) {
	// Still in the period counted, the calendar is not asked. (An end
	// not worked out yet, 0, is behind any start a roll would keep.)
	if q.period != p || sec < q.start || sec >= q.end {
		q.rollSlow(p, now)
	}
}

// rollSlow is rollAt for a now outside the period counted: the calendar
// is asked only here.
func (q *Quota) rollSlow(p limiter.Period, now time.Time) {
	start, _ := p.Bounds(now)
	s := start.Unix()
	switch {
	case q.period != p:
		if q.period != limiter.NoPeriod && s != q.start {
			q.used = 0
		}
		q.period, q.start = p, s
	case s > q.start:
		q.start, q.used = s, 0
	}
	q.end = 0
	q.end = q.endOf()
}

// endOf is the Unix second the counted period ends.
func (q *Quota) endOf() int64 {
	if q.end != 0 {
		return q.end
	}
	return q.endOfPeriod()
}

// endOfPeriod is endOf worked out from the calendar.
func (q *Quota) endOfPeriod() int64 {
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	return end.Unix()
}

func (q *Quota) fits(limit, need int64) bool {
	return fits(satAdd(q.used, q.reserved), need, limit)
}

// decide is the quota as a decision sees it; a quota that does not admit
// the request has it wait for the period's end.
func (q *Quota) decide(limit int64, now time.Time, allowed bool) limiter.LimitDecision {
	var d limiter.LimitDecision
	q.decideInto(&d, limit, momentOf(now), allowed)
	return d
}

// decideInto is decide writing into d, as Window.decideInto.
func (q *Quota) decideInto(d *limiter.LimitDecision, limit int64, now moment, allowed bool) {
	used := satAdd(q.used, q.reserved)
	end := q.endOf()
	var reset time.Duration
	if now.sec < end {
		reset = time.Duration(end-now.sec)*time.Second - time.Duration(now.nsec)
	}
	*d = limiter.LimitDecision{Max: limit, Used: used, Remaining: max(limit-used, 0), Reset: reset}
	if !allowed {
		d.RetryAfter = reset
	}
}

// reserveInto is Window.reserveInto for the quota of period p.
func (q *Quota) reserveInto(d *limiter.LimitDecision, limit, need int64, p limiter.Period, now moment) bool {
	q.rollAt(p, now.t, now.sec)
	used := satAdd(q.used, q.reserved)
	if !fits(used, max(need, 1), limit) {
		return false
	}
	q.reserved += need
	used += need // within limit: see Window.reserveInto
	*d = limiter.LimitDecision{Max: limit, Used: used, Remaining: limit - used, Reset: q.reset(now)}
	return true
}

// chargeInto is Window.chargeInto for the quota of period p.
func (q *Quota) chargeInto(d *limiter.LimitDecision, limit, used int64, p limiter.Period, now moment) bool {
	q.rollAt(p, now.t, now.sec)
	if used > 0 {
		q.used = satAdd(q.used, used)
	}
	u := satAdd(q.used, q.reserved)
	ok := u < limit // fits(u, 1, limit)
	reset := q.reset(now)
	*d = limiter.LimitDecision{Max: limit, Used: u, Remaining: max(limit-u, 0), Reset: reset}
	if !ok {
		d.RetryAfter = reset
	}
	return ok
}

// reset is the time until the counted period ends, for a quota just
// rolled into now's period (which ends after now, its end worked out).
func (q *Quota) reset(now moment) time.Duration {
	return time.Duration(q.end-now.sec)*time.Second - time.Duration(now.nsec)
}

func (q *Quota) release(reserved int64) {
	q.reserved -= min(max(reserved, 0), q.reserved)
}

func (q *Quota) settle(reserved, used int64) {
	q.reserved -= min(max(reserved, 0), q.reserved)
	if used > 0 {
		q.used = satAdd(q.used, used)
	}
}

// quietFrom is the Unix millisecond from which nothing used counts: the
// end of the period counted (math.MinInt64 when nothing is used).
func (q *Quota) quietFrom() int64 {
	if q.used == 0 {
		return math.MinInt64
	}
	return q.endOf() * 1000
}

// Idle reports whether the quota holds nothing that a fresh one would not:
// nothing reserved, and nothing used in a period still running at now.
func (q *Quota) Idle(now time.Time) bool {
	return q.reserved == 0 && now.UnixMilli() >= q.quietFrom()
}
