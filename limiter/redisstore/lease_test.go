package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
)

// leaseBudget holds in two limits, so a hold's amounts are a Budget's.
var leaseBudget = limiter.Budget{
	{Name: limiter.WindowLimitName, Max: 1000, Window: time.Minute}, // shared with the Limits calls
	{Name: "requests", Max: 100, Period: limiter.Daily},
}

// leased opens a store on the callers' clock, with a lease and a hold
// TTL, on a client of its own: closing it is a replica going away.
func leased(t *testing.T, addr string, clock limiter.Clock, lease, ttl time.Duration) *Store {
	t.Helper()
	s := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "lease:",
		HoldLease: lease, HoldTTL: ttl, Clock: clock})
	t.Cleanup(func() { s.Close() })
	return s
}

// heldTokens is what the key's holds hold in the tokens limit at now, as
// any replica sees it (the script's own count, charges apart).
func heldTokens(t *testing.T, s *Store, key string, now time.Time) int64 {
	t.Helper()
	return held(t, s, key, leaseBudget, now)
}

func held(t *testing.T, s *Store, key string, b limiter.Budget, now time.Time) int64 {
	t.Helper()
	rep, err := s.call(context.Background(), s.tag(key), b, "s", "", make([]int64, len(b)), now)
	if err != nil {
		t.Fatal(err)
	}
	return rep.limits[0].held
}

// TestLeaseRenewed: on the callers' clock, moved by hand, a hold renewed
// every third of a lease outlives many leases; a hold whose replica is
// gone (its store closed, nothing settled) is free one lease after its
// last renewal, and the live replica's holds stay as they were.
func TestLeaseRenewed(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	const lease = 30 * time.Second
	clock := limiter.NewManualClock(utc(2026, 5, 5, 10, 0, 0))
	a := leased(t, addr, clock, lease, 10*time.Minute)
	b := leased(t, addr, clock, lease, 10*time.Minute)

	// a: two holds, one of a Budget, one of the Limits calls.
	da, err := a.ReserveMany(ctx, "k", leaseBudget, []int64{100, 1}, clock.Now())
	if err != nil || !da.Allowed {
		t.Fatalf("reserve: %+v %v", da, err)
	}
	lim := limiter.Limits{TokensPerMinute: 1000}
	dl, err := a.Reserve(ctx, "k", lim, 50, clock.Now())
	if err != nil || !dl.Allowed {
		t.Fatalf("reserve: %+v %v", dl, err)
	}
	if got := a.Leased(); got != 2 {
		t.Fatalf("a leases %d holds, want 2", got)
	}
	// Four leases, renewed every lease/3.
	for i := range 12 {
		clock.Advance(lease / 3)
		if err := a.renew(ctx); err != nil {
			t.Fatal(err)
		}
		if got := heldTokens(t, b, "k", clock.Now()); got != 150 {
			t.Fatalf("after %v of renewals: %d tokens held, want 150", time.Duration(i+1)*lease/3, got)
		}
	}

	// b reserves, then goes away without settling.
	db, err := b.ReserveMany(ctx, "k", leaseBudget, []int64{200, 1}, clock.Now())
	if err != nil || !db.Allowed {
		t.Fatalf("reserve: %+v %v", db, err)
	}
	gone := clock.Now()
	b.Close()
	b = leased(t, addr, clock, lease, 10*time.Minute) // a third replica, to look
	for clock.Now().Sub(gone) < lease {
		if got := heldTokens(t, b, "k", clock.Now()); got != 350 {
			t.Fatalf("%v after the replica left: %d tokens held, want 350 (its hold lives a lease)", clock.Now().Sub(gone), got)
		}
		clock.Advance(lease / 3)
		if err := a.renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := heldTokens(t, b, "k", clock.Now()); got != 150 {
		t.Fatalf("a lease after the replica left: %d tokens held, want a's 150", got)
	}

	// a settles one hold through another replica's store (as a replay
	// might): the renewal does not bring it back, and forgets it.
	if _, err := b.SettleMany(ctx, "k", leaseBudget, da.Hold, []int64{80, 1}, clock.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(lease / 3)
	if err := a.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.c.ZScore(ctx, a.tag("k")+":h", da.Hold.ID).Result(); n != 0 {
		t.Errorf("a settled hold was renewed back: score %v", n)
	}
	if got := a.Leased(); got != 1 {
		t.Errorf("a leases %d holds after one was settled elsewhere, want 1", got)
	}
	if got := heldTokens(t, b, "k", clock.Now()); got != 50 {
		t.Errorf("%d tokens held, want the 50 of a's hold left", got)
	}
	// a settles its own: nothing left to renew.
	if _, err := a.Settle(ctx, "k", lim, dl.Hold, 50, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := a.Leased(); got != 0 {
		t.Errorf("a leases %d holds with nothing in flight", got)
	}
}

// TestLeaseNotRevived: a hold whose lease passed before its renewal came
// (a replica stalled, Redis away for a lease) stays expired: its budget
// may already be another request's.
func TestLeaseNotRevived(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	const lease = 30 * time.Second
	clock := limiter.NewManualClock(utc(2026, 5, 5, 10, 0, 0))
	a := leased(t, addr, clock, lease, 10*time.Minute)
	if d, err := a.ReserveMany(ctx, "k", leaseBudget, []int64{100, 1}, clock.Now()); err != nil || !d.Allowed {
		t.Fatalf("reserve: %+v %v", d, err)
	}
	clock.Advance(lease)
	if err := a.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if got := heldTokens(t, a, "k", clock.Now()); got != 0 {
		t.Errorf("a hold renewed after its lease: %d tokens held, want 0", got)
	}
	if got := a.Leased(); got != 0 {
		t.Errorf("a leases %d holds, want the expired one forgotten", got)
	}
}

// TestLeaseTTL: renewed or not, a hold lives no longer than the hold TTL,
// which bounds a request a live replica never settles.
func TestLeaseTTL(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	const lease, ttl = 30 * time.Second, 2 * time.Minute
	start := utc(2026, 5, 5, 10, 0, 0)
	clock := limiter.NewManualClock(start)
	a := leased(t, addr, clock, lease, ttl)
	if d, err := a.ReserveMany(ctx, "k", leaseBudget, []int64{100, 1}, clock.Now()); err != nil || !d.Allowed {
		t.Fatalf("reserve: %+v %v", d, err)
	}
	for clock.Now().Sub(start) < ttl {
		clock.Advance(lease / 3)
		if err := a.renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := heldTokens(t, a, "k", start.Add(ttl-time.Millisecond)); got != 100 {
		t.Errorf("just before the hold TTL: %d tokens held, want 100", got)
	}
	if got := heldTokens(t, a, "k", start.Add(ttl)); got != 0 {
		t.Errorf("at the hold TTL: %d tokens held, want 0", got)
	}
	if err := a.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Leased(); got != 0 {
		t.Errorf("a leases %d holds past their TTL", got)
	}
}

// TestLeaseRealTime: Redis's clock and the store's own renewer, a lease
// of 600 ms. A replica's holds stay past several leases; those of a
// replica that went away free within a lease of its last renewal.
func TestLeaseRealTime(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	const lease = 600 * time.Millisecond
	open := func() *Store {
		s := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "rt:", ServerTime: true,
			HoldLease: lease, HoldTTL: time.Minute})
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	for range 10 {
		if d, err := a.ReserveMany(ctx, "k", leaseBudget, []int64{10, 1}, time.Now()); err != nil || !d.Allowed {
			t.Fatalf("reserve: %+v %v", d, err)
		}
		if d, err := b.ReserveMany(ctx, "k", leaseBudget, []int64{20, 1}, time.Now()); err != nil || !d.Allowed {
			t.Fatalf("reserve: %+v %v", d, err)
		}
	}
	time.Sleep(2 * lease)
	if got := heldTokens(t, a, "k", time.Now()); got != 300 {
		t.Fatalf("after two leases: %d tokens held, want 300 (both replicas renew)", got)
	}
	b.Close()
	closed := time.Now()
	var freed time.Duration
	for {
		got := heldTokens(t, a, "k", time.Now())
		if got == 100 {
			freed = time.Since(closed)
			break
		}
		if got != 300 || time.Since(closed) > 3*lease {
			t.Fatalf("%v after b went away: %d tokens held, want 300 then a's 100 within a lease", time.Since(closed), got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("b's holds freed %v after it went away (lease %v)", freed.Round(time.Millisecond), lease)
	// A renewal may have been under way when b closed: a lease from the
	// last one, plus the polling's and a loaded machine's slack.
	if freed > lease+lease/2 {
		t.Errorf("b's holds freed %v after it went away, want within the lease %v", freed, lease)
	}
	time.Sleep(3 * lease)
	if got := heldTokens(t, a, "k", time.Now()); got != 100 {
		t.Errorf("five leases in: %d tokens held, want a's 100", got)
	}
}

// TestLeaseRenewErrors: a round that fails (Redis away) is told to
// OnRenew and keeps the holds, for the next round.
func TestLeaseRenewErrors(t *testing.T) {
	srv := redistest.New(t)
	ctx := context.Background()
	var mu sync.Mutex
	var errs []error
	s := New(Options{Client: redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1}), HoldLease: time.Minute,
		OnRenew: func(_ int, _ time.Duration, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}})
	defer s.Close()
	now := utc(2026, 5, 5, 10, 0, 0)
	if d, err := s.ReserveMany(ctx, "k", leaseBudget, []int64{10, 1}, now); err != nil || !d.Allowed {
		t.Fatalf("reserve: %+v %v", d, err)
	}
	srv.Stop()
	if err := s.renew(ctx); err == nil {
		t.Fatal("renewal with Redis stopped: no error")
	}
	mu.Lock()
	if len(errs) != 1 || errs[0] == nil {
		t.Errorf("OnRenew saw %v, want one error", errs)
	}
	mu.Unlock()
	if got := s.Leased(); got != 1 {
		t.Errorf("%d holds leased after a failed round, want 1 kept", got)
	}
}

// TestLeaseConcurrent: reserves and settles race with renewals (run
// with -race); nothing is left leased or held at the end.
func TestLeaseConcurrent(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	s := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), ServerTime: true, HoldLease: 30 * time.Millisecond})
	defer s.Close()
	b := limiter.Budget{{Name: "tokens", Max: 1 << 40, Window: time.Minute}}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint("k", g%3)
			for range 100 {
				d, err := s.ReserveMany(ctx, key, b, []int64{5}, time.Now())
				if err == nil && !d.Allowed {
					err = errors.New("refused")
				}
				if err == nil {
					_, err = s.SettleMany(ctx, key, b, d.Hold, []int64{5}, time.Now())
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if got := s.Leased(); got != 0 {
		t.Errorf("%d holds leased with everything settled", got)
	}
	for g := range 3 {
		if h := held(t, s, fmt.Sprint("k", g), b, time.Now()); h != 0 {
			t.Errorf("key k%d: %d held with everything settled", g, h)
		}
	}
}

// TestLeaseReplayAfterOutage: Redis away for longer than a lease (the
// renewals failed, the settle failed): the hold has expired and holds
// nothing, but the replay of the settle, once Redis is back, still finds
// it and charges, once; past the hold TTL it would not.
func TestLeaseReplayAfterOutage(t *testing.T) {
	addr := redistest.New(t).Addr()
	ctx := context.Background()
	const lease = 30 * time.Second
	clock := limiter.NewManualClock(utc(2026, 5, 5, 10, 0, 0))
	a := leased(t, addr, clock, lease, 10*time.Minute)
	d, err := a.ReserveMany(ctx, "k", leaseBudget, []int64{100, 1}, clock.Now())
	if err != nil || !d.Allowed {
		t.Fatalf("reserve: %+v %v", d, err)
	}
	clock.Advance(3 * time.Minute)
	if got := heldTokens(t, a, "k", clock.Now()); got != 0 {
		t.Fatalf("three leases without renewal: %d held, want 0", got)
	}
	for i, want := range []int64{70, 70} {
		r, err := a.ReplaySettleMany(ctx, "k", leaseBudget, d.Hold, []int64{70, 1}, clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r.Limits[0].Used != want {
			t.Errorf("replay %d: %d used, want %d (charged once)", i, r.Limits[0].Used, want)
		}
	}
	// Past the hold TTL, no proof is left: the replay charges nothing.
	d, _ = a.ReserveMany(ctx, "late", leaseBudget, []int64{100, 1}, clock.Now())
	clock.Advance(10 * time.Minute)
	r, err := a.ReplaySettleMany(ctx, "late", leaseBudget, d.Hold, []int64{70, 1}, clock.Now())
	if err != nil || r.Limits[0].Used != 0 {
		t.Errorf("replay past the hold TTL: %d used (%v), want 0", r.Limits[0].Used, err)
	}
}
