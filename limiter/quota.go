package limiter

import (
	"fmt"
	"time"
)

// Period is a quota's calendar period. Periods are fixed, in UTC, as APIM
// counts them: a daily quota resets at midnight UTC, not 24 hours after the
// first request.
type Period uint8

// The periods; weeks are ISO weeks, starting on Monday.
const (
	NoPeriod Period = iota
	Hourly
	Daily
	Weekly
	Monthly
	Yearly
)

var periodNames = [...]string{"", "hourly", "daily", "weekly", "monthly", "yearly"}

func (p Period) String() string {
	if int(p) < len(periodNames) {
		return periodNames[p]
	}
	return fmt.Sprintf("Period(%d)", uint8(p))
}

// ParsePeriod reads a period's name as the config spells it.
func ParsePeriod(s string) (Period, error) {
	for i, n := range periodNames {
		if i > 0 && n == s {
			return Period(i), nil
		}
	}
	return NoPeriod, fmt.Errorf("must be hourly, daily, weekly, monthly or yearly, got %q", s)
}

// Bounds returns the period containing t: [start, end).
func (p Period) Bounds(t time.Time) (start, end time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	switch p {
	case Hourly:
		start = t.Truncate(time.Hour)
		return start, start.Add(time.Hour)
	case Daily:
		start = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	case Weekly:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		start = time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 7)
	case Monthly:
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	case Yearly:
		start = time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(1, 0, 0)
	}
	return time.Time{}, time.Time{}
}

// quota is one key's count for its current period. Reservations are held
// apart, as in the window, and outlive a period boundary: they are settled
// into the period the request ends in.
type quota struct {
	period   Period
	start    int64 // Unix second the counted period began
	used     int64
	reserved int64
}

// roll moves the quota into the period of now, starting the count afresh
// when that period is a later one. A clock that went back stays in the
// period already counted.
func (q *quota) roll(p Period, now time.Time) {
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

func (q *quota) fits(limit, need int64) bool {
	return fits(satAdd(q.used, q.reserved), need, limit)
}

func (q *quota) state(limit int64, now time.Time) QuotaState {
	used := satAdd(q.used, q.reserved)
	st := QuotaState{Limit: limit, Used: used}
	if used < limit {
		st.Remaining = limit - used
	}
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	if now.Before(end) {
		st.Reset = end.Sub(now)
	}
	return st
}

func (q *quota) settle(reserved, used int64) {
	q.reserved -= min(max(reserved, 0), q.reserved)
	if used > 0 {
		q.used = satAdd(q.used, used)
	}
}

// idle reports whether the quota holds nothing that a fresh one would not:
// nothing reserved, and nothing used in a period still running at now.
func (q *quota) idle(now time.Time) bool {
	if q.reserved != 0 {
		return false
	}
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	return q.used == 0 || !now.Before(end)
}
