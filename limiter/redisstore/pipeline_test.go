package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
)

// pipelines counts the pipelines a client sends and their commands.
type pipelines struct {
	counting
	n, cmds atomic.Int64
}

func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n.Add(1)
		p.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Concurrent decisions share round trips, and each gets its own answer:
// 64 clients reserving one request each of a limit of 40 are admitted
// exactly 40 times.
func TestConcurrentCallsPipelined(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	hook := &pipelines{}
	c.AddHook(hook)
	red := New(Options{Client: c, Prefix: "test:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	b := limiter.Budget{{Name: "requests", Max: 40, Window: 60e9}}
	if _, err := red.StatusMany(ctx, "k", b, now); err != nil { // loads the script
		t.Fatal(err)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				d, err := red.ReserveMany(ctx, "k", b, []int64{1}, now)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
				if _, err := red.StatusMany(ctx, fmt.Sprintf("other-%d-%d", i, j), b, now); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 40 {
		t.Errorf("admitted %d, want exactly 40", admitted.Load())
	}
	t.Logf("%d pipelines carried %d of the 640 calls", hook.n.Load(), hook.cmds.Load())
	if hook.n.Load() == 0 {
		t.Error("no call was pipelined with another")
	}
}

// A call whose context has ended is not sent; the next is answered.
func TestPipelinedCallerGivesUp(t *testing.T) {
	addr := redistest.New(t).Addr()
	c := redis.NewClient(&redis.Options{Addr: addr})
	red := New(Options{Client: c, Prefix: "test:"})
	defer red.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := limiter.Budget{{Name: "requests", Max: 40, Window: 60e9}}
	if _, err := red.StatusMany(ctx, "k", b, utc(2026, 5, 5, 10, 0, 0)); err == nil {
		t.Error("a cancelled call answered")
	}
	if _, err := red.StatusMany(context.Background(), "k", b, utc(2026, 5, 5, 10, 0, 0)); err != nil {
		t.Error(err)
	}
}

// A check and a batch of settles each take their place in the one queue
// once (limiter.Ordered), before their round trip; a call whose place
// nobody asks about still runs.
func TestCallsTellTheirPlace(t *testing.T) {
	addr := redistest.New(t).Addr()
	red := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "test:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	var placed atomic.Int64
	ctx := limiter.WithOrdered(context.Background(), func() { placed.Add(1) })
	if _, err := red.ReserveMany(ctx, "k", budget4, make([]int64, len(budget4)), now); err != nil {
		t.Fatal(err)
	}
	if n := placed.Load(); n != 1 {
		t.Errorf("a check placed %d times, want 1", n)
	}
	errs := red.SettleManyBatch(ctx, []limiter.Settle{
		{Key: "k", Budget: budget4, Used: []int64{1, 2, 3, 4}, Now: now},
		{Key: "j", Budget: budget4, Used: []int64{1, 2, 3, 4}, Now: now},
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := placed.Load(); n != 2 {
		t.Errorf("a batch placed %d times, want once (2 in all)", n-1)
	}
	if _, err := red.ReserveMany(limiter.WithOrdered(context.Background(), nil), "k", budget4, make([]int64, len(budget4)), now); err != nil {
		t.Fatal(err)
	}
}
