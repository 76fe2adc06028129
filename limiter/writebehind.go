package limiter

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// change is one key a flush writes: the encoding at vals[start:end], or,
// when that is empty, a deletion.
type change struct {
	key        string
	start, end int
}

// track makes m note the keys that change, for a store writing it behind.
// It must be called before m is shared.
func (m *Memory) track() {
	for i := range m.shards {
		m.shards[i].dirty = make(map[string]struct{})
	}
}

// load puts a restored window in m without marking it changed: the file
// already has it.
func (m *Memory) load(key string, w *window) {
	s := m.shard(key)
	s.mu.Lock()
	if e := s.entries[key]; e != nil {
		e.window = *w
	} else {
		s.add(key, w)
	}
	s.mu.Unlock()
}

// loadQuota puts a restored quota in m.
func (m *Memory) loadQuota(key string, q quota) {
	s := m.shard(key)
	s.mu.Lock()
	e := s.entries[key]
	if e == nil {
		e = s.addEntry(key, &entry{})
	}
	e.quota = &q
	s.mu.Unlock()
}

// appendQuotaOf appends the encoding of key's quota to dst; ok is false
// when the key has no quota worth keeping at now.
func (m *Memory) appendQuotaOf(dst []byte, key string, now time.Time) ([]byte, bool) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	if e == nil || e.quota == nil || e.quota.idle(now) {
		return dst, false
	}
	return appendQuota(dst, e.quota), true
}

// drain takes the keys changed since the last drain and encodes their
// windows into one buffer, one shard lock at a time so that calls wait no
// longer than it takes to encode a shard's share. Windows idle at now, and
// keys forgotten, become deletions.
func (m *Memory) drain(now time.Time) ([]change, []byte) {
	var changes []change
	var vals []byte
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for key := range s.dirty {
			e := s.entries[key]
			if e != nil {
				e.dirty = false
			}
			if len(key) == 0 || len(key) > bolt.MaxKeySize {
				continue
			}
			c := change{key: key, start: len(vals)}
			if e != nil && !e.idle(now) {
				vals = appendWindow(vals, &e.window)
			}
			c.end = len(vals)
			changes = append(changes, c)
		}
		clear(s.dirty)
		s.mu.Unlock()
	}
	return changes, vals
}

// undrain marks the keys of a failed flush changed again, so that the next
// flush writes them.
func (m *Memory) undrain(changes []change) {
	for _, c := range changes {
		s := m.shard(c.key)
		s.mu.Lock()
		s.dirty[c.key] = struct{}{}
		if e := s.entries[c.key]; e != nil {
			e.dirty = true
		}
		s.mu.Unlock()
	}
}
