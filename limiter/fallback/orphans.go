package fallback

import (
	"context"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// orphan is a hold, in the shared store, that no settle is known to have
// ended: its reserve timed out, and the script may yet have run; or its
// settle failed (Redis away, the breaker open, the caller gone). Left alone
// it would hold budget for hold_ttl, and the shared budget would miss what
// was used. Once Redis answers, the settle is replayed with the real count:
// a replay charges only if the hold is still there, so a settle that did
// run in Redis, though its caller saw an error, is not charged twice.
type orphan struct {
	key  string
	lim  limiter.Limits
	h    limiter.Hold
	used int64 // the settle's count; 0 for a reserve's hold
	// A Budget call's orphan has b set, and holds and usedMany in place
	// of h and used.
	b        limiter.Budget
	holds    limiter.Holds
	usedMany []int64
}

// empty reports whether o neither holds nor charges anything.
func (o *orphan) empty() bool {
	if o.b == nil {
		return o.h.ID == "" && o.used <= 0
	}
	if o.holds.ID != "" {
		return false
	}
	for _, u := range o.usedMany {
		if u > 0 {
			return false
		}
	}
	return true
}

// maxOrphans bounds the orphans kept through a long outage. Past it the
// oldest go first: their holds are the nearest to expiring by themselves,
// and once expired their replay charges nothing.
const maxOrphans = 100_000

// Replayer is a shared store that can send a failed settle again without
// charging it twice: the settle charges only if the hold is still there
// (redisstore.Store is one). A shared store that is not one gets its
// orphaned holds released and their use not charged, rather than charged
// twice.
type Replayer interface {
	ReplaySettle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error)
}

// MultiReplayer is Replayer for the Budget calls (redisstore.Store is
// one): the Holds of a SettleMany that failed are replayed with it, and
// released without their use charged by a shared store that is not one.
type MultiReplayer interface {
	ReplaySettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error)
}

// keep records an orphan, and makes sure a probe runs to release it: a
// call whose caller gave up records no result, and Redis may be up.
func (f *Store) keep(o orphan) {
	if o.empty() {
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
func (f *Store) probe() {
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
		_, err := f.shared.Status(ctx, probeKey, limiter.Limits{}, time.Now())
		cancel()
		if err == nil {
			f.result("probe", start, nil)
		}
	}
}

// release replays the settles of orphaned holds (a reserve's with nothing
// used); it reports false, and keeps what it could not release, when Redis
// failed again or the Fallback is closing.
func (f *Store) release(orphans []orphan) bool {
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
func (f *Store) replay(ctx context.Context, o orphan) error {
	if o.b != nil {
		return f.replayMany(ctx, o)
	}
	if r, ok := f.shared.(Replayer); ok {
		_, err := r.ReplaySettle(ctx, o.key, o.lim, o.h, o.used, time.Now())
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

// replayMany is replay for a Budget call's orphan.
func (f *Store) replayMany(ctx context.Context, o orphan) error {
	if r, ok := f.shared.(MultiReplayer); ok {
		_, err := r.ReplaySettleMany(ctx, o.key, o.b, o.holds, o.usedMany, time.Now())
		return err
	}
	if o.holds.ID == "" {
		return nil
	}
	_, err := f.shared.SettleMany(ctx, o.key, o.b, o.holds, make([]int64, len(o.b)), time.Now())
	return err
}

// probeKey is a counter key no request can have (keys are policy:hash).
const probeKey = "\x00probe"
