package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// A batch of settles is one script call, and leaves every key as
// SettleMany one by one would; a fresh server (no script loaded) still
// takes it, and a settle Redis refuses (its key of another type) fails
// alone.
func TestSettleManyBatch(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	hook := &counting{}
	c.AddHook(hook)
	red := New(Options{Client: c, Prefix: "test:"})
	defer red.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	n := []int64{1, 10, 10, 10}
	var batch []limiter.Settle
	for i := range 5 {
		key := fmt.Sprintf("k%d", i)
		d, err := red.ReserveMany(ctx, key, budget4, n, now)
		if err != nil || !d.Allowed {
			t.Fatalf("reserve: %+v %v", d, err)
		}
		batch = append(batch, limiter.Settle{Key: key, Budget: budget4, Holds: d.Hold, Used: []int64{1, int64(i), 2 * int64(i), 7}, Now: now})
	}
	// A settle the store refuses outright is answered its own error.
	batch = append(batch, limiter.Settle{Key: "bad", Budget: budget4, Used: []int64{1}, Now: now})
	// One Redis refuses: its input tokens' state is a string.
	batch = append(batch, limiter.Settle{Key: "wrong", Budget: budget4, Used: []int64{1, 1, 1, 1}, Now: now})
	wrong, _ := limitKey(red.tag("wrong"), &budget4[1])
	if err := c.Set(ctx, wrong, "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook.take()
	errs := red.SettleManyBatch(ctx, batch)
	for i, err := range errs[:5] {
		if err != nil {
			t.Errorf("settle %d: %v", i, err)
		}
	}
	if errs[5] == nil {
		t.Error("a settle with the wrong number of amounts was taken")
	}
	if errs[6] == nil || !strings.Contains(errs[6].Error(), "WRONGTYPE") {
		t.Errorf("a settle Redis refused: %v, want its WRONGTYPE", errs[6])
	}
	// One evalsha, then the script sent whole: it was flushed.
	if got := hook.take(); !slices.Equal(got, []string{"evalsha", "eval"}) {
		t.Errorf("commands %q", got)
	}
	for i := range 5 {
		d, err := red.StatusMany(ctx, fmt.Sprintf("k%d", i), budget4, now)
		if err != nil {
			t.Fatal(err)
		}
		want := []int64{1, int64(i), 2 * int64(i), 7}
		for j, l := range d.Limits {
			if l.Used != want[j] {
				t.Errorf("k%d %s: used %d, want %d (holds released, counts charged)", i, budget4[j].Name, l.Used, want[j])
			}
		}
	}
	// Loaded now: the next batch is the pipeline alone.
	d, _ := red.ReserveMany(ctx, "k9", budget4, n, now)
	hook.take()
	red.SettleManyBatch(ctx, []limiter.Settle{{Key: "k9", Budget: budget4, Holds: d.Hold, Used: n, Now: now}})
	if got := hook.take(); !slices.Equal(got, []string{"evalsha"}) {
		t.Errorf("loaded script: commands %q, want one evalsha", got)
	}
}

// On the server's clock a settle sent late charges at its response's
// time: Late before the server's, in the window or out of it as that
// time says.
func TestSettleBatchLateOnServerTime(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	red := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "test:", ServerTime: true})
	defer red.Close()
	bud := limiter.Budget{{Name: "tokens", Max: 1000, Window: time.Minute}}
	now := time.Now()
	errs := red.SettleManyBatch(ctx, []limiter.Settle{
		{Key: "k", Budget: bud, Used: []int64{5}, Now: now},
		{Key: "k", Budget: bud, Used: []int64{7}, Now: now, Late: 50 * time.Second},
		{Key: "k", Budget: bud, Used: []int64{100}, Now: now, Late: 2 * time.Minute},
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("settle %d: %v", i, err)
		}
	}
	d, err := red.StatusMany(ctx, "k", bud, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Limits[0].Used; got != 12 {
		t.Errorf("used %d, want 12: the charge of two minutes ago has left the window", got)
	}
}

// Settles alone reshape a limit's state as the memory store does: a
// limit whose window changes span (shorter than 22 minutes, where a
// charge to a bucket already holding some reads no shape, and longer),
// becomes a period, and a window again, starts afresh at its first
// charge, and its second charge in the same bucket lands in the fresh
// count; the minute window of the Limits calls keeps its buckets without
// a span. In line and in a batch alike.
func TestSettlesReshape(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	red := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "test:"})
	defer red.Close()
	mem := memstore.New()
	t0 := utc(2026, 5, 5, 10, 0, 0)
	shapes := []limiter.Limit{
		{Name: "x", Max: 1 << 40, Window: time.Minute},
		{Name: "x", Max: 1 << 40, Window: 61 * time.Second},
		{Name: "x", Max: 1 << 40, Window: 24 * time.Hour},
		{Name: "x", Max: 1 << 40, Window: 24*time.Hour - 50*time.Millisecond}, // the same bucket numbers
		{Name: "x", Max: 1 << 40, Period: limiter.Daily},
		{Name: "x", Max: 1 << 40, Window: time.Minute},
		{Name: limiter.WindowLimitName, Max: 1 << 40, Window: time.Minute},
		{Name: limiter.WindowLimitName, Max: 1 << 40, Window: 2 * time.Minute},
		{Name: limiter.WindowLimitName, Max: 1 << 40, Window: time.Minute},
	}
	for batched, via := range []string{"in line", "batch"} {
		key := fmt.Sprint("reshape-", batched)
		for i, l := range shapes {
			bud := limiter.Budget{l}
			at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
			for _, n := range []int64{int64(10 * (i + 1)), 1} {
				if _, err := mem.SettleMany(ctx, key, bud, limiter.Holds{}, []int64{n}, at); err != nil {
					t.Fatal(err)
				}
				var err error
				if via == "batch" {
					err = red.SettleManyBatch(ctx, []limiter.Settle{{Key: key, Budget: bud, Used: []int64{n}, Now: at}})[0]
				} else {
					_, err = red.SettleMany(ctx, key, bud, limiter.Holds{}, []int64{n}, at)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			want, _ := mem.StatusMany(ctx, key, bud, at)
			got, err := red.StatusMany(ctx, key, bud, at)
			if err != nil {
				t.Fatal(err)
			}
			if got.Limits[0].Used != want.Limits[0].Used || got.Limits[0].Used != int64(10*(i+1)+1) {
				t.Errorf("%s, shape %d (%+v): used %d, the memory store %d, want %d", via, i, l, got.Limits[0].Used, want.Limits[0].Used, 10*(i+1)+1)
			}
		}
	}
}
