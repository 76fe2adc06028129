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

// drain takes the keys changed since the last drain, one shard lock at a
// time. Keys bbolt cannot hold are left out.
func (b *Store) drain() []string {
	var keys []string
	for i := range memcore.Shards {
		b.mem.Visit(i, func(get func(string) *memcore.Entry) {
			for key := range b.dirty[i] {
				if e := get(key); e != nil {
					e.Mark = false
				}
				if len(key) != 0 && len(key) <= bolt.MaxKeySize {
					keys = append(keys, key)
				}
			}
			clear(b.dirty[i])
		})
	}
	return keys
}

// undrain marks the keys of a failed flush changed again, so that the next
// flush writes them.
func (b *Store) undrain(keys []string) {
	for _, key := range keys {
		b.mem.With(key, false, func(shard int, e *memcore.Entry) {
			b.dirty[shard][key] = struct{}{}
			if e != nil {
				e.Mark = true
			}
		})
	}
}

// recordOf returns the encoding of key's record; ok is false when the key
// has nothing worth keeping at now.
func (b *Store) recordOf(key string, now time.Time) (v []byte, ok bool) {
	b.mem.With(key, false, func(_ int, e *memcore.Entry) {
		if e != nil {
			v, ok = e.AppendRecord(nil, now)
		}
	})
	return v, ok
}

// List implements limiter.Inspector from memory, which holds every key.
func (b *Store) List(_ context.Context, prefix string, now time.Time) ([]limiter.KeyUsage, error) {
	return b.mem.List(prefix, now), nil
}

// Reset implements limiter.Inspector. The record is deleted now, like
// every quota change.
func (b *Store) Reset(_ context.Context, key string) error {
	b.mem.Reset(key)
	if len(key) == 0 || len(key) > bolt.MaxKeySize {
		return nil
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(countersBucket).Delete([]byte(key))
	})
}
