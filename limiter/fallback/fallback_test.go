package fallback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
	"github.com/tokengate/tokengate/limiter/redisstore"
	"github.com/tokengate/tokengate/limiter/storetest"
)

// TestConformance runs the store suite on a Fallback over a real Redis
// that stays up: every call is the shared store's, and answers as the
// contract says, holds and their TTL included: the suite moves its clock
// by hand, so a hold it leaves unsettled lives one lease.
func TestConformance(t *testing.T) {
	addr := redistest.New(t).Addr()
	const lease = 5 * time.Minute // the suite's shortest
	storetest.Run(t, func(t *testing.T, clock limiter.Clock) limiter.Store {
		shared := redisstore.New(redisstore.Options{Client: redis.NewClient(&redis.Options{Addr: addr}),
			Prefix: t.Name() + ":", HoldLease: lease, HoldTTL: redisstore.DefaultHoldTTL, Clock: clock})
		return New(shared, Options{Mode: Local})
	}, storetest.HoldTTL(lease))
}

// TestFallbackModes kills a real redis-server under each on_error policy,
// then brings it back on the same port.
func TestFallbackModes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 100}
	for _, mode := range []OnError{FailOpen, FailClosed, Local} {
		t.Run(string(mode), func(t *testing.T) {
			srv := redistest.New(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 50 * time.Millisecond,
				ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond, MaxRetries: -1})
			var mu sync.Mutex
			var states []bool
			f := New(redisstore.New(redisstore.Options{Client: c, ServerTime: true}), Options{
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

			srv.Stop()
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
				if !errors.Is(err1, limiter.ErrUnavailable) || !errors.Is(err2, limiter.ErrUnavailable) {
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

			srv.Start()
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

// pending reports the orphans a Fallback still has to release, and whether
// a probe runs (one does while a release is under way).
func pending(f *Store) (orphans int, probing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orphans), f.probing
}

// waitFor polls cond until it holds or a generous deadline passes: the
// state is asserted, not how fast a busy machine reaches it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sharedView reads a key's state straight from Redis, as another replica
// would: the tokens charged in the window plus those held, and the holds.
func sharedView(t *testing.T, addr string, lim limiter.Limits) func() (used, holds int64, err error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	view := redisstore.New(redisstore.Options{Client: c, ServerTime: true})
	return func() (int64, int64, error) {
		ctx := context.Background()
		d, err := view.Status(ctx, "k", lim, time.Now())
		if err != nil {
			return 0, 0, err
		}
		// The holds of key "k", without a prefix (see redisstore's keys).
		n, err := c.ZCard(ctx, "{k}:h").Result()
		return d.Used, n, err
	}
}

// TestFallbackSettleWhileRedisDown: holds made before Redis went away, and
// settled while it was, are released, and their real counts charged, once
// it is back, without waiting for hold_ttl.
func TestFallbackSettleWhileRedisDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// The holds must survive the restart: an append-only file, synced at
	// every write.
	srv := redistest.New(t, "--appendonly", "yes", "--appendfsync", "always")
	defer srv.Stop()
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 1000}
	const retry = 50 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond,
		ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, MaxRetries: -1})
	var mu sync.Mutex
	calls := map[string]int{}
	f := New(redisstore.New(redisstore.Options{Client: c, ServerTime: true}), Options{
		Mode:   FailOpen,
		Retry:  retry,
		OnCall: func(op string, _ time.Duration, _ error) { mu.Lock(); calls[op]++; mu.Unlock() },
	})
	defer f.Close()
	shared := sharedView(t, srv.Addr(), lim)

	d1, err1 := f.Reserve(ctx, "k", lim, 60, time.Now())
	d2, err2 := f.Reserve(ctx, "k", lim, 30, time.Now())
	if err1 != nil || err2 != nil || d1.Hold.ID == "" || d2.Hold.ID == "" {
		t.Fatalf("reserves with redis up: %+v %v / %+v %v", d1, err1, d2, err2)
	}
	if used, holds, err := shared(); err != nil || used != 90 || holds != 2 {
		t.Fatalf("before the outage: used %d, %d holds (%v); want 90 held in 2", used, holds, err)
	}

	srv.Stop()
	// The first settle fails; the second most likely finds the breaker
	// open and is not sent at all. Both are kept.
	if _, err := f.Settle(ctx, "k", lim, d1.Hold, 40, time.Now()); err != nil {
		t.Fatalf("fail_open settle: %v", err)
	}
	if _, err := f.Settle(ctx, "k", lim, d2.Hold, 20, time.Now()); err != nil {
		t.Fatalf("fail_open settle: %v", err)
	}
	mu.Lock()
	t.Logf("settles sent to redis while down: %d of 2", calls["settle"])
	mu.Unlock()
	if !f.Down() {
		t.Error("Down() = false with redis killed")
	}
	if n, _ := pending(f); n != 2 {
		t.Fatalf("%d orphans kept, want the 2 settles", n)
	}

	srv.Start()
	back := time.Now()
	waitFor(t, "the shared window shows 60 charged and no hold", func() bool {
		used, holds, err := shared()
		return err == nil && used == 60 && holds == 0
	})
	t.Logf("released %v after redis came back (retry_interval %v)", time.Since(back).Round(time.Millisecond), retry)
	waitFor(t, "the probe ends", func() bool { n, probing := pending(f); return n == 0 && !probing })
	if used, holds, err := shared(); err != nil || used != 60 || holds != 0 {
		t.Errorf("after the release: used %d, %d holds (%v); want 60 charged, none held", used, holds, err)
	}
}

// TestFallbackSettleTimedOutNotChargedTwice: a settle whose caller timed
// out on a stalled Redis, and that Redis ran once it woke, is replayed
// without being charged twice.
func TestFallbackSettleTimedOutNotChargedTwice(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := redistest.New(t)
	defer srv.Stop()
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 1000}
	// Long enough that the thawed server runs the queued settle well before
	// the probe (one retry) and the replay (one more) come.
	const retry = 500 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond,
		ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, MaxRetries: -1})
	f := New(redisstore.New(redisstore.Options{Client: c, ServerTime: true}), Options{Mode: FailOpen, Retry: retry})
	defer f.Close()
	shared := sharedView(t, srv.Addr(), lim)

	// Load the settle script, so that the frozen server's queued EVALSHA
	// runs when it thaws instead of failing with NOSCRIPT.
	d, err := f.Reserve(ctx, "warm", lim, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Settle(ctx, "warm", lim, d.Hold, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	d, err = f.Reserve(ctx, "k", lim, 60, time.Now())
	if err != nil || d.Hold.ID == "" {
		t.Fatalf("reserve: %+v %v", d, err)
	}

	srv.Freeze()
	if _, err := f.Settle(ctx, "k", lim, d.Hold, 40, time.Now()); err != nil {
		t.Fatalf("fail_open settle: %v", err)
	}
	if n, _ := pending(f); n != 1 || !f.Down() {
		t.Fatalf("after a timed-out settle: %d orphans, down %v; want 1, true", n, f.Down())
	}
	srv.Thaw()

	var orphansThen int
	waitFor(t, "the queued settle runs", func() bool {
		used, holds, err := shared()
		orphansThen, _ = pending(f)
		return err == nil && used == 40 && holds == 0
	})
	if orphansThen == 1 {
		t.Log("the queued settle ran before the replay: the replay must charge nothing")
	} else {
		t.Log("the replay was under way when the queued settle was seen: which ran first is not known")
	}
	waitFor(t, "the orphan is released", func() bool { n, probing := pending(f); return n == 0 && !probing })
	if used, holds, err := shared(); err != nil || used != 40 || holds != 0 {
		t.Errorf("after the replay: used %d, %d holds (%v); want 40 charged once, none held", used, holds, err)
	}
}

// replayStore is a shared store that fails while down and records what
// reaches it: settles sent, settles replayed.
type replayStore struct {
	mu      sync.Mutex
	down    bool
	sent    []string // hold IDs
	replays []string // "hold ID=used"
}

func (s *replayStore) setDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *replayStore) fail(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.down {
		return errors.New("replayStore: down")
	}
	return nil
}

func (s *replayStore) Reserve(ctx context.Context, _ string, _ limiter.Limits, n int64, _ time.Time) (limiter.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return limiter.Decision{Allowed: true}, s.fail(ctx)
}

func (s *replayStore) Settle(ctx context.Context, _ string, _ limiter.Limits, h limiter.Hold, _ int64, _ time.Time) (limiter.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, h.ID)
	return limiter.Decision{}, s.fail(ctx)
}

func (s *replayStore) ReplaySettle(ctx context.Context, _ string, _ limiter.Limits, h limiter.Hold, used int64, _ time.Time) (limiter.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail(ctx); err != nil {
		return limiter.Decision{}, err
	}
	s.replays = append(s.replays, fmt.Sprintf("%s=%d", h.ID, used))
	return limiter.Decision{}, nil
}

func (s *replayStore) Status(ctx context.Context, _ string, _ limiter.Limits, _ time.Time) (limiter.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return limiter.Decision{Allowed: true}, s.fail(ctx)
}

func (s *replayStore) ReserveMany(ctx context.Context, _ string, b limiter.Budget, _ []int64, _ time.Time) (limiter.Decisions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return limiter.Decisions{Allowed: true, Refused: -1, Limits: make([]limiter.LimitDecision, len(b))}, s.fail(ctx)
}

func (s *replayStore) SettleMany(ctx context.Context, _ string, b limiter.Budget, h limiter.Holds, _ []int64, _ time.Time) (limiter.Decisions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, h.ID)
	return limiter.Decisions{Refused: -1, Limits: make([]limiter.LimitDecision, len(b))}, s.fail(ctx)
}

func (s *replayStore) ReplaySettleMany(ctx context.Context, _ string, b limiter.Budget, h limiter.Holds, used []int64, _ time.Time) (limiter.Decisions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail(ctx); err != nil {
		return limiter.Decisions{}, err
	}
	s.replays = append(s.replays, fmt.Sprintf("%s=%v", h.ID, used))
	return limiter.Decisions{Refused: -1, Limits: make([]limiter.LimitDecision, len(b))}, nil
}

func (s *replayStore) StatusMany(ctx context.Context, _ string, b limiter.Budget, _ time.Time) (limiter.Decisions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return limiter.Decisions{Allowed: true, Refused: -1, Limits: make([]limiter.LimitDecision, len(b))}, s.fail(ctx)
}

func (s *replayStore) List(context.Context, string, time.Time) ([]limiter.KeyUsage, error) {
	return nil, nil
}

func (s *replayStore) Reset(context.Context, string) error { return nil }

func (s *replayStore) Close() error { return nil }

// TestFallbackReplaysFailedSettles: each way a settle can miss the shared
// store (the caller gone, the store failing, the breaker open) is replayed
// with its real count once the store answers; the local charge is made as
// before.
func TestFallbackReplaysFailedSettles(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 1000}
	now := time.Now()
	s := &replayStore{}
	f := New(s, Options{Mode: Local, Retry: 200 * time.Millisecond})
	defer f.Close()

	// The caller gave up, the store is up: an error, and a replay all the
	// same (the settle may not have been sent).
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Settle(gone, "k", lim, limiter.Hold{ID: "h1", Tokens: 50}, 11, now); err == nil {
		t.Error("settle with an ended context: no error")
	}
	s.setDown(true)
	for _, st := range []struct {
		h    limiter.Hold
		used int64
	}{
		{limiter.Hold{ID: "h2", Tokens: 50}, 22}, // the store fails
		{limiter.Hold{ID: "h3", Tokens: 50}, 33}, // the breaker is open: not sent
		{limiter.Hold{}, 5},                      // nothing held, a charge all the same
		{limiter.Hold{}, 0},                      // nothing held, nothing used: not kept
		{limiter.Hold{ID: localHold}, 7},         // made locally, settled locally
	} {
		if _, err := f.Settle(ctx, "k", lim, st.h, st.used, now); err != nil {
			t.Errorf("local settle of %+v: %v", st.h, err)
		}
	}
	s.mu.Lock()
	t.Logf("settles sent: %q", s.sent)
	if len(s.sent) != 2 {
		t.Logf("the breaker was not open for h3 (a stall of %v?): still kept", f.o.Retry)
	}
	s.mu.Unlock()
	if d, _ := f.local.Status(ctx, "k", lim, now); d.Used != 22+33+5+7 {
		t.Errorf("local store used %d, want %d: the failed settles' and the local hold's", d.Used, 22+33+5+7)
	}

	s.setDown(false)
	waitFor(t, "the orphans are released", func() bool { n, probing := pending(f); return n == 0 && !probing })
	s.mu.Lock()
	defer s.mu.Unlock()
	got := strings.Join(s.replays, " ")
	if want := "h1=11 h2=22 h3=33 =5"; got != want {
		t.Errorf("replayed %q, want %q", got, want)
	}
}
