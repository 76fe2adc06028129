// Package fallback is the limiter.Store that fronts a shared store (Redis)
// with the on_error policy: what to do while the shared store is away.
package fallback

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// OnError is what a Store does while the shared store is away.
type OnError string

// The failure policies of SPEC §7.
const (
	// FailOpen admits every request; charges are counted in a local
	// memory store, for metrics only.
	FailOpen OnError = "fail_open"
	// FailClosed refuses every request with ErrUnavailable.
	FailClosed OnError = "fail_closed"
	// Local limits with a per-replica memory store: budgets are per replica
	// until the shared store is back, and nothing is reconciled then.
	Local OnError = "local"
)

// localHold is the ID of every Hold answered locally (fail_open's, and the
// local store's, which has no IDs of its own), so that its settle goes to
// the local store even after the shared store is back. The shared store's
// IDs are passed through as they are.
const localHold = "local:"

// Options configures New.
type Options struct {
	Mode OnError
	// Retry is how long the shared store is left alone after a failure
	// before a call tries it again: while it is down, calls don't each pay
	// a timeout.
	Retry time.Duration
	// OnState is told when the shared store goes down (true) or comes
	// back (false): health, metrics and logs hang on it.
	OnState func(down bool, err error)
	// OnCall is told of every call to the shared store.
	OnCall func(op string, took time.Duration, err error)
}

// Store fronts a shared store (Redis) with the on_error policy. While the
// shared store answers, every call is its: holds, their TTL and their IDs
// are the shared store's. While it is away, FailOpen admits everything,
// FailClosed answers limiter.ErrUnavailable, and Local answers from a
// memory store of this replica; the settles the shared store missed are
// replayed to it once it answers again.
type Store struct {
	shared limiter.Store
	local  *memstore.Store
	o      Options

	mu        sync.Mutex
	down      bool
	downUntil time.Time // wall time; the breaker is about the network, not the limiter's clock
	probing   bool
	orphans   []orphan // holds left in the shared store by a failed call
	closed    chan struct{}
	probes    sync.WaitGroup
}

var _ limiter.Store = (*Store)(nil)

// New wraps shared, which it then owns.
func New(shared limiter.Store, o Options) *Store {
	if o.Retry <= 0 {
		o.Retry = 500 * time.Millisecond
	}
	return &Store{shared: shared, local: memstore.New(), o: o, closed: make(chan struct{})}
}

// Down reports whether the shared store is considered away.
func (f *Store) Down() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

// try reports whether to call the shared store now.
func (f *Store) try() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down || !time.Now().Before(f.downUntil)
}

// result records a call's outcome, and tells OnState of a change.
func (f *Store) result(op string, start time.Time, err error) {
	if f.o.OnCall != nil {
		f.o.OnCall(op, time.Since(start), err)
	}
	f.mu.Lock()
	changed := f.down != (err != nil)
	f.down = err != nil
	startProbe := false
	if err == nil && len(f.orphans) > 0 && !f.probing {
		// Redis answers again: a probe goroutine releases the orphans
		// off the request path.
		f.probing, startProbe = true, true
		f.probes.Add(1)
	}
	if err != nil {
		f.downUntil = time.Now().Add(f.o.Retry)
		if !f.probing {
			f.probing, startProbe = true, true
			f.probes.Add(1)
		}
	}
	f.mu.Unlock()
	if changed && f.o.OnState != nil {
		f.o.OnState(err != nil, err)
	}
	if startProbe {
		go f.probe()
	}
}

// viaShared makes one call to the shared store, when the breaker lets it
// (tried false when it did not). A failed call runs failed first, to keep
// what must be replayed. A call whose caller gave up (client gone,
// Envoy's timeout) says nothing of the shared store and is not counted
// against it; the caller answers it as it is, since nobody waits for a
// fallback. Every method below is this call and its on_error answer.
func viaShared[D any](f *Store, ctx context.Context, op string, call func() (D, error), failed func(D)) (d D, err error, tried bool) {
	if !f.try() {
		return d, nil, false
	}
	start := time.Now()
	d, err = call()
	if err != nil && failed != nil {
		failed(d)
	}
	if err != nil && ctx.Err() != nil {
		return d, err, true
	}
	f.result(op, start, err)
	return d, err, true
}

// Reserve implements limiter.Store.
func (f *Store) Reserve(ctx context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	d, err, tried := viaShared(f, ctx, "reserve",
		func() (limiter.Decision, error) { return f.shared.Reserve(ctx, key, lim, n, now) },
		func(d limiter.Decision) {
			if d.Hold.ID != "" { // the reserve may still run in Redis: remember its hold
				f.keep(orphan{key: key, lim: lim, h: d.Hold})
			}
		})
	if tried && (err == nil || ctx.Err() != nil) {
		return d, err
	}
	switch f.o.Mode {
	case FailClosed:
		return limiter.Decision{}, limiter.ErrUnavailable
	case Local:
		d, err := f.local.Reserve(ctx, key, lim, n, now)
		d.Hold.ID = localHold
		return d, err
	}
	return limiter.Decision{Allowed: true, Hold: limiter.Hold{ID: localHold}}, nil
}

// Settle implements limiter.Store. A hold made locally is settled locally.
// A settle the shared store does not take (it failed, the breaker is open,
// the caller gave up) is kept as an orphan and replayed, with its count,
// once the shared store answers: its hold is released and its charge made
// there, late. The charge is also kept locally (counted, for fail_open;
// limiting this replica, for local) as before.
func (f *Store) Settle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	if strings.HasPrefix(h.ID, localHold) {
		return f.local.Settle(ctx, key, lim, h, used, now)
	}
	o := orphan{key: key, lim: lim, h: h, used: max(used, 0)}
	d, err, tried := viaShared(f, ctx, "settle",
		func() (limiter.Decision, error) { return f.shared.Settle(ctx, key, lim, h, used, now) },
		func(limiter.Decision) { f.keep(o) })
	if !tried {
		f.keep(o)
	} else if err == nil || ctx.Err() != nil || f.o.Mode == FailClosed {
		return d, err
	}
	return f.local.Settle(ctx, key, lim, limiter.Hold{}, used, now)
}

// Status implements limiter.Store.
func (f *Store) Status(ctx context.Context, key string, lim limiter.Limits, now time.Time) (limiter.Decision, error) {
	d, err, tried := viaShared(f, ctx, "status",
		func() (limiter.Decision, error) { return f.shared.Status(ctx, key, lim, now) }, nil)
	if tried && (err == nil || ctx.Err() != nil) {
		return d, err
	}
	if f.o.Mode == FailClosed {
		return limiter.Decision{}, limiter.ErrUnavailable
	}
	return f.local.Status(ctx, key, lim, now)
}

// ReserveMany implements limiter.Multi as Reserve does: the shared
// store's answer while it answers; else by the on_error mode, a Holds
// made locally carrying the "local:" ID.
func (f *Store) ReserveMany(ctx context.Context, key string, b limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	if err := check(b, n); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	d, err, tried := viaShared(f, ctx, "reserve",
		func() (limiter.Decisions, error) { return f.shared.ReserveMany(ctx, key, b, n, now) },
		func(d limiter.Decisions) {
			if d.Hold.ID != "" { // the reserve may still run in Redis: remember its hold
				f.keep(orphan{key: key, b: b, holds: d.Hold, usedMany: make([]int64, len(b))})
			}
		})
	if tried && (err == nil || ctx.Err() != nil) {
		return d, err
	}
	switch f.o.Mode {
	case FailClosed:
		return limiter.Decisions{Refused: -1}, limiter.ErrUnavailable
	case Local:
		d, err := f.local.ReserveMany(ctx, key, b, n, now)
		d.Hold.ID = localHold
		return d, err
	}
	return limiter.Decisions{Allowed: true, Refused: -1, Limits: make([]limiter.LimitDecision, len(b)), Hold: limiter.Holds{ID: localHold}}, nil
}

// SettleMany implements limiter.Multi as Settle does: a Holds made locally
// is settled locally; a settle the shared store does not take is kept
// and replayed there once it answers, and charged locally meanwhile.
func (f *Store) SettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	if err := check(b, used); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	if strings.HasPrefix(h.ID, localHold) {
		return f.local.SettleMany(ctx, key, b, h, used, now)
	}
	o := settleOrphan(key, b, h, used)
	d, err, tried := viaShared(f, ctx, "settle",
		func() (limiter.Decisions, error) { return f.shared.SettleMany(ctx, key, b, h, used, now) },
		func(limiter.Decisions) { f.keep(o) })
	if !tried {
		f.keep(o)
	} else if err == nil || ctx.Err() != nil || f.o.Mode == FailClosed {
		return d, err
	}
	return f.local.SettleMany(ctx, key, b, limiter.Holds{}, used, now)
}

// SettleManyBatch implements limiter.BatchSettler: each settle as
// SettleMany makes it, those for the shared store in one call to it when
// it batches. A settle the shared store does not take is kept and
// replayed, and charged locally meanwhile, as SettleMany's.
func (f *Store) SettleManyBatch(ctx context.Context, ss []limiter.Settle) []error {
	errs := make([]error, len(ss))
	batcher, ok := f.shared.(limiter.BatchSettler)
	var shared []limiter.Settle
	var at []int // shared[j] is ss[at[j]]
	// The batch's place in the shared store's order (limiter.Ordered) is
	// the batch call's, not that of one of its settles made on its own.
	alone := limiter.WithOrdered(ctx, nil)
	for i, s := range ss {
		switch {
		case !ok || strings.HasPrefix(s.Holds.ID, localHold) || check(s.Budget, s.Used) != nil:
			_, errs[i] = f.SettleMany(alone, s.Key, s.Budget, s.Holds, s.Used, s.Now)
		default:
			shared, at = append(shared, s), append(at, i)
		}
	}
	if len(shared) == 0 {
		return errs
	}
	res, err, tried := viaShared(f, ctx, "settle", func() ([]error, error) {
		res := batcher.SettleManyBatch(ctx, shared)
		return res, errors.Join(res...)
	}, nil)
	for j, s := range shared {
		var e error
		if tried && j < len(res) {
			e = res[j]
		}
		if tried && e == nil {
			continue
		}
		// Not taken: kept for the shared store, charged here meanwhile.
		f.keep(settleOrphan(s.Key, s.Budget, s.Holds, s.Used))
		if err != nil && (ctx.Err() != nil || f.o.Mode == FailClosed) {
			errs[at[j]] = e
			continue
		}
		_, errs[at[j]] = f.local.SettleMany(ctx, s.Key, s.Budget, limiter.Holds{}, s.Used, s.Now)
	}
	return errs
}

// settleOrphan is a Budget settle kept for replay, its counts its own.
func settleOrphan(key string, b limiter.Budget, h limiter.Holds, used []int64) orphan {
	o := orphan{key: key, b: b, holds: h, usedMany: make([]int64, len(used))}
	for i, u := range used {
		o.usedMany[i] = max(u, 0)
	}
	return o
}

// StatusMany implements limiter.Multi as Status does.
func (f *Store) StatusMany(ctx context.Context, key string, b limiter.Budget, now time.Time) (limiter.Decisions, error) {
	if err := b.Validate(); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	d, err, tried := viaShared(f, ctx, "status",
		func() (limiter.Decisions, error) { return f.shared.StatusMany(ctx, key, b, now) }, nil)
	if tried && (err == nil || ctx.Err() != nil) {
		return d, err
	}
	if f.o.Mode == FailClosed {
		return limiter.Decisions{Refused: -1}, limiter.ErrUnavailable
	}
	return f.local.StatusMany(ctx, key, b, now)
}

// check refuses what no store would decide on, in every mode.
func check(b limiter.Budget, amounts []int64) error {
	if err := b.Validate(); err != nil {
		return err
	}
	return b.Check(amounts)
}

// Close implements limiter.Store.
func (f *Store) Close() error {
	close(f.closed)
	f.probes.Wait()
	return errors.Join(f.shared.Close(), f.local.Close())
}

// List implements limiter.Inspector on whichever store is answering.
func (f *Store) List(ctx context.Context, prefix string, now time.Time) ([]limiter.KeyUsage, error) {
	if !f.Down() {
		return f.shared.List(ctx, prefix, now)
	}
	return f.local.List(ctx, prefix, now)
}

// Reset implements limiter.Inspector on both stores; the shared store must
// be reachable for its part, and says so when it is not.
func (f *Store) Reset(ctx context.Context, key string) error {
	_ = f.local.Reset(ctx, key)
	return f.shared.Reset(ctx, key)
}
