package limiter

import (
	"sync"
	"time"
)

// Clock tells the time. Stores never read the wall clock to decide; the
// processor passes Clock.Now() in.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that moves only when told. Tests use it directly;
// the server exposes it over its admin port with --fake-clock so end-to-end
// tests can cross a window without waiting for one.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
	// since, when set, makes the clock also run with real time from that
	// instant: a test can jump close to a window's end and then let a real
	// client wait out the last seconds.
	since time.Time
}

// NewManualClock starts a clock at t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{now: t} }

// NewRunningClock starts a clock at t that runs with real time and can be
// moved forward as well.
func NewRunningClock(t time.Time) *ManualClock {
	return &ManualClock{now: t, since: time.Now()}
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.since.IsZero() {
		return c.now.Add(time.Since(c.since))
	}
	return c.now
}

// Advance moves the clock by d and returns the new time.
func (c *ManualClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	if !c.since.IsZero() {
		return c.now.Add(time.Since(c.since))
	}
	return c.now
}
