package behind

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// asked counts the checks and reserves that reach the store.
type asked struct {
	*memstore.Store
	n atomic.Int64
}

func (a *asked) ReserveMany(ctx context.Context, key string, b limiter.Budget, n []int64, t time.Time) (limiter.Decisions, error) {
	a.n.Add(1)
	return a.Store.ReserveMany(ctx, key, b, n, t)
}

// Far from its limits a key's checks are answered here, the store asked
// again once the view is past its life or this replica's own charges bring
// a limit to half; near a limit, and once refused, every check is the
// store's.
func TestViewAnswersChecks(t *testing.T) {
	store := &asked{Store: memstore.New()}
	b := New(store, Options{})
	defer b.Close()
	ctx := context.Background()
	bud := limiter.Budget{{Name: "requests", Max: 10, Window: time.Minute}}
	check := func(at time.Time) limiter.Decisions {
		t.Helper()
		d, err := b.ReserveMany(ctx, "k", bud, []int64{0}, at)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	settle := func(at time.Time) {
		if !b.SettleBehind(limiter.Settle{Key: "k", Budget: bud, Used: []int64{1}, Now: at}) {
			t.Fatal("queue full")
		}
		b.Flush()
	}
	at := now
	check(at)
	check(at.Add(500 * time.Millisecond))
	if got := store.n.Load(); got != 1 {
		t.Fatalf("store asked %d times for two checks of an idle key within its view's life, want 1", got)
	}
	check(at.Add(5 * time.Second))
	if got := store.n.Load(); got != 2 {
		t.Fatalf("a view past its life (5 s: a twelfth of the minute) answered: store asked %d times, want 2", got)
	}
	// Four charges here: 6 of 10 left is still more than half.
	for range 4 {
		settle(at.Add(5 * time.Second))
	}
	if d := check(at.Add(5 * time.Second)); !d.Allowed || d.Limits[0].Remaining != 6 {
		t.Fatalf("check with 6 left: %+v", d)
	}
	if got := store.n.Load(); got != 2 {
		t.Fatalf("store asked %d times, want 2", got)
	}
	// A fifth: half left, and from now on the store decides each check.
	settle(at.Add(5 * time.Second))
	check(at.Add(5 * time.Second))
	check(at.Add(5 * time.Second))
	if got := store.n.Load(); got != 4 {
		t.Fatalf("near the limit, store asked %d times, want 4", got)
	}
	for range 5 {
		settle(at.Add(5 * time.Second))
	}
	if d := check(at.Add(5 * time.Second)); d.Allowed {
		t.Fatalf("spent key admitted: %+v", d)
	}
	// Refused: the store decides every check until it admits again.
	asked := store.n.Load()
	check(at.Add(5500 * time.Millisecond))
	if store.n.Load() != asked+1 {
		t.Fatal("a refusal was repeated here instead of asking the store")
	}
}

// A view lives 5 s, and no more than a twelfth of the key's shortest
// window.
func TestViewLife(t *testing.T) {
	for _, tt := range []struct {
		b    limiter.Budget
		want time.Duration
	}{
		{limiter.Budget{{Name: "a", Window: time.Hour}}, 5 * time.Second},
		{limiter.Budget{{Name: "a", Window: time.Minute}, {Name: "b", Period: limiter.Daily}}, 5 * time.Second},
		{limiter.Budget{{Name: "a", Window: time.Hour}, {Name: "b", Window: 12 * time.Second}}, time.Second},
		{limiter.Budget{{Name: "a", Period: limiter.Monthly}}, 5 * time.Second},
	} {
		if got := life(tt.b); got != tt.want {
			t.Errorf("life(%v) = %v, want %v", tt.b, got, tt.want)
		}
	}
}

// A queued settle owes the store its charge less what its hold holds
// there: the store already counts the hold until the settle lands.
func TestOwedBy(t *testing.T) {
	b := limiter.Budget{{Name: "requests", Max: 10, Window: time.Minute}, {Name: "tokens", Max: 1000, Window: time.Minute}}
	s := limiter.Settle{Budget: b, Used: []int64{1, 300},
		Holds: limiter.Holds{Amounts: []limiter.Amount{{Name: "requests", N: 1}, {Name: "tokens", N: 500}}}}
	if got := owedBy(s); got[0] != 0 || got[1] != 0 {
		t.Errorf("used under the hold: owed %v, want nothing", got)
	}
	s.Used[1] = 800
	if got := owedBy(s); got[1] != 300 {
		t.Errorf("used past the hold: owed %v, want 300 tokens", got)
	}
	s.Holds = limiter.Holds{}
	if got := owedBy(s); got[0] != 1 || got[1] != 800 {
		t.Errorf("no hold: owed %v, want all of it", got)
	}
}
