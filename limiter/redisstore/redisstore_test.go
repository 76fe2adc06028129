package redisstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
	"github.com/tokengate/tokengate/limiter/storetest"
)

func utc(y int, m time.Month, d, h, min, sec int) time.Time {
	return time.Date(y, m, d, h, min, sec, 0, time.UTC)
}

func newRedisStore(t testing.TB, addr string, serverTime bool) *Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return New(Options{Client: c, Prefix: "test:", ServerTime: serverTime})
}

// TestConformance runs the store suite on a real redis-server, on the
// callers' clock, each test under a prefix of its own. The suite moves
// its clock by hand and never waits for a renewal: a hold it leaves
// unsettled lives one lease, which is the hold TTL it checks.
func TestConformance(t *testing.T) {
	addr := redistest.New(t).Addr()
	const lease = 5 * time.Minute // the suite's shortest
	storetest.Run(t, func(t *testing.T, clock limiter.Clock) limiter.Store {
		return New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: t.Name() + ":",
			HoldLease: lease, HoldTTL: DefaultHoldTTL, Clock: clock})
	}, storetest.HoldTTL(lease))
}

// TestIdleKeysExpire: every key the store writes carries a TTL, so that a
// key nobody uses any more vanishes from Redis by itself; a hold left
// unsettled (its replica died) is dropped once its TTL has passed.
func TestIdleKeysExpire(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	red := New(Options{Client: c, HoldTTL: 5 * time.Second})
	lim := limiter.Limits{TokensPerMinute: 100, Quota: 1000, Period: limiter.Monthly}
	now := utc(2026, 5, 5, 10, 0, 0)
	if _, err := red.Reserve(ctx, "held", lim, 80, now); err != nil {
		t.Fatal(err)
	}
	if _, err := red.Settle(ctx, "charged", lim, limiter.Hold{}, 10, now); err != nil {
		t.Fatal(err)
	}
	keys, _ := c.Keys(ctx, "*").Result()
	if len(keys) != 3 {
		t.Errorf("keys %q, want the holds of one key and the window and quota of another", keys)
	}
	for _, k := range keys {
		ttl, _ := c.PTTL(ctx, k).Result()
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (%v): idle keys must vanish", k, ttl)
		}
	}
	if d, _ := red.Status(ctx, "held", lim, now.Add(5*time.Second)); d.Used != 0 {
		t.Errorf("after the hold TTL: used %d, want 0", d.Used)
	}
}

// TestReplaySettle: a settle replayed after its caller saw an error
// charges only if the first never ran, which the hold still there proves.
func TestReplaySettle(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	red := New(Options{Client: c, Prefix: "test:"})
	lim := limiter.Limits{TokensPerMinute: 1000, Quota: 5000, Period: limiter.Daily}
	now := utc(2026, 5, 5, 10, 0, 0)
	check := func(step, key string, used, held int64) {
		t.Helper()
		d, err := red.Status(ctx, key, lim, now)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.ZCard(ctx, red.keys(key)[1]).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Used counts what is held too, window and quota alike.
		if d.Used != used+held || d.Quota.Used != used+held || h != min(held, 1) {
			t.Errorf("%s: used %d, quota used %d, %d holds; want %d charged and %d held",
				step, d.Used, d.Quota.Used, h, used, held)
		}
	}

	// The settle did run: its replay changes nothing.
	d, _ := red.Reserve(ctx, "ran", lim, 60, now)
	if !d.Allowed || d.Hold.ID == "" {
		t.Fatalf("reserve: %+v", d)
	}
	if _, err := red.Settle(ctx, "ran", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := red.ReplaySettle(ctx, "ran", lim, d.Hold, 40, now); err != nil {
			t.Fatal(err)
		}
	}
	check("settled, then replayed twice", "ran", 40, 0)

	// The settle never ran: the first replay charges and releases, a
	// second one nothing.
	d, _ = red.Reserve(ctx, "lost", lim, 60, now)
	check("held", "lost", 0, 60)
	for i := 0; i < 2; i++ {
		if _, err := red.ReplaySettle(ctx, "lost", lim, d.Hold, 40, now); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprint("replay ", i), "lost", 40, 0)
	}

	// No hold, no proof: charged each time (see replaySettle).
	if _, err := red.ReplaySettle(ctx, "none", lim, limiter.Hold{}, 10, now); err != nil {
		t.Fatal(err)
	}
	check("replay without a hold", "none", 10, 0)

	// A plain settle still charges an expired hold's use (as
	// TestHoldsExpire): only replays ask for the hold.
	d, _ = red.Reserve(ctx, "plain", lim, 60, now)
	if _, err := red.Settle(ctx, "plain", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	if _, err := red.Settle(ctx, "plain", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	check("settled twice, not replayed", "plain", 80, 0)
}

// TestServerTime: replicas whose clocks disagree by minutes still
// charge one window, because the server's clock decides.
func TestServerTime(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	a, b := newRedisStore(t, addr, true), newRedisStore(t, addr, true)
	lim := limiter.Limits{TokensPerMinute: 100}
	now := time.Now()
	a.Settle(ctx, "k", lim, limiter.Hold{}, 60, now.Add(-5*time.Minute)) // a's clock is behind
	b.Settle(ctx, "k", lim, limiter.Hold{}, 30, now.Add(7*time.Minute))  // b's ahead
	for i, s := range []*Store{a, b} {
		d, err := s.Status(ctx, "k", lim, now.Add(time.Duration(i)*time.Hour))
		if err != nil || d.Used != 90 {
			t.Errorf("replica %d sees %d used (%v), want both charges: 90", i, d.Used, err)
		}
	}
	if d, _ := a.Reserve(ctx, "k", lim, 20, now); d.Allowed {
		t.Errorf("90 + 20 > 100 admitted across skewed replicas: %+v", d)
	}
}

func TestKeysShareASlot(t *testing.T) {
	r := New(Options{Prefix: "tg:"})
	ks := r.keys("lab:ab{c}d")
	for _, k := range ks {
		if !strings.HasPrefix(k, "tg:{lab:ab(c)d}:") {
			t.Errorf("key %q lacks the hash tag", k)
		}
	}
}
