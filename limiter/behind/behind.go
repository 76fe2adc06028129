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
	q       chan limiter.Settle
	mu      sync.RWMutex // held for reading by senders, for writing by Close
	closed  bool
	workers sync.WaitGroup

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
	b := &Store{Store: s, o: o, q: make(chan limiter.Settle, o.Queue)}
	b.settled = sync.NewCond(&b.pendingMu)
	for range o.Workers {
		b.workers.Add(1)
		go b.work()
	}
	return b
}

// SettleBehind implements limiter.Behind.
func (b *Store) SettleBehind(s limiter.Settle) bool {
	s.Used = append([]int64(nil), s.Used...)
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return false
	}
	b.pendingMu.Lock()
	b.pending++
	b.pendingMu.Unlock()
	select {
	case b.q <- s:
		return true
	default:
		b.done(1)
		if b.o.OnOverflow != nil {
			b.o.OnOverflow()
		}
		return false
	}
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
// closed the queue and it is empty.
func (b *Store) work() {
	defer b.workers.Done()
	batch := make([]limiter.Settle, 0, b.o.Batch)
	for s := range b.q {
		batch = append(batch[:0], s)
	more:
		for len(batch) < b.o.Batch {
			select {
			case s, ok := <-b.q:
				if !ok {
					break more
				}
				batch = append(batch, s)
			default:
				break more
			}
		}
		b.send(batch)
		b.done(len(batch))
	}
}

func (b *Store) send(batch []limiter.Settle) {
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Timeout)
	defer cancel()
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
		close(b.q)
	}
	b.mu.Unlock()
	b.workers.Wait()
	return b.Store.Close()
}
