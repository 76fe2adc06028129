package counter

import (
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Quota is one key's count for its current period. Reservations are held
// apart, as in the window, and outlive a period boundary: they are settled
// into the period the request ends in.
type Quota struct {
	period   limiter.Period
	start    int64 // Unix second the counted period began
	used     int64
	reserved int64
}

// roll moves the quota into the period of now, starting the count afresh
// when that period is a later one. A clock that went back stays in the
// period already counted.
func (q *Quota) roll(p limiter.Period, now time.Time) {
	start, _ := p.Bounds(now)
	s := start.Unix()
	if q.period != p {
		q.period, q.start = p, s
		return
	}
	if s > q.start {
		q.start, q.used = s, 0
	}
}

func (q *Quota) fits(limit, need int64) bool {
	return fits(satAdd(q.used, q.reserved), need, limit)
}

func (q *Quota) state(limit int64, now time.Time) limiter.QuotaState {
	used := satAdd(q.used, q.reserved)
	st := limiter.QuotaState{Limit: limit, Used: used}
	if used < limit {
		st.Remaining = limit - used
	}
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	if now.Before(end) {
		st.Reset = end.Sub(now)
	}
	return st
}

func (q *Quota) settle(reserved, used int64) {
	q.reserved -= min(max(reserved, 0), q.reserved)
	if used > 0 {
		q.used = satAdd(q.used, used)
	}
}

// Idle reports whether the quota holds nothing that a fresh one would not:
// nothing reserved, and nothing used in a period still running at now.
func (q *Quota) Idle(now time.Time) bool {
	if q.reserved != 0 {
		return false
	}
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	return q.used == 0 || !now.Before(end)
}
