// Package behind settles behind the response: a limiter.Store wrapper
// whose SettleBehind queues a request's settle and returns at once, so the
// response to Envoy never waits for a shared store's round trip. Workers
// send what is queued in batches, one round trip per batch when the store
// is a limiter.BatchSettler (redisstore pipelines them). The queue is
// bounded; a full queue is counted and the caller settles in line, so a
// charge is never dropped. Close drains the queue before it closes the
// store.
package behind

import (
	"context"
	"sync"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Options configures New; zero values take the defaults.
type Options struct {
	// Queue bounds the settles waiting (default 8192).
	Queue int
	// Batch bounds the settles one round trip carries (default 128).
	Batch int
	// Workers is how many batches may be in flight at once (default 2):
	// one slow round trip does not stop the others.
	Workers int
	// Timeout bounds one batch's round trip (default 2 s).
	Timeout time.Duration
	// Linger is how long a worker holding a settle waits for more before
	// it sends them (default 10 ms): nobody waits on a settle behind its
	// response (this replica's checks count it while it waits, see
	// pending), and a fuller batch costs both sides fewer system calls
	// and Redis one script call per batch. Negative: send at once.
	Linger time.Duration
	// OnOverflow is told of each settle the full queue refused (the
	// caller settled it in line).
	OnOverflow func()
	// OnError is told of each settle the store refused; the store's own
	// failure policy (fallback's replay) has kept it by then.
	OnError func(error)
	// OnBatch is told of each batch sent: its size and how long it took.
	OnBatch func(n int, took time.Duration)
}

// Store is a limiter.Store whose settles may go behind the response.
type Store struct {
	limiter.Store
	o       Options
	q       chan queued
	mu      sync.RWMutex // held for reading by senders, for writing by Close
	closed  bool
	closing chan struct{} // closed by Close: a linger ends at once
	workers sync.WaitGroup

	views views
	owed  pending // the queued settles' charges, per key

	pendingMu sync.Mutex
	pending   int        // settles queued or being sent
	settled   *sync.Cond // signalled when pending falls to 0
}

var (
	_ limiter.Store  = (*Store)(nil)
	_ limiter.Behind = (*Store)(nil)
)

// New wraps s, which it then owns, and starts the workers.
func New(s limiter.Store, o Options) *Store {
	if o.Queue <= 0 {
		o.Queue = 8192
	}
	if o.Batch <= 0 {
		o.Batch = 128
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Linger == 0 {
		o.Linger = 10 * time.Millisecond
	}
	b := &Store{Store: s, o: o, q: make(chan queued, o.Queue), closing: make(chan struct{})}
	b.settled = sync.NewCond(&b.pendingMu)
	for range o.Workers {
		b.workers.Add(1)
		go b.work()
	}
	return b
}

// ReserveMany implements limiter.Multi: a check (nothing to hold) is
// answered from the key's view when it can be (see view), anything else
// by the store, whose answer becomes the key's view.
func (b *Store) ReserveMany(ctx context.Context, key string, bud limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	check := true
	for _, v := range n {
		check = check && v <= 0
	}
	// While the shared store is away its on_error policy decides, and
	// its answers (a local store's, fail_open's) say nothing of it.
	shared := !b.down()
	if shared && check && len(n) == len(bud) {
		if d, ok := b.views.check(key, bud, now); ok {
			return d, nil
		}
	}
	// The store has not heard of this replica's queued charges yet; a
	// check must (a reserve's holds count until their settles land, so
	// it needs nothing). Those to count are those queued when the check
	// takes its place in the store's order, if it has one (a batch placed
	// before it is in its answer, one placed after is not); else those
	// still queued when it is answered.
	var owed []int64
	placed := false
	if check && shared {
		ctx = limiter.WithOrdered(ctx, func() { owed, placed = b.owed.of(key, bud), true })
	}
	d, err := b.Store.ReserveMany(ctx, key, bud, n, now)
	if err == nil && shared && !b.down() {
		if check {
			if !placed {
				owed = b.owed.of(key, bud)
			}
			d = withOwed(bud, d, owed, now)
		}
		b.views.saw(key, bud, d, now)
	}
	return d, err
}

// down reports a store that says its shared backend is away
// (fallback.Store's Down).
func (b *Store) down() bool {
	d, ok := b.Store.(interface{ Down() bool })
	return ok && d.Down()
}

// SettleMany implements limiter.Multi, charging the key's view too.
func (b *Store) SettleMany(ctx context.Context, key string, bud limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	b.views.spent(key, bud, used)
	return b.Store.SettleMany(ctx, key, bud, h, used, now)
}

// queued is a settle in the queue, with what it adds to the store's
// count of its key once made (owedBy).
type queued struct {
	limiter.Settle
	owed []int64
	at   time.Time // when queued, for the settle's Late
}

// owedBy is what a settle will add to what the store counts of each
// limit: its charge less what its hold holds there (which the store
// already counts), never below zero.
func owedBy(s limiter.Settle) []int64 {
	out := make([]int64, len(s.Used))
	for i, u := range s.Used {
		held := int64(0)
		if i < len(s.Budget) {
			for _, a := range s.Holds.Amounts {
				if a.Name == s.Budget[i].Name {
					held = a.N
				}
			}
		}
		out[i] = max(u-held, 0)
	}
	return out
}

// SettleBehind implements limiter.Behind.
func (b *Store) SettleBehind(s limiter.Settle) bool {
	s.Used = append([]int64(nil), s.Used...)
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed || b.down() {
		// Away, the shared store's on_error policy settles locally, and
		// the next request's check must see this charge there at once.
		return false
	}
	b.pendingMu.Lock()
	b.pending++
	b.pendingMu.Unlock()
	item := queued{Settle: s, owed: owedBy(s), at: time.Now()}
	b.owed.add(s.Key, s.Budget, item.owed, 1)
	select {
	case b.q <- item:
		b.views.spent(s.Key, s.Budget, s.Used)
		return true
	default:
		b.owed.add(s.Key, s.Budget, item.owed, -1)
		b.done(1)
		if b.o.OnOverflow != nil {
			b.o.OnOverflow()
		}
		return false
	}
}

// Pending is how many settles are queued or being sent.
func (b *Store) Pending() int {
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	return b.pending
}

// Flush waits until no settle is queued or being sent: tests use it to
// read the store after the charges of the responses they saw.
func (b *Store) Flush() {
	b.pendingMu.Lock()
	for b.pending > 0 {
		b.settled.Wait()
	}
	b.pendingMu.Unlock()
}

func (b *Store) done(n int) {
	b.pendingMu.Lock()
	b.pending -= n
	if b.pending == 0 {
		b.settled.Broadcast()
	}
	b.pendingMu.Unlock()
}

// work sends the queue's settles, a batch at a time, until Close has
// closed the queue and it is empty. Holding a settle, a worker sleeps
// out the linger and then takes what has queued meanwhile: one wake-up
// per batch, not one per settle. After a full batch it does not linger:
// the queue is keeping up with nothing to wait for.
func (b *Store) work() {
	defer b.workers.Done()
	batch := make([]queued, 0, b.o.Batch)
	settles := make([]limiter.Settle, 0, b.o.Batch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	full := false
	for s := range b.q {
		batch = append(batch[:0], s)
		if b.o.Linger > 0 && !full {
			linger.Reset(b.o.Linger)
			select {
			case <-linger.C:
			case <-b.closing:
				linger.Stop()
			}
		}
	more:
		for len(batch) < b.o.Batch {
			select {
			case s, ok := <-b.q:
				if !ok {
					break more // closing: what is taken goes now
				}
				batch = append(batch, s)
			default:
				break more
			}
		}
		full = len(batch) == b.o.Batch
		settles = settles[:0]
		for _, q := range batch {
			q.Late = time.Since(q.at)
			settles = append(settles, q.Settle)
		}
		// The charges stop being owed when the batch takes its place in
		// the store's order (checks placed after it are answered with
		// it), or once made in a store without one.
		landed := false
		land := func() {
			if landed {
				return // a store that placed the batch twice (a retry)
			}
			for _, q := range batch {
				b.owed.add(q.Key, q.Budget, q.owed, -1)
			}
			landed = true
		}
		b.send(settles, land)
		if !landed {
			land()
		}
		b.done(len(batch))
	}
}

func (b *Store) send(batch []limiter.Settle, placed func()) {
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Timeout)
	defer cancel()
	ctx = limiter.WithOrdered(ctx, placed)
	start := time.Now()
	var errs []error
	if bs, ok := b.Store.(limiter.BatchSettler); ok {
		errs = bs.SettleManyBatch(ctx, batch)
	} else {
		errs = make([]error, len(batch))
		for i, s := range batch {
			_, errs[i] = b.Store.SettleMany(ctx, s.Key, s.Budget, s.Holds, s.Used, s.Now)
		}
	}
	if b.o.OnBatch != nil {
		b.o.OnBatch(len(batch), time.Since(start))
	}
	if b.o.OnError != nil {
		for _, err := range errs {
			if err != nil {
				b.o.OnError(err)
			}
		}
	}
}

// Close stops taking settles, makes every queued one, then closes the
// store.
func (b *Store) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.closing)
		close(b.q)
	}
	b.mu.Unlock()
	b.workers.Wait()
	return b.Store.Close()
}
