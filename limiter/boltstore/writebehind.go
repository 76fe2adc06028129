package boltstore

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/memcore"
)

// dirtySets is the store's memcore.Tracker: per shard, the keys whose
// charges changed, or which were forgotten, since the last flush. Shard
// i's set is guarded by the core's lock of shard i, which the core holds
// when it calls the tracker and Visit holds for the drain. An entry's
// Mark says it is in its shard's set, so that a busy key costs one map
// write per flush, not one per settle.
type dirtySets [memcore.Shards]map[string]struct{}

func newDirtySets() *dirtySets {
	var d dirtySets
	for i := range d {
		d[i] = make(map[string]struct{})
	}
	return &d
}

// Charged implements memcore.Tracker.
func (d *dirtySets) Charged(shard int, e *memcore.Entry) {
	if !e.Mark {
		e.Mark = true
		d[shard][e.Key] = struct{}{}
	}
}

// Forgotten implements memcore.Tracker: the flush deletes the key from the
// file.
func (d *dirtySets) Forgotten(shard int, key string) {
	d[shard][key] = struct{}{}
}

// change is one key a flush writes: the encoding at vals[start:end], or,
// when that is empty, a deletion.
type change struct {
	key        string
	start, end int
}

// drain takes the keys changed since the last drain and encodes their
// windows into one buffer, one shard lock at a time so that calls wait no
// longer than it takes to encode a shard's share. Windows idle at now, and
// keys forgotten, become deletions.
func (b *Store) drain(now time.Time) ([]change, []byte) {
	var changes []change
	var vals []byte
	for i := range memcore.Shards {
		b.mem.Visit(i, func(get func(string) *memcore.Entry) {
			for key := range b.dirty[i] {
				e := get(key)
				if e != nil {
					e.Mark = false
				}
				if len(key) == 0 || len(key) > bolt.MaxKeySize {
					continue
				}
				c := change{key: key, start: len(vals)}
				if e != nil && !e.Idle(now) {
					vals = e.AppendWindow(vals)
				}
				c.end = len(vals)
				changes = append(changes, c)
			}
			clear(b.dirty[i])
		})
	}
	return changes, vals
}

// undrain marks the keys of a failed flush changed again, so that the next
// flush writes them.
func (b *Store) undrain(changes []change) {
	for _, c := range changes {
		b.mem.With(c.key, false, func(shard int, e *memcore.Entry) {
			b.dirty[shard][c.key] = struct{}{}
			if e != nil {
				e.Mark = true
			}
		})
	}
}

// quotaOf returns the encoding of key's quota; ok is false when the key
// has no quota worth keeping at now.
func (b *Store) quotaOf(key string, now time.Time) (v []byte, ok bool) {
	b.mem.With(key, false, func(_ int, e *memcore.Entry) {
		if e != nil {
			v, ok = e.AppendQuota(nil, now)
		}
	})
	return v, ok
}

// List implements limiter.Inspector from memory, which holds every key.
func (b *Store) List(_ context.Context, prefix string, now time.Time) ([]limiter.KeyUsage, error) {
	return b.mem.List(prefix, now), nil
}

// Reset implements limiter.Inspector. The window's deletion reaches the
// file with the next flush; the quota's is written now, like every quota
// change.
func (b *Store) Reset(_ context.Context, key string) error {
	b.mem.Reset(key)
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(quotasBucket).Delete([]byte(key))
	})
}
