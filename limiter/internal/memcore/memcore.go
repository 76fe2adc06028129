// Package memcore keeps counters in this process's memory, in sharded maps,
// for the stores built on it: memstore alone, boltstore writing it behind.
package memcore

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/counter"
)

const (
	// Shards spreads keys over that many locks, so that requests for
	// different keys rarely wait on each other.
	Shards = 64
	// sweepEvery and sweepBatch pace the eviction of idle keys: every
	// sweepEvery operations on a shard, the next keys of that shard are
	// looked at until sweepBatch limits have been. The pace is in limits
	// looked at, which is what looking costs: a busy key is told by its
	// first limit that is not idle, an idle one by all of them. So an
	// operation costs two limits' looks whatever a policy has, and busy
	// keys are gone through as fast whatever their number of limits.
	sweepEvery = 4
	sweepBatch = 8
)

// Core keeps every counter in this process. Keys are spread over shards,
// each one a mutex and a map, so that Reserve, Settle and Status each take
// exactly one lock. Nothing here waits, so nothing takes a context.
//
// Idle keys (nothing charged in the window, nothing reserved, no quota
// running) are forgotten, since a fresh counter answers the same: at once
// when a call leaves a counter empty, gradually by a sweep that rides on
// the calls to each shard, and all at once by Sweep.
type Core struct {
	seed   maphash.Seed
	shards [Shards]shard
}

// Tracker hears of the changes a store writing the core behind must write.
// Its methods are called with the key's shard locked, and are given the
// shard's index, so that a Tracker can keep per-shard state guarded by
// that lock (see Visit).
type Tracker interface {
	// Charged says that a settle charged tokens to e.
	Charged(shard int, e *Entry)
	// Forgotten says that key was dropped, idle or reset.
	Forgotten(shard int, key string)
}

// shard is one lock's share of the keys.
type shard struct {
	mu      sync.Mutex
	entries map[string]*Entry
	order   []*Entry // the entries in no particular order, for the sweep
	cursor  int      // next index of order the sweep looks at
	ops     int      // calls since the last sweep step
	index   int      // of the shard in Core.shards, for the Tracker
	tracker Tracker  // nil when nobody writes the core behind
	// validated are the shard's copies of the Budgets that passed
	// Validate, by the caller's slice (see valid); last and lastCopy the
	// one found last, looked at before the map.
	validated map[budgetKey]limiter.Budget
	last      budgetKey
	lastCopy  limiter.Budget
	_         [64]byte // keeps the next shard's mutex off this cache line
}

// Entry is a key's counter and the bookkeeping that lets it be found and
// forgotten in constant time.
type Entry struct {
	counter.Counter
	// Key is the counter key.
	Key string
	// Mark belongs to the Tracker, which may note there that it has seen
	// the entry; the core never reads or sets it.
	Mark bool
	pos  int // index in shard.order
}

// New returns an empty core; t, when not nil, hears of its changes.
func New(t Tracker) *Core {
	c := &Core{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].entries = make(map[string]*Entry)
		c.shards[i].validated = make(map[budgetKey]limiter.Budget)
		c.shards[i].index = i
		c.shards[i].tracker = t
	}
	return c
}

func (c *Core) shard(key string) *shard {
	return &c.shards[maphash.String(c.seed, key)%Shards]
}

// Reserve implements limiter.Store. A key that is not known and that the
// call leaves idle (a refusal, or a check with n == 0) is not stored at
// all.
func (c *Core) Reserve(key string, lim limiter.Limits, n int64, now time.Time) limiter.Decision {
	s := c.shard(key)
	s.mu.Lock()
	var d limiter.Decision
	if e := s.entries[key]; e != nil {
		d = e.Reserve(lim, n, now)
		s.forgetIfIdle(e, now)
	} else {
		var fresh counter.Counter
		d = fresh.Reserve(lim, n, now)
		if !fresh.Idle(now) {
			s.add(key, &fresh)
		}
	}
	s.tick(now)
	s.mu.Unlock()
	return d
}

// Settle implements limiter.Store.
func (c *Core) Settle(key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) limiter.Decision {
	s := c.shard(key)
	s.mu.Lock()
	e := s.entries[key]
	if e == nil && used > 0 {
		e = s.add(key, &counter.Counter{})
	}
	var d limiter.Decision
	if e != nil {
		e.Settle(lim, h.Tokens, used, now)
		if used > 0 && s.tracker != nil {
			s.tracker.Charged(s.index, e)
		}
		d = e.Status(lim, now)
		s.forgetIfIdle(e, now)
	} else {
		var fresh counter.Counter
		d = fresh.Status(lim, now)
	}
	s.tick(now)
	s.mu.Unlock()
	return d
}

// Status implements limiter.Store.
func (c *Core) Status(key string, lim limiter.Limits, now time.Time) limiter.Decision {
	s := c.shard(key)
	s.mu.Lock()
	var d limiter.Decision
	if e := s.entries[key]; e != nil {
		d = e.Status(lim, now)
	} else {
		var fresh counter.Counter
		d = fresh.Status(lim, now)
	}
	s.tick(now)
	s.mu.Unlock()
	return d
}

// ReserveMany implements limiter.Multi: ReserveManyInto an answer of its
// own. Like Reserve, a key that is not known and that the call leaves
// idle is not stored.
func (c *Core) ReserveMany(key string, b limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	var d limiter.Decisions
	err := c.ReserveManyInto(key, b, n, now, &d)
	return d, err
}

// ReserveManyInto implements limiter.MultiInto.
func (c *Core) ReserveManyInto(key string, b limiter.Budget, n []int64, now time.Time, d *limiter.Decisions) error {
	s := c.shard(key)
	s.mu.Lock()
	b, err := s.check(b, n)
	if err != nil {
		s.mu.Unlock()
		*d = limiter.Decisions{Refused: -1}
		return err
	}
	out := room(d.Limits, len(b))
	var refused int
	e := s.entries[key]
	if e != nil {
		refused = e.ReserveMany(b, n, now, out)
	} else {
		var fresh counter.Counter
		refused = fresh.ReserveMany(b, n, now, out)
		if !fresh.Idle(now) {
			s.add(key, &fresh)
		}
	}
	var held []limiter.Amount
	if refused < 0 {
		held = appendAmounts(d.Hold.Amounts[:0], b, n)
	}
	if len(held) == 0 {
		held = nil // a Holds of nothing is the zero one
		if e != nil {
			s.forgetIfIdle(e, now) // a key that holds something is not empty
		}
	}
	*d = limiter.Decisions{Allowed: refused < 0, Refused: refused, Limits: out, Hold: limiter.Holds{Amounts: held}}
	s.tick(now)
	s.mu.Unlock()
	return nil
}

// SettleMany implements limiter.Multi: SettleManyInto an answer of its
// own.
func (c *Core) SettleMany(key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	var d limiter.Decisions
	err := c.SettleManyInto(key, b, h, used, now, &d)
	return d, err
}

// SettleManyInto implements limiter.MultiInto.
func (c *Core) SettleManyInto(key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time, d *limiter.Decisions) error {
	charged := false
	for _, u := range used {
		charged = charged || u > 0
	}
	s := c.shard(key)
	s.mu.Lock()
	b, err := s.check(b, used)
	if err != nil {
		s.mu.Unlock()
		*d = limiter.Decisions{Refused: -1}
		return err
	}
	out := room(d.Limits, len(b))
	e := s.entries[key]
	if e == nil && charged {
		e = s.add(key, &counter.Counter{})
	}
	var refused int
	if e != nil {
		refused = e.SettleMany(b, h.Amounts, used, now, out)
		switch {
		case !charged:
			s.forgetIfIdle(e, now) // a key just charged is not empty
		case s.tracker != nil:
			s.tracker.Charged(s.index, e)
		}
	} else {
		var fresh counter.Counter
		refused = fresh.StatusMany(b, now, out)
	}
	s.tick(now)
	s.mu.Unlock()
	// d's holds' room is left alone: h may be the very holds it keeps.
	*d = limiter.Decisions{Allowed: refused < 0, Refused: refused, Limits: out}
	return nil
}

// StatusMany implements limiter.Multi.
func (c *Core) StatusMany(key string, b limiter.Budget, now time.Time) (limiter.Decisions, error) {
	s := c.shard(key)
	s.mu.Lock()
	b, err := s.valid(b)
	if err != nil {
		s.mu.Unlock()
		return limiter.Decisions{Refused: -1}, err
	}
	out := room(nil, len(b))
	var refused int
	if e := s.entries[key]; e != nil {
		refused = e.StatusMany(b, now, out)
	} else {
		var fresh counter.Counter
		refused = fresh.StatusMany(b, now, out)
	}
	s.tick(now)
	s.mu.Unlock()
	return limiter.Decisions{Allowed: refused < 0, Refused: refused, Limits: out}, nil
}

// check is what every Budget call checks before deciding. It returns
// the shard's copy of b, which the call passes on to the counter: a copy
// never written, so that a counter may know its Budget by address (see
// counter.Counter.ReserveMany) whatever the caller does with b.
func (s *shard) check(b limiter.Budget, amounts []int64) (limiter.Budget, error) {
	v, err := s.valid(b)
	if err != nil {
		return nil, err
	}
	if len(amounts) != len(b) {
		return nil, b.Check(amounts)
	}
	return v, nil
}

// maxValidated bounds how many Budgets a shard remembers as valid. A
// caller passes each of its policies' Budgets (tiers and per-key
// overrides included) call after call, so a shard remembers them all;
// one that makes a Budget a call would otherwise fill the map.
const maxValidated = 1024

// budgetKey is a caller's Budget as a slice: where it starts, how long.
type budgetKey struct {
	first *limiter.Limit
	n     int
}

// valid is b.Validate() for a shard's call, and returns the shard's copy
// of b. Copies are kept by the caller's slice, so that the same Budget
// again costs a lookup and a comparison of memory (a caller may have
// written into its own since) rather than a walk over every byte of
// every name. A copy is never written: when a caller's Budget changes, or
// the map is full, the shard makes another.
func (s *shard) valid(b limiter.Budget) (limiter.Budget, error) {
	from := budgetKey{unsafe.SliceData(b), len(b)}
	if from == s.last && sameBudget(s.lastCopy, b) {
		return s.lastCopy, nil
	}
	v, ok := s.validated[from]
	if !ok || !sameBudget(v, b) {
		if err := b.Validate(); err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return b, nil
		}
		if len(s.validated) >= maxValidated {
			clear(s.validated)
		}
		v = slices.Clone(b)
		s.validated[from] = v
	}
	s.last, s.lastCopy = from, v
	return v, nil
}

func sameBudget(a, b limiter.Budget) bool {
	if len(a) != len(b) || a == nil {
		return false
	}
	// Call after call a key's Budget is the policy's own, whose limits'
	// bytes (names' pointers included) equal those of the copy kept: one
	// comparison of memory whatever the number of limits.
	if rawBytes(a) == rawBytes(b) {
		return true
	}
	for i := range a {
		// Field by field, the name last and its bytes only when it is not
		// the very string validated: Limit's == is a call, and so is
		// comparing bytes.
		x, y := &a[i], &b[i]
		if x.Max != y.Max || x.Window != y.Window || x.Period != y.Period || len(x.Name) != len(y.Name) {
			return false
		}
		if unsafe.StringData(x.Name) != unsafe.StringData(y.Name) && x.Name != y.Name {
			return false
		}
	}
	return true
}

// rawBytes is b's memory. Equal bytes are equal limits; unequal ones may
// still be (padding, or names equal but not shared), which sameBudget
// then looks at field by field.
func rawBytes(b limiter.Budget) string {
	return unsafe.String((*byte)(unsafe.Pointer(unsafe.SliceData(b))), len(b)*int(unsafe.Sizeof(limiter.Limit{})))
}

// room returns have's room for k decisions, or new room when it has too
// little (a caller's answer may be kept: it is never the store's to
// reuse).
func room(have []limiter.LimitDecision, k int) []limiter.LimitDecision {
	if have == nil || k > cap(have) {
		return make([]limiter.LimitDecision, k)
	}
	return have[:k]
}

// appendAmounts appends to a what a reservation of n admitted under b
// holds: n[i] of every limit b[i] with n[i] > 0.
func appendAmounts(a []limiter.Amount, b limiter.Budget, n []int64) []limiter.Amount {
	for i, v := range n {
		if v > 0 {
			a = append(a, limiter.Amount{Name: b[i].Name, N: v})
		}
	}
	return a
}

// List implements limiter.Inspector, one shard lock at a time.
func (c *Core) List(prefix string, now time.Time) []limiter.KeyUsage {
	var out []limiter.KeyUsage
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for key, e := range s.entries {
			if strings.HasPrefix(key, prefix) && !e.Idle(now) {
				out = append(out, limiter.KeyUsage{Key: key, Used: e.Used(now)})
			}
		}
		s.mu.Unlock()
	}
	return out
}

// Reset implements limiter.Inspector.
func (c *Core) Reset(key string) {
	s := c.shard(key)
	s.mu.Lock()
	if e := s.entries[key]; e != nil {
		s.remove(e)
	}
	s.mu.Unlock()
}

// Sweep forgets every key idle at now and returns how many it forgot.
func (c *Core) Sweep(now time.Time) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		// Downwards, so that the entry moved into a freed index has
		// already been looked at.
		for j := len(s.order) - 1; j >= 0; j-- {
			if e := s.order[j]; e.Idle(now) {
				s.remove(e)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Len returns how many keys the core holds, idle ones not yet swept
// included.
func (c *Core) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// With calls fn with key's shard locked, the shard's index and the key's
// entry: nil when the key is not held, unless create asks for a fresh one.
// Nothing in it is told to the Tracker.
func (c *Core) With(key string, create bool, fn func(shard int, e *Entry)) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	if e == nil && create {
		e = s.add(key, &counter.Counter{})
	}
	fn(s.index, e)
}

// Visit calls fn with shard i locked; get finds a key's entry there (nil
// when not held). A Tracker's state for shard i is safe to use inside fn.
func (c *Core) Visit(i int, fn func(get func(key string) *Entry)) {
	s := &c.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(func(key string) *Entry { return s.entries[key] })
}

// add stores a copy of ctr under key. The key is cloned: it may be a slice
// of a whole request the caller would otherwise never get back.
func (s *shard) add(key string, ctr *counter.Counter) *Entry {
	e := &Entry{Counter: *ctr, Key: strings.Clone(key), pos: len(s.order)}
	s.entries[e.Key] = e
	s.order = append(s.order, e)
	return e
}

// remove forgets e, and tells the Tracker.
func (s *shard) remove(e *Entry) {
	delete(s.entries, e.Key)
	last := len(s.order) - 1
	moved := s.order[last]
	s.order[e.pos] = moved
	moved.pos = e.pos
	s.order[last] = nil
	s.order = s.order[:last]
	if s.tracker != nil {
		s.tracker.Forgotten(s.index, e.Key)
	}
}

// forgetIfIdle removes e when a call at now has just left it empty.
func (s *shard) forgetIfIdle(e *Entry, now time.Time) {
	if e.Emptied(now) {
		s.remove(e)
	}
}

// tick counts a call and, every sweepEvery calls, looks at the next keys
// until sweepBatch of their limits have been looked at, forgetting the
// idle ones.
func (s *shard) tick(now time.Time) {
	s.ops++
	if s.ops < sweepEvery {
		return
	}
	s.ops = 0
	// A shard whose keys take fewer than sweepBatch looks in all is gone
	// through once, not several times over in one step.
	for n, keys := 0, 0; n < sweepBatch && keys < len(s.order); keys++ {
		if s.cursor >= len(s.order) {
			s.cursor = 0
		}
		e := s.order[s.cursor]
		idle, looked := e.IdleLooked(now)
		n += looked
		if idle {
			// The last entry moves into cursor: look at it next.
			s.remove(e)
			continue
		}
		s.cursor++
	}
}
