package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures the shared store.
type RedisOptions struct {
	Client redis.UniversalClient
	// Prefix starts every key, so several deployments can share a server.
	Prefix string
	// ServerTime decides windows and periods on the Redis server's clock
	// (true, the default in the config): replicas whose clocks disagree
	// then still agree on which second a charge lands in. False uses the
	// time passed in, which tests inject.
	ServerTime bool
	// HoldTTL bounds how long a hold outlives a replica that died with
	// the request in flight.
	HoldTTL time.Duration
}

// Redis is a Store whose windows, holds and quotas live in Redis, shared by
// every replica. Each Reserve and each Settle is one script, one round trip.
// Keys carry the counter key as a hash tag, so one key's three Redis keys
// sit in one Cluster slot.
type Redis struct {
	c          redis.UniversalClient
	prefix     string
	serverTime bool
	holdTTL    time.Duration
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Redis store on a client, which it then owns; it does
// not dial.
func NewRedis(o RedisOptions) *Redis {
	if o.HoldTTL <= 0 {
		o.HoldTTL = 10 * time.Minute
	}
	return &Redis{c: o.Client, prefix: o.Prefix, serverTime: o.ServerTime, holdTTL: o.HoldTTL}
}

// keys are the window, holds and quota keys of a counter key. Braces in the
// key itself would move the hash tag, so they are replaced.
func (r *Redis) keys(key string) []string {
	tag := r.prefix + "{" + strings.NewReplacer("{", "(", "}", ")").Replace(key) + "}"
	return []string{tag + ":w", tag + ":h", tag + ":q"}
}

func (r *Redis) nowArg(now time.Time) int64 {
	if r.serverTime {
		return -1
	}
	return now.UnixMilli()
}

// Reserve implements Store with one script.
func (r *Redis) Reserve(ctx context.Context, key string, lim Limits, n int64, now time.Time) (Decision, error) {
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
		var h Hold
		if n > 0 {
			h = Hold{Tokens: n, ID: id + "|" + fmt.Sprint(n)}
		}
		return Decision{Hold: h}, fmt.Errorf("limiter: redis reserve: %w", err)
	}
	st, err := parseState(res)
	if err != nil {
		return Decision{}, err
	}
	d := st.decide(lim, n)
	if d.Allowed && n > 0 {
		d.Hold = Hold{Tokens: n, ID: id + "|" + fmt.Sprint(n)}
	}
	return d, nil
}

// Settle implements Store with one script.
func (r *Redis) Settle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, false)
}

// replaySettle sends again a settle whose first try failed on the client's
// side, and may have run all the same: it charges used only if the hold
// was still there, so a settle that did run is not charged twice. A hold
// with no ID (a reserve of 0 tokens holds nothing) leaves no such proof:
// its replay is charged whatever happened to the first try, and counts
// twice in the rare case that the first did run.
func (r *Redis) replaySettle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, true)
}

func (r *Redis) settle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time, replay bool) (Decision, error) {
	quota := int64(0)
	if lim.Period != NoPeriod {
		quota = max(lim.Quota, 0)
	}
	rep := 0
	if replay {
		rep = 1
	}
	res, err := settleScript.Run(ctx, r.c, r.keys(key), r.nowArg(now), h.ID, max(used, 0),
		max(lim.TokensPerMinute, 0), quota, int(lim.Period), rep).Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("limiter: redis settle: %w", err)
	}
	st, err := parseState(res)
	if err != nil {
		return Decision{}, err
	}
	return st.decide(lim, 0), nil
}

// Status implements Store: Reserve with nothing to hold.
func (r *Redis) Status(ctx context.Context, key string, lim Limits, now time.Time) (Decision, error) {
	return r.Reserve(ctx, key, lim, 0, now)
}

// Close implements Store and closes the client.
func (r *Redis) Close() error { return r.c.Close() }

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
// store uses: the window is rebuilt from the buckets the script returned.
func (st redisState) decide(lim Limits, n int64) Decision {
	var e entry
	sec := st.now.Unix()
	e.head = sec
	for i := 0; i+1 < len(st.buckets); i += 2 {
		s, c := st.buckets[i], st.buckets[i+1]
		if s > sec-Buckets && s <= sec && c > 0 {
			e.buckets[slot(s)] += min(c, maxBucket)
			e.sum += min(c, maxBucket)
		}
	}
	e.reserved = st.held
	allowed := st.reason == 0
	d := e.window.decide(windowLimit(lim), n, sec, st.now, e.sum, allowed)
	if lim.Quota > 0 {
		start, _ := lim.Period.Bounds(st.now)
		q := quota{period: lim.Period, start: start.Unix(), used: st.qused, reserved: st.held}
		d.Quota = q.state(lim.Quota, st.now)
	}
	switch st.reason {
	case 1:
		d.Reason = RateLimited
	case 2:
		d.Reason = QuotaExceeded
		d.RetryAfter = d.Quota.Reset
	}
	return noWindow(lim, d)
}
