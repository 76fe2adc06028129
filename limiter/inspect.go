package limiter

import (
	"context"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// KeyUsage is one counter key as the admin API lists it.
type KeyUsage struct {
	Key string
	// Used is the window's charged tokens plus those held, at the time
	// given to List.
	Used int64
}

// Inspector is implemented by stores the admin API can list and reset.
type Inspector interface {
	// List returns the keys starting with prefix that hold anything.
	List(ctx context.Context, prefix string, now time.Time) ([]KeyUsage, error)
	// Reset forgets a key: its window, holds and quota.
	Reset(ctx context.Context, key string) error
}

var (
	_ Inspector = (*Memory)(nil)
	_ Inspector = (*Bolt)(nil)
	_ Inspector = (*Redis)(nil)
	_ Inspector = (*Fallback)(nil)
)

// List implements Inspector, one shard lock at a time.
func (m *Memory) List(_ context.Context, prefix string, now time.Time) ([]KeyUsage, error) {
	var out []KeyUsage
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for key, e := range s.entries {
			if !strings.HasPrefix(key, prefix) || e.idle(now) {
				continue
			}
			sec, _ := e.clamp(now)
			out = append(out, KeyUsage{Key: key, Used: satAdd(e.charged(sec), e.reserved)})
		}
		s.mu.Unlock()
	}
	return out, nil
}

// Reset implements Inspector.
func (m *Memory) Reset(_ context.Context, key string) error {
	s := m.shard(key)
	s.mu.Lock()
	if e := s.entries[key]; e != nil {
		s.remove(e)
	}
	s.mu.Unlock()
	return nil
}

// List implements Inspector from memory, which holds every key.
func (b *Bolt) List(ctx context.Context, prefix string, now time.Time) ([]KeyUsage, error) {
	return b.mem.List(ctx, prefix, now)
}

// Reset implements Inspector. The window's deletion reaches the file with
// the next flush; the quota's is written now, like every quota change.
func (b *Bolt) Reset(ctx context.Context, key string) error {
	if err := b.mem.Reset(ctx, key); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(quotasBucket).Delete([]byte(key))
	})
}

// List implements Inspector with SCAN over the prefix's window and quota
// keys; admin use only, never on the request path.
func (r *Redis) List(ctx context.Context, prefix string, now time.Time) ([]KeyUsage, error) {
	seen := map[string]bool{}
	var out []KeyUsage
	iter := r.c.Scan(ctx, 0, r.prefix+"{"+escapeGlob(prefix)+"*", 256).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		open, close := strings.IndexByte(k, '{'), strings.LastIndexByte(k, '}')
		if open < 0 || close < open {
			continue
		}
		key := k[open+1 : close]
		if seen[key] {
			continue
		}
		seen[key] = true
		d, err := r.Status(ctx, key, Limits{}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, KeyUsage{Key: key, Used: d.Used})
	}
	return out, iter.Err()
}

// Reset implements Inspector.
func (r *Redis) Reset(ctx context.Context, key string) error {
	// The three keys share a slot, so one DEL works on Cluster too.
	return r.c.Del(ctx, r.keys(key)...).Err()
}

func escapeGlob(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}

// List implements Inspector on whichever store is answering.
func (f *Fallback) List(ctx context.Context, prefix string, now time.Time) ([]KeyUsage, error) {
	if in, ok := f.shared.(Inspector); ok && !f.Down() {
		return in.List(ctx, prefix, now)
	}
	return f.local.List(ctx, prefix, now)
}

// Reset implements Inspector on both stores; the shared store must be
// reachable for its part, and says so when it is not.
func (f *Fallback) Reset(ctx context.Context, key string) error {
	_ = f.local.Reset(ctx, key)
	if in, ok := f.shared.(Inspector); ok {
		return in.Reset(ctx, key)
	}
	return nil
}
