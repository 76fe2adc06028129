package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestFallbackModes kills a real redis-server under each on_error policy,
// then brings it back on the same port.
func TestFallbackModes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	lim := Limits{TokensPerMinute: 100}
	for _, mode := range []OnError{FailOpen, FailClosed, Local} {
		t.Run(string(mode), func(t *testing.T) {
			srv := newRedisServer(t)
			c := redis.NewClient(&redis.Options{Addr: srv.addr(), DialTimeout: 50 * time.Millisecond,
				ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond, MaxRetries: -1})
			var mu sync.Mutex
			var states []bool
			f := NewFallback(NewRedis(RedisOptions{Client: c, ServerTime: true}), FallbackOptions{
				Mode:    mode,
				Retry:   20 * time.Millisecond,
				OnState: func(down bool, _ error) { mu.Lock(); states = append(states, down); mu.Unlock() },
			})
			defer f.Close()
			now := time.Now()
			d, err := f.Reserve(ctx, "k", lim, 60, now)
			if err != nil || !d.Allowed || d.Hold.ID == "" {
				t.Fatalf("redis up: %+v %v", d, err)
			}
			if _, err := f.Settle(ctx, "k", lim, d.Hold, 60, now); err != nil {
				t.Fatal(err)
			}

			srv.stop()
			start := time.Now()
			d1, err1 := f.Reserve(ctx, "k", lim, 30, now)
			d2, err2 := f.Reserve(ctx, "k", lim, 80, now)
			if took := time.Since(start); took > time.Second {
				t.Errorf("two decisions with redis down took %v: calls must not hang", took)
			}
			switch mode {
			case FailOpen:
				if err1 != nil || !d1.Allowed || err2 != nil || !d2.Allowed {
					t.Errorf("fail_open refused: %+v %v / %+v %v", d1, err1, d2, err2)
				}
			case FailClosed:
				if !errors.Is(err1, ErrUnavailable) || !errors.Is(err2, ErrUnavailable) {
					t.Errorf("fail_closed: %v / %v, want ErrUnavailable", err1, err2)
				}
			case Local:
				// A fresh per-replica budget: 30 fits, then 30+80 does not.
				if err1 != nil || !d1.Allowed || err2 != nil || d2.Allowed {
					t.Errorf("local: %+v %v / %+v %v, want the first admitted and the second refused", d1, err1, d2, err2)
				}
			}
			if !f.Down() {
				t.Error("Down() = false with redis killed")
			}
			if err1 == nil {
				_, _ = f.Settle(ctx, "k", lim, d1.Hold, 30, now)
			}

			srv.start()
			deadline := time.Now().Add(5 * time.Second)
			for {
				d, err := f.Reserve(ctx, "k", lim, 10, time.Now())
				if err == nil && !f.Down() {
					// Back on the shared store, which restarted empty (no
					// persistence): only this reservation, nothing local.
					if d.Used != 10 {
						t.Errorf("after recovery used %d, want the shared store's 10", d.Used)
					}
					_, _ = f.Settle(ctx, "k", lim, d.Hold, 0, time.Now())
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("did not recover within 5 s of redis coming back")
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(states) != 2 || !states[0] || states[1] {
				t.Errorf("state changes %v, want [down, up]", states)
			}
		})
	}
}
