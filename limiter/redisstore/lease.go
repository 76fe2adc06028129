package redisstore

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Holds are leases. A hold made by an admitted reserve lives in Redis for
// one lease (Options.HoldLease) past its last renewal, and no longer than
// the hold TTL (Options.HoldTTL) past its reserve, renewed or not. The
// store keeps a registry of the holds it made that no settle has ended
// yet; one goroutine renews all of them every lease/3, with one script
// per Redis key (each key's holds in one sorted set, in one Cluster slot)
// sent as one pipeline (a ClusterClient splits it per node). A replica
// that dies stops renewing: its holds free within one lease, while a live
// replica's streams, however long, keep theirs up to the hold TTL.
//
// The registry is off the request path's round trip: a reserve adds its
// hold to it, a settle removes it, both in memory. A settle that failed
// leaves its hold registered, and renewed, so that the replay fallback
// sends once Redis answers again still finds the hold and charges (a
// replay that succeeds removes it); a hold the renewal finds gone (settled
// by a call whose reply was lost, dropped by an admin reset, expired
// during an outage longer than a lease) leaves the registry then. An
// expired hold stays in Redis, holding nothing, until the hold TTL from
// its last lease (decideScript's grace), so a replay after an outage
// longer than a lease still charges.

// DefaultHoldLease is the HoldLease of Options that leave it zero.
const DefaultHoldLease = 30 * time.Second

// leaseShards spread the registry's lock: every admitted reserve and
// every settle takes one.
const leaseShards = 32

// renewBatch bounds the holds of one key renewed by one script call, so
// that a key with very many requests in flight does not pass Lua's
// argument limits.
const renewBatch = 512

// leases is a Store's registry of live holds and the goroutine that
// renews them.
type leases struct {
	seed   maphash.Seed
	shards [leaseShards]leaseShard

	// ctx ends at Close, and with it the renewer and its round.
	ctx    context.Context
	cancel context.CancelFunc
	start  sync.Once
	done   chan struct{}
	close  sync.Once
}

type leaseShard struct {
	mu sync.Mutex
	// byKey is holds key → member → deadline: the latest expiry the
	// hold may be renewed to (its reserve's time plus the hold TTL), in
	// ms of the clock the script decided on.
	byKey map[string]map[string]int64
	_     [40]byte // one shard per cache line, or near enough
}

func (l *leases) shard(key string) *leaseShard {
	return &l.shards[maphash.String(l.seed, key)%leaseShards]
}

// leaseAdd registers a hold just made for the key tagged tag; the
// renewer starts with the first.
func (r *Store) leaseAdd(tag, member string, deadline int64) {
	if !r.renews {
		return
	}
	holdsKey := tag + ":h"
	s := r.leases.shard(holdsKey)
	s.mu.Lock()
	if s.byKey == nil {
		s.byKey = map[string]map[string]int64{}
	}
	m := s.byKey[holdsKey]
	if m == nil {
		m = map[string]int64{}
		s.byKey[holdsKey] = m
	}
	m[member] = deadline
	s.mu.Unlock()
	r.leases.start.Do(func() { go r.renewLoop() })
}

// leaseDrop forgets a hold: settled, or found gone by a renewal.
func (r *Store) leaseDrop(tag, member string) {
	if !r.renews || member == "" {
		return
	}
	r.forget(tag+":h", member)
}

func (r *Store) forget(holdsKey, member string) {
	s := r.leases.shard(holdsKey)
	s.mu.Lock()
	if m := s.byKey[holdsKey]; m != nil {
		delete(m, member)
		if len(m) == 0 {
			delete(s.byKey, holdsKey)
		}
	}
	s.mu.Unlock()
}

// Leased reports how many holds this store renews: those it made that no
// settle has ended.
func (r *Store) Leased() int {
	n := 0
	for i := range r.leases.shards {
		s := &r.leases.shards[i]
		s.mu.Lock()
		for _, m := range s.byKey {
			n += len(m)
		}
		s.mu.Unlock()
	}
	return n
}

// renewLoop renews every lease/3 until Close.
func (r *Store) renewLoop() {
	defer close(r.leases.done)
	t := time.NewTicker(r.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-r.leases.ctx.Done():
			return
		case <-t.C:
		}
		// A round that takes longer than the period is cut short: the next
		// one sends the same renewals with a later time.
		ctx, cancel := context.WithTimeout(r.leases.ctx, r.renewEvery)
		_ = r.renew(ctx)
		cancel()
	}
}

// stopRenewing ends the renewer and waits for it.
func (r *Store) stopRenewing() {
	r.leases.close.Do(func() {
		r.leases.cancel()
		started := true
		r.leases.start.Do(func() { started = false })
		if started {
			<-r.leases.done
		}
	})
}

// renewal is one script call: holds of one key.
type renewal struct {
	key     string
	members []string
	cmd     *redis.Cmd
	args    []any
}

// renew extends the lease of every registered hold, in one pipeline, and
// forgets the holds Redis no longer has. It tells OnRenew how many holds
// it renewed and the first error; an error leaves the registry as it was,
// for the next round.
func (r *Store) renew(ctx context.Context) error {
	var batch []*renewal
	for i := range r.leases.shards {
		s := &r.leases.shards[i]
		s.mu.Lock()
		for key, m := range s.byKey {
			var cur *renewal
			for member, deadline := range m {
				if cur == nil || len(cur.members) == renewBatch {
					cur = &renewal{key: key}
					batch = append(batch, cur)
				}
				cur.members = append(cur.members, member)
				cur.args = append(cur.args, member, deadline)
			}
		}
		s.mu.Unlock()
	}
	if len(batch) == 0 {
		return nil
	}
	start := time.Now()
	now := r.nowArg(r.clock.Now())
	lease := r.lease.Milliseconds()
	run := func(eval func(redis.Pipeliner, *renewal) *redis.Cmd, todo []*renewal) error {
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, b := range todo {
				b.cmd = eval(p, b)
			}
			return nil
		})
		return err
	}
	args := func(b *renewal) []any { return append([]any{now, lease}, b.args...) }
	err := run(func(p redis.Pipeliner, b *renewal) *redis.Cmd {
		return renewScript.EvalSha(ctx, p, []string{b.key}, args(b)...)
	}, batch)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A server that has not seen the script yet (a fresh one, a
		// failover): the script itself, to the calls that missed it.
		var again []*renewal
		for _, b := range batch {
			if b.cmd.Err() != nil && redis.HasErrorPrefix(b.cmd.Err(), "NOSCRIPT") {
				again = append(again, b)
			}
		}
		err = run(func(p redis.Pipeliner, b *renewal) *redis.Cmd {
			return renewScript.Eval(ctx, p, []string{b.key}, args(b)...)
		}, again)
		if err == nil {
			// The others ran in the first pipeline; its error was NOSCRIPT.
			err = firstErr(batch)
		}
	}
	renewed := 0
	for _, b := range batch {
		if b.cmd == nil || b.cmd.Err() != nil {
			continue
		}
		gone, _ := b.cmd.Int64Slice()
		renewed += len(b.members) - len(gone)
		for _, i := range gone {
			if i >= 1 && int(i) <= len(b.members) {
				r.forget(b.key, b.members[i-1])
			}
		}
	}
	if r.onRenew != nil {
		r.onRenew(renewed, time.Since(start), err)
	}
	return err
}

func firstErr(batch []*renewal) error {
	for _, b := range batch {
		if b.cmd != nil && b.cmd.Err() != nil {
			return b.cmd.Err()
		}
	}
	return nil
}

// renewScript renews the holds of one key: KEYS[1] the holds set; ARGV
// now_ms (-1: the server's time), the lease in ms, then member and
// deadline pairs. A hold still there and not expired gets the expiry
// min(now + lease, deadline), never an earlier one than it has; a hold
// gone (settled, reset) or expired is left alone (ZADD XX never makes a
// member, and an expired hold must stay expired: its budget may already
// be another request's). It returns the positions (from 1) of the holds
// it did not find alive, which the registry forgets. The key's own TTL
// is stretched to outlast the latest expiry.
var renewScript = redis.NewScript(`
local n = tonumber(ARGV[1])
if n < 0 then
  local t = redis.call('TIME')
  n = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lease = tonumber(ARGV[2])
local gone = {}
local top = 0
for i = 3, #ARGV, 2 do
  local member = ARGV[i]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], member))
  if score == nil or score <= n then
    gone[#gone + 1] = (i - 1) / 2
  else
    local to = math.min(n + lease, tonumber(ARGV[i + 1]))
    if to > score then
      redis.call('ZADD', KEYS[1], 'XX', to, member)
      score = to
    end
    if score > top then top = score end
  end
end
if top > n then
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < top - n + 1000 then
    redis.call('PEXPIRE', KEYS[1], top - n + 1000)
  end
end
return gone
`)
