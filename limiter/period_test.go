package limiter

import (
	"testing"
	"time"
)

func utc(y int, m time.Month, d, h, min, sec int) time.Time {
	return time.Date(y, m, d, h, min, sec, 0, time.UTC)
}

func TestPeriodBounds(t *testing.T) {
	tests := []struct {
		p          Period
		at         time.Time
		start, end time.Time
	}{
		{Hourly, utc(2026, 3, 1, 13, 59, 59), utc(2026, 3, 1, 13, 0, 0), utc(2026, 3, 1, 14, 0, 0)},
		{Hourly, utc(2026, 12, 31, 23, 30, 0), utc(2026, 12, 31, 23, 0, 0), utc(2027, 1, 1, 0, 0, 0)},
		{Daily, utc(2026, 3, 1, 23, 59, 59), utc(2026, 3, 1, 0, 0, 0), utc(2026, 3, 2, 0, 0, 0)},
		{Daily, utc(2026, 3, 2, 0, 0, 0), utc(2026, 3, 2, 0, 0, 0), utc(2026, 3, 3, 0, 0, 0)},
		// 2026-11-29 is a Sunday, 2026-11-30 a Monday.
		{Weekly, utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 23, 0, 0, 0), utc(2026, 11, 30, 0, 0, 0)},
		{Weekly, utc(2026, 11, 30, 0, 0, 0), utc(2026, 11, 30, 0, 0, 0), utc(2026, 12, 7, 0, 0, 0)},
		{Weekly, utc(2026, 12, 31, 12, 0, 0), utc(2026, 12, 28, 0, 0, 0), utc(2027, 1, 4, 0, 0, 0)},
		{Monthly, utc(2026, 2, 28, 23, 59, 59), utc(2026, 2, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0)}, // 28 days
		{Monthly, utc(2028, 2, 29, 12, 0, 0), utc(2028, 2, 1, 0, 0, 0), utc(2028, 3, 1, 0, 0, 0)},   // 29 days
		{Monthly, utc(2026, 4, 30, 23, 59, 59), utc(2026, 4, 1, 0, 0, 0), utc(2026, 5, 1, 0, 0, 0)}, // 30 days
		{Monthly, utc(2026, 1, 31, 23, 59, 59), utc(2026, 1, 1, 0, 0, 0), utc(2026, 2, 1, 0, 0, 0)}, // 31 days
		{Monthly, utc(2026, 12, 15, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)},
		{Yearly, utc(2026, 12, 31, 23, 59, 59), utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)},
		{Yearly, utc(2027, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0), utc(2028, 1, 1, 0, 0, 0)},
		// A time in another zone is placed in UTC's period.
		{Daily, time.Date(2026, 3, 1, 23, 0, 0, 0, time.FixedZone("UTC-5", -5*3600)), utc(2026, 3, 2, 0, 0, 0), utc(2026, 3, 3, 0, 0, 0)},
	}
	for i, tt := range tests {
		start, end := tt.p.Bounds(tt.at)
		if !start.Equal(tt.start) || !end.Equal(tt.end) {
			t.Errorf("step %d: %s of %s = [%s, %s), want [%s, %s)", i, tt.p, tt.at, start, end, tt.start, tt.end)
		}
	}
}

func TestParsePeriod(t *testing.T) {
	for _, p := range []Period{Hourly, Daily, Weekly, Monthly, Yearly} {
		if got, err := ParsePeriod(p.String()); err != nil || got != p {
			t.Errorf("ParsePeriod(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePeriod("fortnightly"); err == nil {
		t.Error("fortnightly: want error")
	}
}
