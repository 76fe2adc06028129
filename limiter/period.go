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
