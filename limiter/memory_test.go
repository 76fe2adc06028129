package limiter

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mustReserve calls Reserve and fails the test on error.
func mustReserve(t *testing.T, st Store, key string, limit, n int64, now time.Time) Decision {
	t.Helper()
	d, err := st.Reserve(context.Background(), key, Limits{TokensPerMinute: limit}, n, now)
	if err != nil {
		t.Fatalf("Reserve(%q, %d, %d): %v", key, limit, n, err)
	}
	return d
}

func mustSettle(t *testing.T, st Store, key string, reserved, used int64, now time.Time) {
	t.Helper()
	if _, err := st.Settle(context.Background(), key, Limits{}, Hold{Tokens: reserved}, used, now); err != nil {
		t.Fatalf("Settle(%q, %d, %d): %v", key, reserved, used, err)
	}
}

func mustStatus(t *testing.T, st Store, key string, limit int64, now time.Time) Decision {
	t.Helper()
	d, err := st.Status(context.Background(), key, Limits{TokensPerMinute: limit}, now)
	if err != nil {
		t.Fatalf("Status(%q, %d): %v", key, limit, err)
	}
	return d
}

// wantUsed checks the tokens a key has in its window at now.
func wantUsed(t *testing.T, st Store, key string, now time.Time, want int64) {
	t.Helper()
	if got := mustStatus(t, st, key, 1000, now).Used; got != want {
		t.Errorf("%s at t0+%v: used %d, want %d", key, now.Sub(t0), got, want)
	}
}

func TestMemoryKeysAreApart(t *testing.T) {
	m := NewMemory()
	defer m.Close()
	if d := mustReserve(t, m, "a", 100, 60, at(0)); !d.Allowed {
		t.Fatalf("a: refused: %+v", d)
	}
	if d := mustReserve(t, m, "b", 100, 60, at(0)); !d.Allowed {
		t.Fatalf("b: refused: %+v", d)
	}
	mustSettle(t, m, "a", 60, 70, at(1*s))
	mustSettle(t, m, "b", 60, 5, at(1*s))
	wantUsed(t, m, "a", at(2*s), 70)
	wantUsed(t, m, "b", at(2*s), 5)
	wantUsed(t, m, "c", at(2*s), 0)
	want := Decision{Reason: RateLimited, Limit: 100, Used: 70, Remaining: 30, RetryAfter: 59 * s, Reset: 59 * s}
	if d := mustReserve(t, m, "a", 100, 31, at(2*s)); d != want {
		t.Errorf("a:\n got %+v\nwant %+v", d, want)
	}
}

// TestMemoryNoOvershoot has many goroutines reserve on one key and never
// settle: exactly limit/n of them may get in, never more.
func TestMemoryNoOvershoot(t *testing.T) {
	const (
		limit      = 1000
		n          = 7
		goroutines = 64
		tries      = 200
	)
	m := NewMemory()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				now := at(time.Duration(g+i) * ms)
				d, _ := m.Reserve(context.Background(), "k", Limits{TokensPerMinute: limit}, n, now)
				if d.Allowed {
					admitted.Add(1)
				}
				if d.Used > limit {
					t.Errorf("goroutine %d try %d: used %d > limit", g, i, d.Used)
				}
			}
		}()
	}
	wg.Wait()
	if got, want := admitted.Load(), int64(limit/n); got != want {
		t.Errorf("admitted %d requests of %d tokens, want %d", got, n, want)
	}
}

// TestMemoryConcurrentKeys mixes every call over a few keys so the race
// detector sees them all, and checks the charges add up.
func TestMemoryConcurrentKeys(t *testing.T) {
	m := NewMemory()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint("k", g%4)
			for i := range 500 {
				now := at(time.Duration(i) * ms)
				d, _ := m.Reserve(context.Background(), key, Limits{TokensPerMinute: 1 << 40}, 3, now)
				if !d.Allowed {
					t.Errorf("%s: refused: %+v", key, d)
					return
				}
				_, _ = m.Status(context.Background(), key, Limits{TokensPerMinute: 1 << 40}, now)
				_, _ = m.Settle(context.Background(), key, Limits{}, Hold{Tokens: 3}, 2, now)
			}
		}()
	}
	wg.Wait()
	for k := range 4 {
		wantUsed(t, m, fmt.Sprint("k", k), at(1*s), 4*500*2)
	}
}

func TestMemoryForgetsIdleKeys(t *testing.T) {
	m := NewMemory()
	// Nothing to keep: a check, a refusal, a reservation released unused.
	mustReserve(t, m, "check", 100, 0, at(0))
	mustReserve(t, m, "refused", 100, 101, at(0))
	mustReserve(t, m, "released", 100, 10, at(0))
	mustSettle(t, m, "released", 10, 0, at(0))
	mustSettle(t, m, "nothing", 0, 0, at(0))
	mustStatus(t, m, "status", 100, at(0))
	if got := m.Len(); got != 0 {
		t.Fatalf("step 1: got %d keys, want 0", got)
	}

	const keys = 1000
	for i := range keys {
		mustSettle(t, m, fmt.Sprint("old", i), 0, 1, at(0))
	}
	mustSettle(t, m, "new", 0, 1, at(30*s))
	mustReserve(t, m, "held", 100, 1, at(0))
	if got := m.Len(); got != keys+2 {
		t.Fatalf("step 2: got %d keys, want %d", got, keys+2)
	}
	if got := m.Sweep(at(59 * s)); got != 0 {
		t.Errorf("step 3: swept %d keys at t0+59s, want 0", got)
	}

	// The calls themselves sweep: enough of them go through every shard.
	for range 20 {
		for i := range keys {
			mustStatus(t, m, fmt.Sprint("old", i), 100, at(60*s))
		}
	}
	if got := m.Len(); got != 2 {
		t.Errorf("step 4: got %d keys, want 2 (new and held)", got)
	}
	wantUsed(t, m, "new", at(60*s), 1)

	if got := m.Sweep(at(90 * s)); got != 1 {
		t.Errorf("step 5: swept %d keys at t0+90s, want 1", got)
	}
	mustSettle(t, m, "held", 1, 0, at(90*s))
	if got := m.Len(); got != 0 {
		t.Errorf("step 6: got %d keys, want 0", got)
	}
}

// TestMemoryPerKey checks the spec's bound of 1 KiB per active key, map and
// sweep bookkeeping included.
func TestMemoryPerKey(t *testing.T) {
	const keys = 20000
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("subscription-key-%08d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := NewMemory()
	for _, k := range names {
		_, _ = m.Settle(context.Background(), k, Limits{}, Hold{Tokens: 0}, 1, t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / keys
	t.Logf("%d bytes per key", perKey)
	if perKey > 1024 {
		t.Errorf("%d bytes per key, want <= 1024", perKey)
	}
	runtime.KeepAlive(m)
}
