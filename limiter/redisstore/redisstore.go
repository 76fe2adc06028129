// Package redisstore is the limiter.Store whose counters live in Redis,
// shared by every replica, one script per call.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/counter"
)

// Options configures New.
type Options struct {
	Client redis.UniversalClient
	// Prefix starts every key, so several deployments can share a server.
	Prefix string
	// ServerTime decides windows and periods on the Redis server's clock
	// (true, the default in the config): replicas whose clocks disagree
	// then still agree on which second a charge lands in. False uses the
	// time passed in, to the millisecond, which tests inject.
	ServerTime bool
	// HoldTTL bounds how long a hold outlives a replica that died with
	// the request in flight: a hold left unsettled that long is dropped.
	// DefaultHoldTTL when <= 0.
	HoldTTL time.Duration
}

// DefaultHoldTTL is the HoldTTL of Options that leave it zero.
const DefaultHoldTTL = 10 * time.Minute

// Store keeps windows, holds and quotas in Redis, shared by every replica.
// Each Reserve and each Settle is one script, one round trip. Keys carry
// the counter key as a hash tag, so one key's three Redis keys sit in one
// Cluster slot.
//
// A Hold's ID is "random|tokens": the member of the key's holds set, whose
// tokens the scripts add up without a second lookup.
type Store struct {
	c          redis.UniversalClient
	prefix     string
	serverTime bool
	holdTTL    time.Duration
}

var _ limiter.Store = (*Store)(nil)

// New returns a store on a client, which it then owns; it does not dial.
func New(o Options) *Store {
	if o.HoldTTL <= 0 {
		o.HoldTTL = DefaultHoldTTL
	}
	return &Store{c: o.Client, prefix: o.Prefix, serverTime: o.ServerTime, holdTTL: o.HoldTTL}
}

// keys are the window, holds and quota keys of a counter key. Braces in the
// key itself would move the hash tag, so they are replaced.
func (r *Store) keys(key string) []string {
	tag := r.prefix + "{" + strings.NewReplacer("{", "(", "}", ")").Replace(key) + "}"
	return []string{tag + ":w", tag + ":h", tag + ":q"}
}

func (r *Store) nowArg(now time.Time) int64 {
	if r.serverTime {
		return -1
	}
	return now.UnixMilli()
}

// Reserve implements limiter.Store with one script.
func (r *Store) Reserve(ctx context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	n = max(n, 0)
	id := ""
	if n > 0 {
		id = holdID()
	}
	res, err := reserveScript.Run(ctx, r.c, r.keys(key), r.nowArg(now), max(lim.TokensPerMinute, 0),
		max(lim.Quota, 0), int(lim.Period), n, id, r.holdTTL.Milliseconds()).Slice()
	if err != nil {
		// The script may still run (a reply slower than the timeout, a
		// server that stalled): the hold it would make is returned so the
		// caller can release it once Redis answers again.
		var h limiter.Hold
		if n > 0 {
			h = limiter.Hold{Tokens: n, ID: id + "|" + fmt.Sprint(n)}
		}
		return limiter.Decision{Hold: h}, fmt.Errorf("limiter: redis reserve: %w", err)
	}
	st, err := parseState(res)
	if err != nil {
		return limiter.Decision{}, err
	}
	d := st.decide(lim, n)
	if d.Allowed && n > 0 {
		d.Hold = limiter.Hold{Tokens: n, ID: id + "|" + fmt.Sprint(n)}
	}
	return d, nil
}

// Settle implements limiter.Store with one script.
func (r *Store) Settle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, false)
}

// ReplaySettle sends again a settle whose first try failed on the client's
// side, and may have run all the same: it charges used only if the hold
// was still there, so a settle that did run is not charged twice. A hold
// with no ID (a reserve of 0 tokens holds nothing) leaves no such proof:
// its replay is charged whatever happened to the first try, and counts
// twice in the rare case that the first did run.
func (r *Store) ReplaySettle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, true)
}

func (r *Store) settle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time, replay bool) (limiter.Decision, error) {
	quota := int64(0)
	if lim.Period != limiter.NoPeriod {
		quota = max(lim.Quota, 0)
	}
	rep := 0
	if replay {
		rep = 1
	}
	res, err := settleScript.Run(ctx, r.c, r.keys(key), r.nowArg(now), h.ID, max(used, 0),
		max(lim.TokensPerMinute, 0), quota, int(lim.Period), rep).Slice()
	if err != nil {
		return limiter.Decision{}, fmt.Errorf("limiter: redis settle: %w", err)
	}
	st, err := parseState(res)
	if err != nil {
		return limiter.Decision{}, err
	}
	return st.decide(lim, 0), nil
}

// Status implements limiter.Store: Reserve with nothing to hold.
func (r *Store) Status(ctx context.Context, key string, lim limiter.Limits, now time.Time) (limiter.Decision, error) {
	return r.Reserve(ctx, key, lim, 0, now)
}

// Close implements limiter.Store and closes the client.
func (r *Store) Close() error { return r.c.Close() }

// holdID names a hold uniquely across replicas.
func holdID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// redisState is what the reserve script saw, after its own change.
type redisState struct {
	reason  int64
	now     time.Time
	held    int64
	qused   int64
	buckets []int64 // second, tokens, ...
}

var errBadReply = errors.New("limiter: unexpected reply from the redis reserve script")

func parseState(res []any) (redisState, error) {
	if len(res) != 5 {
		return redisState{}, errBadReply
	}
	var st redisState
	var ok [4]bool
	st.reason, ok[0] = res[0].(int64)
	var ms int64
	ms, ok[1] = res[1].(int64)
	st.held, ok[2] = res[2].(int64)
	st.qused, ok[3] = res[3].(int64)
	if ok != [4]bool{true, true, true, true} {
		return redisState{}, errBadReply
	}
	st.now = time.UnixMilli(ms)
	bs, _ := res[4].([]any)
	for _, b := range bs {
		v, isInt := b.(int64)
		if !isInt {
			return redisState{}, errBadReply
		}
		st.buckets = append(st.buckets, v)
	}
	return st, nil
}

// decide explains the script's verdict with the same arithmetic the memory
// store uses.
func (st redisState) decide(lim limiter.Limits, n int64) limiter.Decision {
	reason := limiter.ReasonNone
	switch st.reason {
	case 1:
		reason = limiter.RateLimited
	case 2:
		reason = limiter.QuotaExceeded
	}
	return counter.Explain(lim, n, reason, st.now, st.buckets, st.held, st.qused)
}

// List implements limiter.Inspector with SCAN over the prefix's window
// and quota keys; admin use only, never on the request path.
func (r *Store) List(ctx context.Context, prefix string, now time.Time) ([]limiter.KeyUsage, error) {
	seen := map[string]bool{}
	var out []limiter.KeyUsage
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
		d, err := r.Status(ctx, key, limiter.Limits{}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, limiter.KeyUsage{Key: key, Used: d.Used})
	}
	return out, iter.Err()
}

// Reset implements limiter.Inspector.
func (r *Store) Reset(ctx context.Context, key string) error {
	// The three keys share a slot, so one DEL works on Cluster too.
	return r.c.Del(ctx, r.keys(key)...).Err()
}

func escapeGlob(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}
