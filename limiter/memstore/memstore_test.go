package memstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/storetest"
)

const s = time.Second

// t0 starts a second, as most tests want; at(d) is t0+d.
var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T, limiter.Clock) limiter.Store { return New() })
}

func mustReserve(t *testing.T, m *Store, key string, limit, n int64, now time.Time) {
	t.Helper()
	if _, err := m.Reserve(context.Background(), key, limiter.Limits{TokensPerMinute: limit}, n, now); err != nil {
		t.Fatalf("Reserve(%q, %d, %d): %v", key, limit, n, err)
	}
}

func mustSettle(t *testing.T, m *Store, key string, reserved, used int64, now time.Time) {
	t.Helper()
	if _, err := m.Settle(context.Background(), key, limiter.Limits{}, limiter.Hold{Tokens: reserved}, used, now); err != nil {
		t.Fatalf("Settle(%q, %d, %d): %v", key, reserved, used, err)
	}
}

func used(t *testing.T, m *Store, key string, now time.Time) int64 {
	t.Helper()
	d, err := m.Status(context.Background(), key, limiter.Limits{TokensPerMinute: 100}, now)
	if err != nil {
		t.Fatalf("Status(%q): %v", key, err)
	}
	return d.Used
}

func TestForgetsIdleKeys(t *testing.T) {
	m := New()
	// Nothing to keep: a check, a refusal, a reservation released unused.
	mustReserve(t, m, "check", 100, 0, at(0))
	mustReserve(t, m, "refused", 100, 101, at(0))
	mustReserve(t, m, "released", 100, 10, at(0))
	mustSettle(t, m, "released", 10, 0, at(0))
	mustSettle(t, m, "nothing", 0, 0, at(0))
	used(t, m, "status", at(0))
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
			used(t, m, fmt.Sprint("old", i), at(60*s))
		}
	}
	if got := m.Len(); got != 2 {
		t.Errorf("step 4: got %d keys, want 2 (new and held)", got)
	}
	if got := used(t, m, "new", at(60*s)); got != 1 {
		t.Errorf("new: used %d, want 1", got)
	}

	if got := m.Sweep(at(90 * s)); got != 1 {
		t.Errorf("step 5: swept %d keys at t0+90s, want 1", got)
	}
	mustSettle(t, m, "held", 1, 0, at(90*s))
	if got := m.Len(); got != 0 {
		t.Errorf("step 6: got %d keys, want 0", got)
	}
}

// TestQuotaOutlivesIdleWindow: a key whose window is empty is kept while
// its quota's period runs.
func TestQuotaOutlivesIdleWindow(t *testing.T) {
	ctx := context.Background()
	m := New()
	lim := limiter.Limits{Quota: 100, Period: limiter.Monthly}
	now := time.Date(2026, 5, 5, 10, 0, 0, 0, time.UTC)
	d, _ := m.Reserve(ctx, "k", lim, 40, now)
	m.Settle(ctx, "k", lim, d.Hold, 40, now)
	// Hours later the window is empty, but the month's 40 must stay.
	later := now.Add(5 * time.Hour)
	if n := m.Sweep(later); n != 0 {
		t.Fatalf("sweep forgot %d keys holding a running quota", n)
	}
	if d, _ := m.Status(ctx, "k", lim, later); d.Quota.Used != 40 {
		t.Fatalf("quota used %d after sweep, want 40", d.Quota.Used)
	}
	if n := m.Sweep(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)); n != 1 {
		t.Errorf("sweep after the month forgot %d keys, want 1", n)
	}
}

// TestPerKey checks the spec's bound of 1 KiB per active key, map and
// sweep bookkeeping included, for today's one-window key; and logs what a
// key with a four-limit Budget costs (the figure README states).
func TestPerKey(t *testing.T) {
	if perKey := bytesPerKey(t, "one window", func(m *Store, k string) {
		_, _ = m.Settle(context.Background(), k, limiter.Limits{}, limiter.Hold{}, 1, t0)
	}); perKey > 1024 {
		t.Errorf("%d bytes per key, want <= 1024", perKey)
	}
	four, used := storetest.BenchBudget(4), []int64{1, 1, 1, 1}
	bytesPerKey(t, "a four-limit Budget", func(m *Store, k string) {
		_, _ = m.SettleMany(context.Background(), k, four, limiter.Holds{}, used, t0)
	})
}

// bytesPerKey measures the heap that 20,000 keys made by add take, per
// key, and logs it.
func bytesPerKey(t *testing.T, what string, add func(m *Store, key string)) int64 {
	const keys = 20000
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("subscription-key-%08d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := New()
	for _, k := range names {
		add(m, k)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	perKey := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / keys
	t.Logf("%s: %d bytes per key", what, perKey)
	return perKey
}

// TestManyBudgetsAllocateNothing: a key whose calls come with more
// Budgets than one (several policies' or tiers' on one shard, changing
// call after call) still allocates nothing once each has been seen: a
// shard remembers every Budget its callers pass, and a counter reshaped
// from one to another reuses its states.
func TestManyBudgetsAllocateNothing(t *testing.T) {
	m := New()
	ctx := context.Background()
	var budgets []limiter.Budget
	for i := range 12 {
		budgets = append(budgets, limiter.Budget{
			{Name: "requests", Max: int64(1000 + i), Window: time.Minute},
			{Name: "tokens", Max: int64(1 << 40), Window: time.Minute},
			{Name: "cost", Max: int64(1 << 40), Period: limiter.Daily},
		})
	}
	n, used := []int64{1, 100, 5}, []int64{1, 90, 4}
	var room [2]limiter.Decisions
	round := func(now time.Time) {
		for _, b := range budgets {
			if err := m.ReserveManyInto(ctx, "key", b, n, now, &room[0]); err != nil {
				t.Fatal(err)
			}
			if err := m.SettleManyInto(ctx, "key", b, room[0].Hold, used, now, &room[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	round(t0)
	i := 0
	if a := testing.AllocsPerRun(20, func() { i++; round(at(time.Duration(i) * time.Millisecond)) }); a != 0 {
		t.Errorf("%v allocations a round of %d Budgets, want 0", a, len(budgets))
	}
}

// TestSweepPaceIgnoresLimitCount: the calls' sweep finds keys gone idle
// among busy keys as soon whatever the busy keys' number of limits: a
// busy key is told by its first limit, so it costs the sweep one look,
// not one per limit.
func TestSweepPaceIgnoresLimitCount(t *testing.T) {
	ctx := context.Background()
	// Busy all day (a daily quota charged), with one limit or with four.
	busy := map[int]limiter.Budget{
		1: {{Name: "q", Max: 1 << 40, Period: limiter.Daily}},
		4: {
			{Name: "q", Max: 1 << 40, Period: limiter.Daily},
			{Name: "a", Max: 1 << 40, Window: time.Minute},
			{Name: "b", Max: 1 << 40, Window: time.Minute},
			{Name: "c", Max: 1 << 40, Window: time.Minute},
		},
	}
	// Idle a minute after their charge.
	idle := limiter.Budget{{Name: "w", Max: 1 << 40, Window: time.Minute}}
	const busyKeys, idleKeys = 2000, 500
	calls := func(k int) int {
		m := New()
		charge := func(key string, b limiter.Budget, now time.Time) {
			used := make([]int64, len(b))
			for i := range used {
				used[i] = 1
			}
			if _, err := m.SettleMany(ctx, key, b, limiter.Holds{}, used, now); err != nil {
				t.Fatal(err)
			}
		}
		// Interleaved, so that the idle keys are spread over each shard's
		// order and finding them all takes the sweep a whole pass.
		for i := range busyKeys {
			charge(fmt.Sprint("busy", i), busy[k], t0)
			if i%(busyKeys/idleKeys) == 0 {
				charge(fmt.Sprint("idle", i), idle, t0)
			}
		}
		n := 0
		for m.Len() > busyKeys {
			charge(fmt.Sprint("busy", n%busyKeys), busy[k], at(2*time.Minute))
			n++
			if n > 100*busyKeys {
				t.Fatalf("limits=%d: %d keys left after %d calls", k, m.Len(), n)
			}
		}
		return n
	}
	one, four := calls(1), calls(4)
	t.Logf("calls until the idle keys are forgotten: %d among keys of one limit, %d among keys of four", one, four)
	if four > 2*one {
		t.Errorf("among busy keys of four limits the sweep took %d calls, over twice the %d among keys of one", four, one)
	}
}
