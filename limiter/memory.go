package limiter

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

const (
	// shardCount spreads keys over that many locks, so that requests for
	// different keys rarely wait on each other.
	shardCount = 64
	// sweepEvery and sweepBatch pace the eviction of idle keys: every
	// sweepEvery operations on a shard, the next sweepBatch keys of that
	// shard are looked at. The cost is a fraction of a key per operation,
	// and a shard of k keys is gone through every k*sweepEvery/sweepBatch
	// of its operations.
	sweepEvery = 4
	sweepBatch = 8
)

// Memory is a Store that keeps every window in this process. Keys are spread
// over shards, each one a mutex and a map, so that Reserve, Settle and Status
// each take exactly one lock. Context is ignored: nothing here waits.
//
// Idle keys (nothing charged in the window, nothing reserved) are forgotten,
// since a fresh window answers the same: at once when a call leaves a window
// empty, gradually by a sweep that rides on the calls to each shard, and all
// at once by Sweep.
type Memory struct {
	seed   maphash.Seed
	shards [shardCount]shard
}

// shard is one lock's share of the keys.
type shard struct {
	mu      sync.Mutex
	entries map[string]*entry
	order   []*entry // the entries in no particular order, for the sweep
	cursor  int      // next index of order the sweep looks at
	ops     int      // calls since the last sweep step
	// dirty is the keys whose charges changed or which were forgotten since
	// the last drain. It is nil unless a Bolt writes this store behind.
	dirty map[string]struct{}
	_     [64]byte // keeps the next shard's mutex off this cache line
}

// entry is a key's window, its quota when it has one, and the bookkeeping
// that lets it be found and forgotten in constant time.
type entry struct {
	window
	quota *quota // nil for keys without a quota, which most are
	key   string
	pos   int  // index in shard.order
	dirty bool // key is in shard.dirty
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].entries = make(map[string]*entry)
	}
	return m
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[maphash.String(m.seed, key)%shardCount]
}

// Reserve implements Store. A key that is not known and that the call leaves
// idle (a refusal, or a check with n == 0) is not stored at all.
func (m *Memory) Reserve(_ context.Context, key string, lim Limits, n int64, now time.Time) (Decision, error) {
	s := m.shard(key)
	s.mu.Lock()
	var d Decision
	if e := s.entries[key]; e != nil {
		d = e.reserve(lim, n, now)
		s.forgetIfIdle(e, now)
	} else {
		var fresh entry
		d = fresh.reserve(lim, n, now)
		if !fresh.idle(now) {
			s.addEntry(key, &fresh)
		}
	}
	s.tick(now)
	s.mu.Unlock()
	return d, nil
}

// Settle implements Store.
func (m *Memory) Settle(_ context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error) {
	s := m.shard(key)
	s.mu.Lock()
	e := s.entries[key]
	if e == nil && used > 0 {
		e = s.addEntry(key, &entry{})
	}
	var d Decision
	if e != nil {
		e.settleAll(lim, h.Tokens, used, now)
		if used > 0 {
			s.markDirty(e)
		}
		d = e.statusAll(lim, now)
		s.forgetIfIdle(e, now)
	} else {
		var fresh entry
		d = fresh.statusAll(lim, now)
	}
	s.tick(now)
	s.mu.Unlock()
	return d, nil
}

// Status implements Store.
func (m *Memory) Status(_ context.Context, key string, lim Limits, now time.Time) (Decision, error) {
	s := m.shard(key)
	s.mu.Lock()
	var d Decision
	if e := s.entries[key]; e != nil {
		d = e.statusAll(lim, now)
	} else {
		var fresh entry
		d = fresh.statusAll(lim, now)
	}
	s.tick(now)
	s.mu.Unlock()
	return d, nil
}

// Sweep forgets every key idle at now and returns how many it forgot. The
// store needs no call to it; it is there for callers who want memory back at
// once, and for tests.
func (m *Memory) Sweep(now time.Time) int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		// Downwards, so that the entry moved into a freed index has
		// already been looked at.
		for j := len(s.order) - 1; j >= 0; j-- {
			if e := s.order[j]; e.idle(now) {
				s.remove(e)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Len returns how many keys the store holds, idle ones not yet swept
// included.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// Close implements Store; there is nothing to release.
func (m *Memory) Close() error { return nil }

// add stores a copy of w under key.
func (s *shard) add(key string, w *window) *entry {
	return s.addEntry(key, &entry{window: *w})
}

// addEntry stores a copy of e under key. The key is cloned: it may be a
// slice of a whole request the caller would otherwise never get back.
func (s *shard) addEntry(key string, e *entry) *entry {
	c := &entry{window: e.window, quota: e.quota, key: strings.Clone(key), pos: len(s.order)}
	s.entries[c.key] = c
	s.order = append(s.order, c)
	return c
}

// remove forgets e, noting it for the file when one is written behind.
func (s *shard) remove(e *entry) {
	delete(s.entries, e.key)
	last := len(s.order) - 1
	moved := s.order[last]
	s.order[e.pos] = moved
	moved.pos = e.pos
	s.order[last] = nil
	s.order = s.order[:last]
	if s.dirty != nil {
		s.dirty[e.key] = struct{}{}
	}
}

// forgetIfIdle removes e when a call has just left it empty. Reserve and
// Settle advance the window, so sum is what the window holds.
func (s *shard) forgetIfIdle(e *entry, now time.Time) {
	if e.sum == 0 && e.reserved == 0 && (e.quota == nil || e.quota.idle(now)) {
		s.remove(e)
	}
}

// markDirty notes that e's charges changed since the last drain.
func (s *shard) markDirty(e *entry) {
	if s.dirty != nil && !e.dirty {
		e.dirty = true
		s.dirty[e.key] = struct{}{}
	}
}

// tick counts a call and, every sweepEvery calls, looks at the next
// sweepBatch keys, forgetting the idle ones.
func (s *shard) tick(now time.Time) {
	s.ops++
	if s.ops < sweepEvery {
		return
	}
	s.ops = 0
	for n := 0; n < sweepBatch && len(s.order) > 0; n++ {
		if s.cursor >= len(s.order) {
			s.cursor = 0
		}
		if e := s.order[s.cursor]; e.idle(now) {
			// The last entry moves into cursor: look at it next.
			s.remove(e)
			continue
		}
		s.cursor++
	}
}
