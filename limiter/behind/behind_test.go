package behind

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

var (
	now    = time.Date(2026, 5, 5, 10, 0, 0, 0, time.UTC)
	budget = limiter.Budget{{Name: "requests", Max: 1000, Window: time.Minute}, {Name: "tokens", Max: 1 << 40, Window: time.Minute}}
)

// gated is a memstore whose SettleMany waits for the gate, and that
// counts batches when it is asked for them.
type gated struct {
	*memstore.Store
	gate    chan struct{}
	batches atomic.Int64
}

func (g *gated) SettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, t time.Time) (limiter.Decisions, error) {
	<-g.gate
	return g.Store.SettleMany(ctx, key, b, h, used, t)
}

// batching adds SettleManyBatch to gated.
type batching struct{ *gated }

func (b batching) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	b.batches.Add(1)
	errs := make([]error, len(ss))
	for i, s := range ss {
		_, errs[i] = b.SettleMany(ctx, s.Key, s.Budget, s.Holds, s.Used, s.Now)
	}
	return errs
}

func used(t *testing.T, s limiter.Store, key string) []int64 {
	t.Helper()
	d, err := s.StatusMany(context.Background(), key, budget, now)
	if err != nil {
		t.Fatal(err)
	}
	return []int64{d.Limits[0].Used, d.Limits[1].Used}
}

// Every queued settle is made by Close at the latest, its hold released
// and its count charged, and the caller's slice is not kept.
func TestCloseMakesEveryQueuedSettle(t *testing.T) {
	g := &gated{Store: memstore.New(), gate: make(chan struct{})}
	b := New(batching{g}, Options{Batch: 16})
	ctx := context.Background()
	buf := []int64{0, 0}
	for i := range 100 {
		key := fmt.Sprintf("k%d", i%10)
		d, err := b.ReserveMany(ctx, key, budget, []int64{1, 50}, now)
		if err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
		buf[0], buf[1] = 1, int64(i)
		if !b.SettleBehind(limiter.Settle{Key: key, Budget: budget, Holds: d.Hold, Used: buf, Now: now}) {
			t.Fatal("queue refused a settle with room")
		}
		buf[0], buf[1] = -99, -99 // the caller reuses its buffer
	}
	close(g.gate)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for k := range 10 {
		// Ten settles per key, of 1 request and i tokens each (i ≡ k mod 10).
		var want int64
		for i := k; i < 100; i += 10 {
			want += int64(i)
		}
		if got := used(t, g.Store, fmt.Sprintf("k%d", k)); got[0] != 10 || got[1] != want {
			t.Errorf("k%d: used %v, want [10 %d]", k, got, want)
		}
	}
	if n := g.batches.Load(); n == 0 || n > 100 {
		t.Errorf("%d batches for 100 settles", n)
	}
	if b.SettleBehind(limiter.Settle{Key: "late", Budget: budget, Used: []int64{1, 1}, Now: now}) {
		t.Error("a closed store queued a settle")
	}
}

// A full queue refuses the settle and counts it; the caller settles in
// line, so nothing is lost.
func TestFullQueueOverflows(t *testing.T) {
	g := &gated{Store: memstore.New(), gate: make(chan struct{})}
	var overflows atomic.Int64
	b := New(g, Options{Queue: 2, Workers: 1, Batch: 1, OnOverflow: func() { overflows.Add(1) }})
	s := limiter.Settle{Key: "k", Budget: budget, Used: []int64{1, 1}, Now: now}
	queued := 0
	for range 10 {
		if b.SettleBehind(s) {
			queued++
		}
	}
	// One settle in the worker's hands (blocked at the gate), two queued.
	if queued > 3 || overflows.Load() != int64(10-queued) {
		t.Errorf("queued %d, overflowed %d", queued, overflows.Load())
	}
	close(g.gate)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := used(t, g.Store, "k"); got[0] != int64(queued) {
		t.Errorf("charged %v, want %d requests (the queued ones)", got, queued)
	}
}

// A worker holding a settle lingers, then sends what queued meanwhile in
// the same batch; Close ends the linger. Deterministic: one worker, a
// linger longer than the test, and Close to end it.
func TestLingerGathersOneBatch(t *testing.T) {
	g := &gated{Store: memstore.New(), gate: make(chan struct{})}
	close(g.gate)
	var sizes []int
	b := New(batching{g}, Options{Workers: 1, Linger: time.Hour, OnBatch: func(n int, _ time.Duration) { sizes = append(sizes, n) }})
	for i := range 10 {
		if !b.SettleBehind(limiter.Settle{Key: "k", Budget: budget, Used: []int64{1, int64(i)}, Now: now}) {
			t.Fatal("refused a settle")
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 1 || sizes[0] != 10 {
		t.Errorf("batches %v, want one of 10", sizes)
	}
	if got := used(t, g.Store, "k"); got[0] != 10 || got[1] != 45 {
		t.Errorf("charged %v, want [10 45]", got)
	}
}
