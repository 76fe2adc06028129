package limiter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// ErrUnavailable is what a fail-closed store answers while its backend is
// down; the processor turns it into a 503.
var ErrUnavailable = errors.New("limiter: store unavailable")

// OnError is what a Fallback does while the shared store is away.
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

// localHold marks holds made by the local store, so they are settled
// there even after the shared store is back.
const localHold = "local:"

// FallbackOptions configures NewFallback.
type FallbackOptions struct {
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

// Fallback fronts a shared store (Redis) with the on_error policy.
type Fallback struct {
	shared Store
	local  *Memory
	o      FallbackOptions

	mu        sync.Mutex
	down      bool
	downUntil time.Time // wall time; the breaker is about the network, not the limiter's clock
	probing   bool
	orphans   []orphan // holds left in the shared store by a failed call
	closed    chan struct{}
	probes    sync.WaitGroup
}

// orphan is a hold, in the shared store, that no settle is known to have
// ended: its reserve timed out, and the script may yet have run; or its
// settle failed (Redis away, the breaker open, the caller gone). Left alone
// it would hold budget for hold_ttl, and the shared budget would miss what
// was used. Once Redis answers, the settle is replayed with the real count:
// a replay charges only if the hold is still there, so a settle that did
// run in Redis, though its caller saw an error, is not charged twice.
type orphan struct {
	key  string
	lim  Limits
	h    Hold
	used int64 // the settle's count; 0 for a reserve's hold
}

// maxOrphans bounds the orphans kept through a long outage. Past it the
// oldest go first: their holds are the nearest to expiring by themselves,
// and once expired their replay charges nothing.
const maxOrphans = 100_000

// replayer is a shared store that can send a failed settle again without
// charging it twice (Redis).
type replayer interface {
	replaySettle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error)
}

var _ Store = (*Fallback)(nil)

// NewFallback wraps shared.
func NewFallback(shared Store, o FallbackOptions) *Fallback {
	if o.Retry <= 0 {
		o.Retry = 500 * time.Millisecond
	}
	return &Fallback{shared: shared, local: NewMemory(), o: o, closed: make(chan struct{})}
}

// Down reports whether the shared store is considered away.
func (f *Fallback) Down() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}

// try reports whether to call the shared store now.
func (f *Fallback) try() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down || !time.Now().Before(f.downUntil)
}

// result records a call's outcome, and tells OnState of a change.
func (f *Fallback) result(op string, start time.Time, err error) {
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

// keep records an orphan, and makes sure a probe runs to release it: a
// call whose caller gave up records no result, and Redis may be up.
func (f *Fallback) keep(o orphan) {
	if o.h.ID == "" && o.used <= 0 {
		return // nothing held, nothing to charge
	}
	f.mu.Lock()
	if len(f.orphans) >= maxOrphans {
		// Drop the oldest quarter at once: amortised, no copy per call.
		f.orphans = append(f.orphans[:0], f.orphans[maxOrphans/4:]...)
	}
	f.orphans = append(f.orphans, o)
	startProbe := !f.probing
	if startProbe {
		f.probing = true
		f.probes.Add(1)
	}
	f.mu.Unlock()
	if startProbe {
		go f.probe()
	}
}

// probe tries the shared store every Retry while it is down. Traffic alone
// cannot be relied on to notice it is back: under fail_closed the health
// check turns Envoy away, and no request comes to try.
func (f *Fallback) probe() {
	defer f.probes.Done()
	t := time.NewTicker(f.o.Retry)
	defer t.Stop()
	for {
		select {
		case <-f.closed:
			return
		case <-t.C:
		}
		// Deciding to stop and clearing probing under one lock, so a
		// failure racing with the end is never left without a probe.
		f.mu.Lock()
		if !f.down {
			orphans := f.orphans
			f.orphans = nil
			f.mu.Unlock()
			if f.release(orphans) {
				// Orphans kept, or a failure seen, during the release
				// started no probe of their own: this one goes on.
				f.mu.Lock()
				done := !f.down && len(f.orphans) == 0
				if done {
					f.probing = false
				}
				f.mu.Unlock()
				if done {
					return
				}
			}
			continue
		}
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), f.o.Retry)
		start := time.Now()
		_, err := f.shared.Status(ctx, probeKey, Limits{}, time.Now())
		cancel()
		if err == nil {
			f.result("probe", start, nil)
		}
	}
}

// release replays the settles of orphaned holds (a reserve's with nothing
// used); it reports false, and keeps what it could not release, when Redis
// failed again or the Fallback is closing.
func (f *Fallback) release(orphans []orphan) bool {
	for i, o := range orphans {
		select {
		case <-f.closed:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.o.Retry)
		err := f.replay(ctx, o)
		cancel()
		if err != nil {
			f.mu.Lock()
			f.orphans = append(f.orphans, orphans[i:]...)
			f.mu.Unlock()
			return false
		}
	}
	return true
}

// replay settles an orphan in the shared store. The time is the replay's,
// not the failed call's: by now that one may lie in a quota period that
// has ended, and a charge put there would restart the current one (with
// the server's clock, the default, the time passed in is not used).
func (f *Fallback) replay(ctx context.Context, o orphan) error {
	if r, ok := f.shared.(replayer); ok {
		_, err := r.replaySettle(ctx, o.key, o.lim, o.h, o.used, time.Now())
		return err
	}
	// A store that cannot tell whether the first settle ran: release the
	// hold and charge nothing, rather than charge twice.
	if o.h.ID == "" {
		return nil
	}
	_, err := f.shared.Settle(ctx, o.key, o.lim, o.h, 0, time.Now())
	return err
}

// probeKey is a counter key no request can have (keys are policy:hash).
const probeKey = "\x00probe"

// Reserve implements Store.
func (f *Fallback) Reserve(ctx context.Context, key string, lim Limits, n int64, now time.Time) (Decision, error) {
	if f.try() {
		start := time.Now()
		d, err := f.shared.Reserve(ctx, key, lim, n, now)
		if err != nil && d.Hold.ID != "" {
			// The reserve may still run in Redis: remember its hold.
			f.keep(orphan{key: key, lim: lim, h: d.Hold})
		}
		if err != nil && ctx.Err() != nil {
			// The caller gave up (client gone, Envoy's timeout): that
			// says nothing of Redis, and nobody waits for an answer.
			return d, err
		}
		f.result("reserve", start, err)
		if err == nil {
			return d, nil
		}
	}
	switch f.o.Mode {
	case FailClosed:
		return Decision{}, ErrUnavailable
	case Local:
		d, err := f.local.Reserve(ctx, key, lim, n, now)
		d.Hold.ID = localHold
		return d, err
	}
	return Decision{Allowed: true, Hold: Hold{ID: localHold}}, nil
}

// Settle implements Store. A hold made locally is settled locally. A settle
// the shared store does not take (it failed, the breaker is open, the
// caller gave up) is kept as an orphan and replayed, with its count, once
// the shared store answers: its hold is released and its charge made
// there, late. The charge is also kept locally (counted, for fail_open;
// limiting this replica, for local) as before.
func (f *Fallback) Settle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error) {
	if strings.HasPrefix(h.ID, localHold) {
		return f.local.Settle(ctx, key, lim, h, used, now)
	}
	o := orphan{key: key, lim: lim, h: h, used: max(used, 0)}
	if !f.try() {
		f.keep(o)
	} else {
		start := time.Now()
		d, err := f.shared.Settle(ctx, key, lim, h, used, now)
		if err != nil {
			f.keep(o)
		}
		if err != nil && ctx.Err() != nil {
			return d, err
		}
		f.result("settle", start, err)
		if err == nil {
			return d, nil
		}
		if f.o.Mode == FailClosed {
			return d, err
		}
	}
	return f.local.Settle(ctx, key, lim, Hold{}, used, now)
}

// Status implements Store.
func (f *Fallback) Status(ctx context.Context, key string, lim Limits, now time.Time) (Decision, error) {
	if f.try() {
		start := time.Now()
		d, err := f.shared.Status(ctx, key, lim, now)
		if err != nil && ctx.Err() != nil {
			return d, err
		}
		f.result("status", start, err)
		if err == nil {
			return d, nil
		}
	}
	if f.o.Mode == FailClosed {
		return Decision{}, ErrUnavailable
	}
	return f.local.Status(ctx, key, lim, now)
}

// Close implements Store.
func (f *Fallback) Close() error {
	close(f.closed)
	f.probes.Wait()
	return errors.Join(f.shared.Close(), f.local.Close())
}
