package redisstore

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
)

// counting is a go-redis hook that counts the commands sent.
type counting struct {
	mu   sync.Mutex
	cmds []string
}

func (c *counting) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counting) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.cmds = append(c.cmds, cmd.Name())
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *counting) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		for _, cmd := range cmds {
			c.cmds = append(c.cmds, cmd.Name())
		}
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (c *counting) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.cmds
	c.cmds = nil
	return out
}

var _ redis.Hook = (*counting)(nil)

var budget4 = limiter.Budget{
	{Name: "requests", Max: 100, Window: time.Second},
	{Name: "tokens", Max: 10000, Window: time.Minute},
	{Name: "input_tokens", Max: 100000, Window: time.Hour},
	{Name: "cost", Max: 1 << 40, Period: limiter.Monthly},
}

// TestBudgetOneRoundTrip: each Budget call is one script, whatever the
// number of limits (once the script is loaded).
func TestBudgetOneRoundTrip(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	hook := &counting{}
	c.AddHook(hook)
	red := New(Options{Client: c, Prefix: "test:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	if _, err := red.StatusMany(ctx, "warm", budget4, now); err != nil {
		t.Fatal(err)
	}
	hook.take()
	for _, b := range []limiter.Budget{budget4[:1], budget4} {
		n := make([]int64, len(b))
		for i := range n {
			n[i] = 10
		}
		d, err := red.ReserveMany(ctx, "k", b, n, now)
		if err != nil || !d.Allowed {
			t.Fatalf("reserve: %+v %v", d, err)
		}
		if got := hook.take(); !slices.Equal(got, []string{"evalsha"}) {
			t.Errorf("%d limits: ReserveMany sent %q, want one evalsha", len(b), got)
		}
		if _, err := red.SettleMany(ctx, "k", b, d.Hold, n, now); err != nil {
			t.Fatal(err)
		}
		if got := hook.take(); !slices.Equal(got, []string{"evalsha"}) {
			t.Errorf("%d limits: SettleMany sent %q, want one evalsha", len(b), got)
		}
		if _, err := red.StatusMany(ctx, "k", b, now); err != nil {
			t.Fatal(err)
		}
		if got := hook.take(); !slices.Equal(got, []string{"evalsha"}) {
			t.Errorf("%d limits: StatusMany sent %q, want one evalsha", len(b), got)
		}
	}
}

// TestBudgetReplaySettle: a replayed SettleMany charges only if the hold
// was still there, in every limit at once.
func TestBudgetReplaySettle(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	red := New(Options{Client: c, Prefix: "test:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	used := func(step, key string, want ...int64) {
		t.Helper()
		d, err := red.StatusMany(ctx, key, budget4, now)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if d.Limits[i].Used != w {
				t.Errorf("%s: %s used %d, want %d", step, budget4[i].Name, d.Limits[i].Used, w)
			}
		}
	}
	n, u := []int64{1, 100, 100, 5}, []int64{1, 60, 50, 3}
	d, _ := red.ReserveMany(ctx, "ran", budget4, n, now)
	if _, err := red.SettleMany(ctx, "ran", budget4, d.Hold, u, now); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := red.ReplaySettleMany(ctx, "ran", budget4, d.Hold, u, now); err != nil {
			t.Fatal(err)
		}
	}
	used("settled, then replayed twice", "ran", 1, 60, 50, 3)

	d, _ = red.ReserveMany(ctx, "lost", budget4, n, now)
	used("held", "lost", 1, 100, 100, 5)
	for range 2 {
		if _, err := red.ReplaySettleMany(ctx, "lost", budget4, d.Hold, u, now); err != nil {
			t.Fatal(err)
		}
		used("replayed", "lost", 1, 60, 50, 3)
	}
}

// TestBudgetKeys: the limits of the Limits calls keep the Redis keys they
// always had, the others get one each under the key's tag; every key
// carries a TTL.
func TestBudgetKeys(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	red := New(Options{Client: c, Prefix: "p:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	b := append(limiter.Limits{TokensPerMinute: 100, Quota: 1000, Period: limiter.Daily}.Budget(), budget4...)
	n := []int64{5, 5, 1, 5, 5, 5}
	d, err := red.ReserveMany(ctx, "k", b, n, now)
	if err != nil || !d.Allowed {
		t.Fatalf("reserve: %+v %v", d, err)
	}
	if _, err := red.SettleMany(ctx, "k", b, limiter.Holds{}, n, now); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{"p:{k}:h", "p:{k}:l:cost", "p:{k}:l:input_tokens", "p:{k}:l:requests", "p:{k}:l:tokens", "p:{k}:q", "p:{k}:w"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	for _, k := range keys {
		if ttl, _ := c.PTTL(ctx, k).Result(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
	}
	// The minute window of the Limits calls has no span field, as before.
	if f, _ := c.HKeys(ctx, "p:{k}:w").Result(); len(f) != 1 {
		t.Errorf("p:{k}:w has fields %q, want the one bucket", f)
	}
	if err := red.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := c.Keys(ctx, "*").Result(); len(keys) != 0 {
		t.Errorf("after Reset: keys %q", keys)
	}
}

// TestBudgetErrorKeepsHold: a ReserveMany whose reply is lost answers the
// Holds the script may have made, so a wrapping store can release it.
func TestBudgetErrorKeepsHold(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there
	red := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})})
	defer red.Close()
	d, err := red.ReserveMany(context.Background(), "k", budget4, []int64{1, 0, 3, 0}, time.Now())
	if err == nil {
		t.Fatal("no error with no server")
	}
	if d.Hold.ID == "" || !slices.Equal(d.Hold.Amounts, []limiter.Amount{{Name: "requests", N: 1}, {Name: "input_tokens", N: 3}}) {
		t.Errorf("hold %+v", d.Hold)
	}
}
