package limiter

import (
	"context"
	"os"
	"path/filepath"
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

// TestQuotaAcrossBoundaries spends a quota just before each period's end
// and finds it whole just after.
func TestQuotaAcrossBoundaries(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		p           Period
		last, first time.Time // the last second of a period, the first of the next
	}{
		{Hourly, utc(2026, 5, 5, 10, 59, 59), utc(2026, 5, 5, 11, 0, 0)},
		{Daily, utc(2026, 5, 5, 23, 59, 59), utc(2026, 5, 6, 0, 0, 0)},
		{Weekly, utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 30, 0, 0, 0)}, // Sunday → Monday
		{Monthly, utc(2026, 2, 28, 23, 59, 59), utc(2026, 3, 1, 0, 0, 0)},
		{Monthly, utc(2028, 2, 29, 23, 59, 59), utc(2028, 3, 1, 0, 0, 0)},
		{Monthly, utc(2026, 6, 30, 23, 59, 59), utc(2026, 7, 1, 0, 0, 0)},
		{Monthly, utc(2026, 7, 31, 23, 59, 59), utc(2026, 8, 1, 0, 0, 0)},
		{Yearly, utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.p.String()+"/"+tt.first.Format("2006-01-02T15"), func(t *testing.T) {
			m := NewMemory()
			lim := Limits{Quota: 1000, Period: tt.p}
			lastMs := tt.last.Add(500 * time.Millisecond)
			if d, _ := m.Reserve(ctx, "k", lim, 600, tt.last); !d.Allowed {
				t.Fatalf("first reserve refused: %+v", d)
			}
			m.Settle(ctx, "k", lim, Hold{Tokens: 600}, 1000, tt.last)
			d, _ := m.Reserve(ctx, "k", lim, 0, lastMs)
			if d.Allowed || d.Reason != QuotaExceeded || d.RetryAfter != 500*time.Millisecond || d.Quota.Remaining != 0 {
				t.Fatalf("spent quota at %s: %+v, want QuotaExceeded retry 500ms", lastMs, d)
			}
			if d.Limit != 0 || d.Remaining != 0 {
				t.Errorf("a quota-only key advertises a window: %+v", d)
			}
			d, _ = m.Reserve(ctx, "k", lim, 10, tt.first)
			_, end := tt.p.Bounds(tt.first)
			if !d.Allowed || d.Quota.Used != 10 || d.Quota.Remaining != 990 || d.Quota.Reset != end.Sub(tt.first) {
				t.Fatalf("next period at %s: %+v", tt.first, d)
			}
		})
	}
}

func TestQuotaAndWindowTogether(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := utc(2026, 5, 5, 10, 0, 0)
	lim := Limits{TokensPerMinute: 100, Quota: 150, Period: Daily}
	steps := []struct {
		advance time.Duration
		n       int64
		used    int64 // settled when admitted
		allowed bool
		reason  Reason
	}{
		{0, 50, 90, true, ReasonNone},
		{0, 20, 0, false, RateLimited},               // window: 90+20 > 100
		{60 * time.Second, 50, 50, true, ReasonNone}, // window empty again; quota 90+50 = 140
		{60 * time.Second, 20, 0, false, QuotaExceeded},
		{60 * time.Second, 10, 10, true, ReasonNone}, // 140+10 = 150 fits exactly
		{0, 0, 0, false, QuotaExceeded},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		d, _ := m.Reserve(ctx, "k", lim, st.n, now)
		if d.Allowed != st.allowed || d.Reason != st.reason {
			t.Fatalf("step %d: %+v, want allowed %v reason %v", i, d, st.allowed, st.reason)
		}
		if d.Allowed {
			m.Settle(ctx, "k", lim, Hold{Tokens: st.n}, st.used, now)
		}
	}
	d, _ := m.Status(ctx, "k", lim, now)
	if d.Quota.Used != 150 || d.Quota.Remaining != 0 || d.Allowed || d.Reason != QuotaExceeded {
		t.Errorf("status %+v", d)
	}
}

func TestQuotaOutlivesIdleWindow(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	lim := Limits{Quota: 100, Period: Monthly}
	now := utc(2026, 5, 5, 10, 0, 0)
	m.Reserve(ctx, "k", lim, 40, now)
	m.Settle(ctx, "k", lim, Hold{Tokens: 40}, 40, now)
	// Hours later the window is empty, but the month's 40 must stay.
	later := now.Add(5 * time.Hour)
	if n := m.Sweep(later); n != 0 {
		t.Fatalf("sweep forgot %d keys holding a running quota", n)
	}
	if d, _ := m.Status(ctx, "k", lim, later); d.Quota.Used != 40 {
		t.Fatalf("quota used %d after sweep, want 40", d.Quota.Used)
	}
	if n := m.Sweep(utc(2026, 6, 1, 0, 0, 0)); n != 1 {
		t.Errorf("sweep after the month forgot %d keys, want 1", n)
	}
}

// TestBoltQuotaSurvivesCrash settles a quota and, without a flush or a
// close, copies the file as a killed process would leave it.
func TestBoltQuotaSurvivesCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	now := utc(2026, 5, 5, 10, 0, 0)
	clock := NewManualClock(now)
	b := openBolt(t, path, clock, time.Hour) // no flush will run
	lim := Limits{TokensPerMinute: 1000, Quota: 5000, Period: Monthly}
	for i := 0; i < 3; i++ {
		b.Reserve(ctx, "k", lim, 100, now)
		if _, err := b.Settle(ctx, "k", lim, Hold{Tokens: 100}, 300, now); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustClose(t, b)
	clock.Advance(10 * time.Minute)
	r := openBolt(t, crashed, clock, time.Hour)
	defer mustClose(t, r)
	d, _ := r.Status(ctx, "k", lim, clock.Now())
	if d.Quota.Used != 900 {
		t.Errorf("quota after crash: used %d, want 900 (every settle persisted)", d.Quota.Used)
	}
	if d.Used != 0 {
		t.Errorf("window after crash and 10 minutes: used %d, want 0", d.Used)
	}
	// A month later the quota is gone from the file too.
	mustClose(t, r)
	clock2 := NewManualClock(utc(2026, 6, 1, 0, 0, 1))
	r2 := openBolt(t, crashed, clock2, time.Hour)
	if d, _ := r2.Status(ctx, "k", lim, clock2.Now()); d.Quota.Used != 0 {
		t.Errorf("next month: used %d, want 0", d.Quota.Used)
	}
	mustClose(t, r2)
}

func TestRunningClock(t *testing.T) {
	start := utc(2026, 1, 1, 0, 0, 0)
	c := NewRunningClock(start)
	got := c.Advance(time.Hour)
	if got.Before(start.Add(time.Hour)) || got.After(start.Add(time.Hour+time.Minute)) {
		t.Errorf("Advance returned %s", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !c.Now().After(got) {
		if time.Now().After(deadline) {
			t.Fatal("a running clock did not move with real time")
		}
		time.Sleep(time.Millisecond)
	}
}
