// Package boltstore is the limiter.Store that answers from memory and
// writes its counters behind to a bbolt file, so that a restart keeps them.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/counter"
	"github.com/tokengate/tokengate/limiter/internal/memcore"
)

// ErrFileInUse is returned, wrapped, by Open when another process (or
// another Store in this one) holds the file. bbolt would otherwise wait for
// the lock forever, and a second tokengate would hang instead of saying why.
var ErrFileInUse = errors.New("limiter: bbolt file is in use by another process")

// fileInUseError names the file, which ErrFileInUse alone cannot.
type fileInUseError struct{ path string }

func (e *fileInUseError) Error() string {
	return "limiter: bbolt file " + e.path + " is in use by another process (another tokengate running?)"
}

func (e *fileInUseError) Unwrap() error { return ErrFileInUse }

// errClosed is what Flush says once Close has run.
var errClosed = errors.New("limiter: bbolt store is closed")

// countersBucket is the bbolt bucket holding one record per key: every
// limit of the key worth keeping (counter.AppendRecord). windowsBucket and
// quotasBucket are where files written before Budgets kept a key's
// minute window and its quota apart; Open moves them into countersBucket.
var (
	countersBucket = []byte("counters")
	windowsBucket  = []byte("windows")
	quotasBucket   = []byte("quotas")
)

// quotaBatchDelay is how long a quota write waits for others to share its
// transaction: long enough to gather concurrent settles, short next to the
// fsync it then waits for.
const quotaBatchDelay = time.Millisecond

// Defaults for the zero fields of Options.
const (
	DefaultFlushInterval = time.Second
	DefaultOpenTimeout   = time.Second
)

// Options configures Open.
type Options struct {
	// Path is the bbolt file; its directory is created when missing.
	Path string
	// FlushInterval is how often changed windows are written to the file,
	// so also the most a crash can lose. DefaultFlushInterval when <= 0.
	FlushInterval time.Duration
	// Clock dates the restore and the flushes: windows idle by then are
	// dropped from the file. SystemClock when nil.
	Clock limiter.Clock
	// OpenTimeout bounds the wait for the file lock. DefaultOpenTimeout
	// when <= 0; never unbounded, so a second process fails instead of
	// hanging.
	OpenTimeout time.Duration
	// OnFlushError hears of every failed write-behind flush (a full disk,
	// say): the charges stay pending and are written by a later flush,
	// but an operator must know the file is behind.
	OnFlushError func(error)
}

// Store answers from memory, as memstore does, and writes what changed
// behind to a bbolt file, so that the hot path never waits on the disk and
// a restart keeps the counts: one record per key, holding every limit of
// the key, windows and periods. Only charges are kept; holds die with the
// process that made them (they have no TTL, and IDs are empty, as in
// memstore). Keys bbolt cannot hold (empty, or longer than
// bolt.MaxKeySize) are kept in memory only.
type Store struct {
	mem   *memcore.Core
	dirty *dirtySets // the keys the next flush writes; see writebehind.go
	db    *bolt.DB
	path  string
	clock limiter.Clock

	flushMu sync.Mutex // one flush at a time, so writes land in order
	closed  bool       // under flushMu

	// pendingMu guards pending: keys whose write at settle failed,
	// written again by the next flush.
	pendingMu    sync.Mutex
	pending      map[string]struct{}
	onFlushError func(error)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var (
	_ limiter.Store     = (*Store)(nil)
	_ limiter.MultiInto = (*Store)(nil)
)

// Open opens (or creates) the file, restores its counters with what has
// expired at opts.Clock.Now() dropped, and starts writing behind every
// opts.FlushInterval until Close. A file written before Budgets (a window
// and a quota per key, apart) is moved to the record of each key on the
// way, in the same transaction: its window becomes the limit named
// limiter.WindowLimitName, its quota limiter.QuotaLimitName.
func Open(opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("limiter: bbolt path is empty")
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.Clock == nil {
		opts.Clock = limiter.SystemClock{}
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o750); err != nil {
		return nil, fmt.Errorf("limiter: create directory of bbolt file %s: %w", opts.Path, err)
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &fileInUseError{path: opts.Path}
	}
	if err != nil {
		return nil, fmt.Errorf("limiter: open bbolt file %s: %w", opts.Path, err)
	}
	// Period settles wait for their transaction (see Settle); bbolt's
	// default 10 ms of batching would add that to every response.
	db.MaxBatchDelay = quotaBatchDelay
	dirty := newDirtySets()
	b := &Store{
		mem:   memcore.New(dirty),
		dirty: dirty,
		db:    db,
		path:  opts.Path,
		clock: opts.Clock,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),

		pending:      map[string]struct{}{},
		onFlushError: opts.OnFlushError,
	}
	if err := b.restore(opts.Clock.Now()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("limiter: restore from bbolt file %s: %w", opts.Path, err)
	}
	go b.run(opts.FlushInterval)
	return b, nil
}

// restore loads every record of the file into memory, and deletes those
// already idle at now, so the file does not keep keys nobody uses. The
// buckets of a file written before Budgets are read, written again as
// records and deleted.
func (b *Store) restore(now time.Time) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		err := restoreBucket(tx, countersBucket, func(k, v []byte) (bool, error) {
			c, err := counter.DecodeRecord(v, now)
			if err != nil {
				return false, fmt.Errorf("key %q: %w", k, err)
			}
			if c.Idle(now) {
				return false, nil
			}
			b.mem.With(string(k), true, func(_ int, e *memcore.Entry) { e.Counter = c })
			return true, nil
		})
		if err != nil {
			return err
		}
		return b.migrate(tx, now)
	})
}

// migrate moves the windows and quotas of a file written before Budgets
// into records, within the restore's transaction.
func (b *Store) migrate(tx *bolt.Tx, now time.Time) error {
	moved := map[string]bool{}
	if bk := tx.Bucket(quotasBucket); bk != nil {
		err := bk.ForEach(func(k, v []byte) error {
			q, err := counter.DecodeQuota(v)
			if err != nil {
				return fmt.Errorf("quota of key %q: %w", k, err)
			}
			if !q.Idle(now) {
				b.mem.With(string(k), true, func(_ int, e *memcore.Entry) { e.SetQuota(q) })
				moved[string(k)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if bk := tx.Bucket(windowsBucket); bk != nil {
		err := bk.ForEach(func(k, v []byte) error {
			w, err := counter.DecodeWindow(v, now)
			if err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
			if !w.Idle(now) {
				b.mem.With(string(k), true, func(_ int, e *memcore.Entry) { e.SetWindow(w) })
				moved[string(k)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	bk := tx.Bucket(countersBucket)
	for key := range moved {
		if v, ok := b.recordOf(key, now); ok {
			if err := bk.Put([]byte(key), v); err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
		}
	}
	for _, name := range [][]byte{windowsBucket, quotasBucket} {
		if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
	}
	return nil
}

// restoreBucket hands every entry of the named bucket to load and deletes
// those it does not keep.
func restoreBucket(tx *bolt.Tx, name []byte, load func(k, v []byte) (keep bool, err error)) error {
	bk, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	var stale [][]byte
	err = bk.ForEach(func(k, v []byte) error {
		keep, err := load(k, v)
		if err == nil && !keep {
			// Copied: the slice is only valid until the transaction
			// changes.
			stale = append(stale, bytes.Clone(k))
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// run flushes on every tick until Close. A failed flush keeps its keys for
// the next one, and Close reports the last.
func (b *Store) run(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			// Forget idle keys first, so that the flush deletes them from
			// the file: under many keys the sweep riding on calls falls
			// behind.
			b.mem.Sweep(b.clock.Now())
			if err := b.Flush(); err != nil && b.onFlushError != nil {
				b.onFlushError(err)
			}
		}
	}
}

// Reserve implements limiter.Store from memory.
func (b *Store) Reserve(_ context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	return b.mem.Reserve(key, lim, n, now), nil
}

// Settle implements limiter.Store in memory; the window's charge reaches
// the file at the next flush. A quota's charge is written before Settle
// returns: losing a second of a window is a second's worth of tokens,
// losing a quota's charge could refund a month. Concurrent settles share
// one transaction.
func (b *Store) Settle(_ context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	d := b.mem.Settle(key, lim, h, used, now)
	if lim.Quota <= 0 || lim.Period == limiter.NoPeriod || used <= 0 {
		return d, nil
	}
	return d, b.persist(key)
}

// SettleMany implements limiter.Multi as Settle does: the charge of a
// limit with a Period is written before it returns.
func (b *Store) SettleMany(_ context.Context, key string, bud limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	d, err := b.mem.SettleMany(key, bud, h, used, now)
	if err != nil {
		return d, err
	}
	return d, b.persistPeriods(key, bud, used)
}

// SettleManyInto implements limiter.MultiInto as SettleMany does.
func (b *Store) SettleManyInto(_ context.Context, key string, bud limiter.Budget, h limiter.Holds, used []int64, now time.Time, d *limiter.Decisions) error {
	if err := b.mem.SettleManyInto(key, bud, h, used, now, d); err != nil {
		return err
	}
	return b.persistPeriods(key, bud, used)
}

// persistPeriods writes key's record when used charged a limit with a
// Period, whose charge must not wait for the flush.
func (b *Store) persistPeriods(key string, bud limiter.Budget, used []int64) error {
	for i, l := range bud {
		if l.Period != limiter.NoPeriod && used[i] > 0 {
			return b.persist(key)
		}
	}
	return nil
}

// ReserveMany implements limiter.Multi from memory.
func (b *Store) ReserveMany(_ context.Context, key string, bud limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	return b.mem.ReserveMany(key, bud, n, now)
}

// ReserveManyInto implements limiter.MultiInto from memory.
func (b *Store) ReserveManyInto(_ context.Context, key string, bud limiter.Budget, n []int64, now time.Time, d *limiter.Decisions) error {
	return b.mem.ReserveManyInto(key, bud, n, now, d)
}

// StatusMany implements limiter.Multi from memory.
func (b *Store) StatusMany(_ context.Context, key string, bud limiter.Budget, now time.Time) (limiter.Decisions, error) {
	return b.mem.StatusMany(key, bud, now)
}

// persist writes key's record now, for a charge that must not wait for
// the flush. The record is read inside the transaction, not before:
// whichever transaction commits last then writes the latest counts.
func (b *Store) persist(key string) error {
	if len(key) == 0 || len(key) > bolt.MaxKeySize {
		return nil
	}
	err := b.db.Batch(func(tx *bolt.Tx) error {
		return b.write(tx, key, b.clock.Now())
	})
	if err != nil {
		// Kept for the next flush: the charge is in memory and must reach
		// the file as soon as the file can take it.
		b.pendingMu.Lock()
		b.pending[key] = struct{}{}
		b.pendingMu.Unlock()
		return fmt.Errorf("limiter: persist quota to bbolt file %s: %w", b.path, err)
	}
	return nil
}

// write puts key's record as memory holds it at now, or deletes it when
// there is nothing worth keeping.
func (b *Store) write(tx *bolt.Tx, key string, now time.Time) error {
	bk := tx.Bucket(countersBucket)
	v, ok := b.recordOf(key, now)
	var err error
	if ok {
		err = bk.Put([]byte(key), v)
	} else {
		err = bk.Delete([]byte(key))
	}
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return nil
}

// Status implements limiter.Store from memory.
func (b *Store) Status(_ context.Context, key string, lim limiter.Limits, now time.Time) (limiter.Decision, error) {
	return b.mem.Status(key, lim, now), nil
}

// Sweep forgets the keys idle at now, as memstore's Sweep; the next flush
// deletes them from the file.
func (b *Store) Sweep(now time.Time) int { return b.mem.Sweep(now) }

// Flush writes the records of the keys changed since the last flush in
// one transaction, and deletes from the file those now idle or forgotten.
// Records are read from memory inside the transaction, so that a flush
// never writes over a later settle's. If it fails, the keys stay pending
// for the next flush.
func (b *Store) Flush() error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	if b.closed {
		return errClosed
	}
	now := b.clock.Now()
	keys := b.drain()
	b.pendingMu.Lock()
	for key := range b.pending {
		keys = append(keys, key)
	}
	clear(b.pending)
	b.pendingMu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, key := range keys {
			if err := b.write(tx, key, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.undrain(keys)
		return fmt.Errorf("limiter: flush to bbolt file %s: %w", b.path, err)
	}
	return nil
}

// Close stops the writing behind, flushes a last time and closes the file.
// Calls after the first return the first one's result. The store still
// answers afterwards, from memory, but keeps nothing.
func (b *Store) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		<-b.done
		err := b.Flush()
		b.flushMu.Lock()
		b.closed = true
		if cerr := b.db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("limiter: close bbolt file %s: %w", b.path, cerr))
		}
		b.flushMu.Unlock()
		b.closeErr = err
	})
	return b.closeErr
}
