package limiter

import (
	"testing"
	"time"
)

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
