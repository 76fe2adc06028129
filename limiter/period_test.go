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

// Leaves agrees with the bucket rule of Store's comment: a minute's unit
// charged at 10:00:00.250 leaves at 10:01:00; an hour's, in minute
// buckets, at the next minute's start plus the hour.
func TestLeaves(t *testing.T) {
	at := time.Date(2026, 1, 5, 10, 0, 0, 250_000_000, time.UTC)
	tests := []struct {
		l    Limit
		want time.Duration
	}{
		{Limit{Window: time.Minute}, 59750 * time.Millisecond},
		{Limit{Window: time.Hour}, time.Hour - 250*time.Millisecond},
		// 60 buckets of 16⅔ ms: .250 starts bucket 15, so a whole second.
		{Limit{Window: time.Second}, time.Second},
		{Limit{Period: Daily}, 14*time.Hour - 250*time.Millisecond},
	}
	for _, tt := range tests {
		if got := tt.l.Leaves(at); got != tt.want {
			t.Errorf("%+v: Leaves = %v, want %v", tt.l, got, tt.want)
		}
	}
	// .260 is inside bucket 15 (from .250): it leaves at 1.250.
	if got := (Limit{Window: time.Second}).Leaves(at.Add(10 * time.Millisecond)); got != 990*time.Millisecond {
		t.Errorf("one second at .260: Leaves = %v, want 990ms", got)
	}
}
