package fallback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
	"github.com/tokengate/tokengate/limiter/redisstore"
)

var (
	_ Replayer      = (*redisstore.Store)(nil)
	_ MultiReplayer = (*redisstore.Store)(nil)
)

var budget = limiter.Budget{
	{Name: "tokens", Max: 100, Window: time.Minute},
	{Name: "requests", Max: 10, Window: time.Second},
	{Name: "cost", Max: 1000, Period: limiter.Daily},
}

// TestFallbackModesBudget kills a real redis-server under each on_error
// policy and makes Budget calls, as TestFallbackModes does with Limits.
func TestFallbackModesBudget(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	for _, mode := range []OnError{FailOpen, FailClosed, Local} {
		t.Run(string(mode), func(t *testing.T) {
			srv := redistest.New(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 50 * time.Millisecond,
				ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond, MaxRetries: -1})
			f := New(redisstore.New(redisstore.Options{Client: c, ServerTime: true}), Options{Mode: mode, Retry: 20 * time.Millisecond})
			defer f.Close()
			now := time.Now()
			d, err := f.ReserveMany(ctx, "k", budget, []int64{60, 1, 10}, now)
			if err != nil || !d.Allowed || d.Hold.ID == "" || strings.HasPrefix(d.Hold.ID, localHold) {
				t.Fatalf("redis up: %+v %v", d, err)
			}
			if _, err := f.SettleMany(ctx, "k", budget, d.Hold, []int64{60, 1, 10}, now); err != nil {
				t.Fatal(err)
			}

			srv.Stop()
			d1, err1 := f.ReserveMany(ctx, "k", budget, []int64{30, 1, 1}, now)
			d2, err2 := f.ReserveMany(ctx, "k", budget, []int64{80, 1, 1}, now)
			switch mode {
			case FailOpen:
				if err1 != nil || !d1.Allowed || err2 != nil || !d2.Allowed || len(d1.Limits) != len(budget) {
					t.Errorf("fail_open refused: %+v %v / %+v %v", d1, err1, d2, err2)
				}
			case FailClosed:
				if !errors.Is(err1, limiter.ErrUnavailable) || !errors.Is(err2, limiter.ErrUnavailable) {
					t.Errorf("fail_closed: %v / %v, want ErrUnavailable", err1, err2)
				}
				if _, err := f.StatusMany(ctx, "k", budget, now); !errors.Is(err, limiter.ErrUnavailable) {
					t.Errorf("fail_closed status: %v, want ErrUnavailable", err)
				}
			case Local:
				// A fresh per-replica budget: 30 fits, then 30+80 does not,
				// refused by the tokens.
				if err1 != nil || !d1.Allowed || err2 != nil || d2.Allowed || d2.Refused != 0 {
					t.Errorf("local: %+v %v / %+v %v, want the first admitted and the second refused by the tokens", d1, err1, d2, err2)
				}
				if !strings.HasPrefix(d1.Hold.ID, localHold) {
					t.Errorf("local hold %+v", d1.Hold)
				}
			}
			if err1 == nil {
				if _, err := f.SettleMany(ctx, "k", budget, d1.Hold, []int64{30, 1, 1}, now); err != nil {
					t.Errorf("local settle: %v", err)
				}
				if mode == Local {
					st, _ := f.local.StatusMany(ctx, "k", budget, now)
					if st.Limits[0].Used != 30 {
						t.Errorf("local tokens used %d after the settle, want 30", st.Limits[0].Used)
					}
				}
			}
			// Invalid budgets are refused in every mode.
			if _, err := f.ReserveMany(ctx, "k", limiter.Budget{{Name: "x"}}, []int64{1}, now); !errors.Is(err, limiter.ErrInvalidBudget) {
				t.Errorf("invalid budget: %v", err)
			}

			srv.Start()
			waitFor(t, "the shared store answers again", func() bool {
				d, err := f.ReserveMany(ctx, "k", budget, []int64{10, 1, 1}, time.Now())
				if err != nil || f.Down() {
					return false
				}
				// Restarted empty: only this reservation.
				if d.Limits[0].Used != 10 || d.Limits[2].Used != 1 {
					t.Errorf("after recovery: %+v, want the shared store's 10 and 1", d.Limits)
				}
				_, _ = f.SettleMany(ctx, "k", budget, d.Hold, []int64{0, 0, 0}, time.Now())
				return true
			})
		})
	}
}

// TestFallbackSettleManyWhileRedisDown: Holds made before Redis went away
// and settled while it was (one by one, or in a batch behind the
// responses) are released, and their real counts charged in every limit,
// once it is back.
func TestFallbackSettleManyWhileRedisDown(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) { settleWhileRedisDown(t, batched) })
	}
}

func settleWhileRedisDown(t *testing.T, batched bool) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := redistest.New(t, "--appendonly", "yes", "--appendfsync", "always")
	defer srv.Stop()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond,
		ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, MaxRetries: -1})
	f := New(redisstore.New(redisstore.Options{Client: c, ServerTime: true}), Options{Mode: FailOpen, Retry: 50 * time.Millisecond})
	defer f.Close()
	view := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer view.Close()
	shared := redisstore.New(redisstore.Options{Client: view, ServerTime: true})
	b := limiter.Budget{budget[0], budget[2]} // no one-second window: the test takes longer
	used := func() ([]int64, int64, error) {
		d, err := shared.StatusMany(ctx, "k", b, time.Now())
		if err != nil {
			return nil, 0, err
		}
		holds, err := view.ZCard(ctx, "{k}:h").Result()
		return []int64{d.Limits[0].Used, d.Limits[1].Used}, holds, err
	}
	d1, err1 := f.ReserveMany(ctx, "k", b, []int64{60, 100}, time.Now())
	d2, err2 := f.ReserveMany(ctx, "k", b, []int64{30, 50}, time.Now())
	if err1 != nil || err2 != nil || !d1.Allowed || !d2.Allowed {
		t.Fatalf("reserves with redis up: %+v %v / %+v %v", d1, err1, d2, err2)
	}
	srv.Stop()
	settles := []limiter.Settle{{Key: "k", Budget: b, Holds: d1.Hold, Used: []int64{40, 70}, Now: time.Now()},
		{Key: "k", Budget: b, Holds: d2.Hold, Used: []int64{20, 5}, Now: time.Now()}}
	if batched {
		if errs := f.SettleManyBatch(ctx, settles); errors.Join(errs...) != nil {
			t.Fatalf("fail_open batch: %v", errs)
		}
	} else {
		for _, s := range settles {
			if _, err := f.SettleMany(ctx, s.Key, s.Budget, s.Holds, s.Used, s.Now); err != nil {
				t.Fatalf("fail_open settle: %v", err)
			}
		}
	}
	if n, _ := pending(f); n != 2 {
		t.Fatalf("%d orphans kept, want the 2 settles", n)
	}
	srv.Start()
	waitFor(t, "the shared limits show 60 tokens and 75 cost charged, nothing held", func() bool {
		u, holds, err := used()
		return err == nil && u[0] == 60 && u[1] == 75 && holds == 0
	})
	waitFor(t, "the probe ends", func() bool { n, probing := pending(f); return n == 0 && !probing })
}

// TestFallbackReplaysFailedSettlesMany: SettleMany calls that miss the
// shared store are replayed with their counts once it answers; made
// locally, they are settled locally.
func TestFallbackReplaysFailedSettlesMany(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	now := time.Now()
	s := &replayStore{}
	f := New(s, Options{Mode: Local, Retry: 200 * time.Millisecond})
	defer f.Close()
	s.setDown(true)
	for _, st := range []struct {
		h    limiter.Holds
		used []int64
	}{
		{limiter.Holds{ID: "h1", Amounts: []limiter.Amount{{Name: "tokens", N: 50}}}, []int64{22, 1, 3}},
		{limiter.Holds{ID: "h2"}, []int64{33, 0, 0}},
		{limiter.Holds{}, []int64{5, -1, 0}},             // nothing held, a charge all the same
		{limiter.Holds{}, []int64{0, 0, 0}},              // nothing held, nothing used: not kept
		{limiter.Holds{ID: localHold}, []int64{7, 0, 0}}, // made locally, settled locally
	} {
		if _, err := f.SettleMany(ctx, "k", budget, st.h, st.used, now); err != nil {
			t.Errorf("settle of %+v: %v", st.h, err)
		}
	}
	if d, _ := f.local.StatusMany(ctx, "k", budget, now); d.Limits[0].Used != 22+33+5+7 {
		t.Errorf("local tokens used %d, want %d", d.Limits[0].Used, 22+33+5+7)
	}
	s.setDown(false)
	waitFor(t, "the orphans are released", func() bool { n, probing := pending(f); return n == 0 && !probing })
	s.mu.Lock()
	defer s.mu.Unlock()
	if got, want := strings.Join(s.replays, " "), "h1=[22 1 3] h2=[33 0 0] =[5 0 0]"; got != want {
		t.Errorf("replayed %q, want %q", got, want)
	}
}
