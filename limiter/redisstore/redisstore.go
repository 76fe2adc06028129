// Package redisstore is the limiter.Store whose counters live in Redis,
// shared by every replica, one script per call.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
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
	// HoldLease is how long a hold lives past its reserve, or past its
	// last renewal: the store renews the holds it made every HoldLease/3
	// until they are settled, so a replica that dies with requests in
	// flight frees their budget within one lease (see lease.go).
	// DefaultHoldLease when <= 0; at most HoldTTL, and renewal is off when
	// it is HoldTTL.
	HoldLease time.Duration
	// HoldTTL bounds a hold's life, renewed or not: a hold left unsettled
	// that long (a request never settled by a live replica) is dropped.
	// DefaultHoldTTL when <= 0.
	HoldTTL time.Duration
	// Clock is the time renewals are made at without ServerTime: the
	// clock whose time the callers pass in. limiter.SystemClock when nil.
	Clock limiter.Clock
	// OnRenew, when set, is told after every round of renewals: the holds
	// renewed, the round's time, and its first error (the holds then keep
	// their leases, and the next round tries again).
	OnRenew func(holds int, took time.Duration, err error)
}

// DefaultHoldTTL is the HoldTTL of Options that leave it zero.
const DefaultHoldTTL = 10 * time.Minute

// Store keeps windows, holds and quotas in Redis, shared by every replica.
// Each call is one script, one round trip, whatever the number of limits
// (decideScript). Keys carry the counter key as a hash tag, so one key's
// Redis keys (its holds, and one per limit) sit in one Cluster slot.
//
// A Hold's ID is "random|tokens", a Holds' "random|name=n,name=n": the
// member of the key's holds set, whose amounts the script adds up without
// a second lookup.
type Store struct {
	c          redis.UniversalClient
	prefix     string
	serverTime bool
	holdTTL    time.Duration
	pipe       *pipeliner
	lease      time.Duration
	// renews is set when a lease is shorter than the hold TTL, so there
	// is something to renew.
	renews     bool
	renewEvery time.Duration
	clock      limiter.Clock
	onRenew    func(int, time.Duration, error)
	leases     leases
}

var _ limiter.Store = (*Store)(nil)

// New returns a store on a client, which it then owns; it does not dial.
func New(o Options) *Store {
	if o.HoldTTL <= 0 {
		o.HoldTTL = DefaultHoldTTL
	}
	if o.HoldLease <= 0 {
		o.HoldLease = DefaultHoldLease
	}
	o.HoldLease = min(o.HoldLease, o.HoldTTL)
	if o.Clock == nil {
		o.Clock = limiter.SystemClock{}
	}
	r := &Store{c: o.Client, prefix: o.Prefix, serverTime: o.ServerTime, holdTTL: o.HoldTTL,
		lease: o.HoldLease, renews: o.HoldLease < o.HoldTTL, renewEvery: max(o.HoldLease/3, time.Millisecond),
		clock: o.Clock, onRenew: o.OnRenew, pipe: newPipeliner(o.Client)}
	r.leases.seed = maphash.MakeSeed()
	r.leases.ctx, r.leases.cancel = context.WithCancel(context.Background())
	r.leases.done = make(chan struct{})
	return r
}

// keys are the window, holds and quota keys of a counter key: those of
// the Limits calls, the limits named limiter.WindowLimitName and
// limiter.QuotaLimitName. Braces in the key itself would move the hash
// tag, so they are replaced.
func (r *Store) keys(key string) []string {
	tag := r.tag(key)
	return []string{tag + ":w", tag + ":h", tag + ":q"}
}

func (r *Store) tag(key string) string {
	return r.prefix + "{" + braces.Replace(key) + "}"
}

var braces = strings.NewReplacer("{", "(", "}", ")")

// stateKey is where limit l of the key tagged tag keeps its count: the
// keys the Limits calls always used for their two limits, tag+":l:"+name
// for the others. Every key shares the tag, so one key's Redis keys sit
// in one Cluster slot.
func stateKey(tag string, l *limiter.Limit) string {
	switch l.Name {
	case limiter.WindowLimitName:
		return tag + ":w"
	case limiter.QuotaLimitName:
		return tag + ":q"
	}
	return tag + ":l:" + l.Name
}

func (r *Store) nowArg(now time.Time) int64 {
	if r.serverTime {
		return -1
	}
	return now.UnixMilli()
}

// settleNowArg is nowArg for a settle made s.Late after its response:
// on the server's clock, that much before the server's time.
func (r *Store) settleNowArg(s limiter.Settle) int64 {
	if r.serverTime {
		return -1 - max(s.Late.Milliseconds(), 0)
	}
	return s.Now.UnixMilli()
}

// call runs decideScript, for the key tagged tag, on b, amounts (n or
// used) one per limit.
func (r *Store) call(ctx context.Context, tag string, b limiter.Budget, mode, member string, amounts []int64, now time.Time) (reply, error) {
	keys, args := r.script(tag, b, mode, member, amounts, r.nowArg(now))
	res, err := r.pipe.run(ctx, keys, args)
	if err != nil {
		return reply{}, err
	}
	return parseReply(res, len(b))
}

// limitKey is the key of a limit's state and the scripts' flag of the
// minute window that never wrote its span ("1").
func limitKey(tag string, l *limiter.Limit) (key, implicit string) {
	key = stateKey(tag, l)
	if key == tag+":w" {
		return key, "1"
	}
	return key, "0"
}

// script is the keys and arguments of decideScript for one call, at the
// time argument at (nowArg's, or settleNowArg's for a settle).
func (r *Store) script(tag string, b limiter.Budget, mode, member string, amounts []int64, at int64) ([]string, []any) {
	keys := make([]string, 1, 1+len(b))
	keys[0] = tag + ":h"
	args := make([]any, 0, 6+6*len(b))
	args = append(args, at, mode, member, r.lease.Milliseconds(), (r.holdTTL - r.lease).Milliseconds(), len(b))
	for i := range b {
		l := &b[i]
		k, implicit := limitKey(tag, l)
		keys = append(keys, k)
		args = append(args, l.Name, int(l.Period), l.Window.Milliseconds(), l.Max, max(amounts[i], 0), implicit)
	}
	return keys, args
}

// ReserveMany implements limiter.Multi with one script.
func (r *Store) ReserveMany(ctx context.Context, key string, b limiter.Budget, n []int64, now time.Time) (limiter.Decisions, error) {
	if err := check(b, n); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	amounts := amountsOf(b, n)
	member := ""
	if len(amounts) > 0 {
		member = holdID() + "|" + encodeAmounts(amounts)
	}
	tag := r.tag(key)
	rep, err := r.call(ctx, tag, b, "r", member, n, now)
	if err != nil {
		// The script may still run: the hold it would make is returned so
		// the caller can release it once Redis answers again.
		d := limiter.Decisions{Refused: -1}
		if member != "" {
			d.Hold = limiter.Holds{Amounts: amounts, ID: member}
		}
		return d, fmt.Errorf("limiter: redis reserve: %w", err)
	}
	d := rep.decide(b, n)
	if d.Allowed && member != "" {
		d.Hold = limiter.Holds{Amounts: amounts, ID: member}
		r.leaseAdd(tag, member, rep.now.UnixMilli()+r.holdTTL.Milliseconds())
	}
	return d, nil
}

// SettleMany implements limiter.Multi with one script.
func (r *Store) SettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	return r.settleMany(ctx, key, b, h, used, now, "c")
}

// ReplaySettleMany is ReplaySettle for Holds: it charges used only if the
// hold is still there.
func (r *Store) ReplaySettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	return r.settleMany(ctx, key, b, h, used, now, "p")
}

func (r *Store) settleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time, mode string) (limiter.Decisions, error) {
	if err := check(b, used); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	tag := r.tag(key)
	rep, err := r.call(ctx, tag, b, mode, h.ID, used, now)
	if err != nil {
		// The hold stays leased for the replay (see lease.go).
		return limiter.Decisions{Refused: -1}, fmt.Errorf("limiter: redis settle: %w", err)
	}
	r.leaseDrop(tag, h.ID)
	return rep.decide(b, nil), nil
}

// StatusMany implements limiter.Multi with one script.
func (r *Store) StatusMany(ctx context.Context, key string, b limiter.Budget, now time.Time) (limiter.Decisions, error) {
	if err := b.Validate(); err != nil {
		return limiter.Decisions{Refused: -1}, err
	}
	rep, err := r.call(ctx, r.tag(key), b, "s", "", make([]int64, len(b)), now)
	if err != nil {
		return limiter.Decisions{Refused: -1}, fmt.Errorf("limiter: redis status: %w", err)
	}
	return rep.decide(b, nil), nil
}

// Reserve implements limiter.Store: ReserveMany on lim.Budget(), its hold
// a bare "id|tokens", held in both limits.
func (r *Store) Reserve(ctx context.Context, key string, lim limiter.Limits, n int64, now time.Time) (limiter.Decision, error) {
	n = max(n, 0)
	b := lim.Budget()
	member := ""
	if n > 0 {
		member = holdID() + "|" + strconv.FormatInt(n, 10)
	}
	tag := r.tag(key)
	rep, err := r.call(ctx, tag, b, "r", member, fill(len(b), n), now)
	if err != nil {
		// As ReserveMany.
		var h limiter.Hold
		if n > 0 {
			h = limiter.Hold{Tokens: n, ID: member}
		}
		return limiter.Decision{Hold: h}, fmt.Errorf("limiter: redis reserve: %w", err)
	}
	d := rep.legacy(lim, b, n)
	if d.Allowed && n > 0 {
		d.Hold = limiter.Hold{Tokens: n, ID: member}
		r.leaseAdd(tag, member, rep.now.UnixMilli()+r.holdTTL.Milliseconds())
	}
	return d, nil
}

// Settle implements limiter.Store: SettleMany on lim.Budget().
func (r *Store) Settle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, "c")
}

// ReplaySettle sends again a settle whose first try failed on the client's
// side, and may have run all the same: it charges used only if the hold
// was still there, so a settle that did run is not charged twice. A hold
// with no ID (a reserve of 0 tokens holds nothing) leaves no such proof:
// its replay is charged whatever happened to the first try, and counts
// twice in the rare case that the first did run.
func (r *Store) ReplaySettle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time) (limiter.Decision, error) {
	return r.settle(ctx, key, lim, h, used, now, "p")
}

func (r *Store) settle(ctx context.Context, key string, lim limiter.Limits, h limiter.Hold, used int64, now time.Time, mode string) (limiter.Decision, error) {
	b := lim.Budget()
	tag := r.tag(key)
	rep, err := r.call(ctx, tag, b, mode, h.ID, fill(len(b), used), now)
	if err != nil {
		// As settleMany.
		return limiter.Decision{}, fmt.Errorf("limiter: redis settle: %w", err)
	}
	r.leaseDrop(tag, h.ID)
	return rep.legacy(lim, b, 0), nil
}

// Status implements limiter.Store: StatusMany on lim.Budget().
func (r *Store) Status(ctx context.Context, key string, lim limiter.Limits, now time.Time) (limiter.Decision, error) {
	b := lim.Budget()
	rep, err := r.call(ctx, r.tag(key), b, "s", "", make([]int64, len(b)), now)
	if err != nil {
		return limiter.Decision{}, fmt.Errorf("limiter: redis status: %w", err)
	}
	return rep.legacy(lim, b, 0), nil
}

// Close implements limiter.Store: it stops renewing holds (those still
// held then expire within a lease) and closes the client.
func (r *Store) Close() error {
	r.stopRenewing()
	return r.c.Close()
}

// holdID names a hold uniquely across replicas.
func holdID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func check(b limiter.Budget, amounts []int64) error {
	if err := b.Validate(); err != nil {
		return err
	}
	return b.Check(amounts)
}

func fill(k int, v int64) []int64 {
	out := make([]int64, k)
	for i := range out {
		out[i] = v
	}
	return out
}

// amountsOf is what a reservation of n under b holds.
func amountsOf(b limiter.Budget, n []int64) []limiter.Amount {
	var out []limiter.Amount
	for i, v := range n {
		if v > 0 {
			out = append(out, limiter.Amount{Name: b[i].Name, N: v})
		}
	}
	return out
}

// encodeAmounts writes amounts as the script reads them: "name=n,...".
func encodeAmounts(amounts []limiter.Amount) string {
	var sb strings.Builder
	for i, a := range amounts {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(a.Name)
		sb.WriteByte('=')
		sb.WriteString(strconv.FormatInt(a.N, 10))
	}
	return sb.String()
}

// reply is what the script saw, after its own change.
type reply struct {
	refused int
	now     time.Time
	limits  []limitState
}

// limitState is one limit as the script saw it: the units held, what is
// charged, a window's newest bucket and, when the window refuses, its live
// buckets as (bucket, units) pairs.
type limitState struct {
	held, used, newest int64
	buckets            []int64
}

var errBadReply = errors.New("limiter: unexpected reply from the redis script")

func parseReply(res []any, k int) (reply, error) {
	if len(res) != 3 {
		return reply{}, errBadReply
	}
	refused, ok1 := res[0].(int64)
	ms, ok2 := res[1].(int64)
	ls, ok3 := res[2].([]any)
	if !ok1 || !ok2 || !ok3 || len(ls) != k || refused < -1 || refused >= int64(k) {
		return reply{}, errBadReply
	}
	rep := reply{refused: int(refused), now: time.UnixMilli(ms), limits: make([]limitState, k)}
	for i, l := range ls {
		f, ok := l.([]any)
		if !ok || len(f) != 4 {
			return reply{}, errBadReply
		}
		held, ok1 := f[0].(int64)
		used, ok2 := f[1].(int64)
		newest, ok3 := f[2].(int64)
		bs, ok4 := f[3].([]any)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return reply{}, errBadReply
		}
		st := limitState{held: held, used: used, newest: newest}
		if len(bs) > 0 {
			st.buckets = make([]int64, 0, len(bs))
		}
		for _, b := range bs {
			v, ok := b.(int64)
			if !ok {
				return reply{}, errBadReply
			}
			st.buckets = append(st.buckets, v)
		}
		rep.limits[i] = st
	}
	return rep, nil
}

// decide explains the script's verdict on b with the arithmetic the memory
// store uses; n is the reservation's (nil for a settle or a status).
func (rep reply) decide(b limiter.Budget, n []int64) limiter.Decisions {
	d := limiter.Decisions{Allowed: rep.refused < 0, Refused: rep.refused, Limits: make([]limiter.LimitDecision, len(b))}
	for i := range b {
		var ni int64
		if n != nil {
			ni = n[i]
		}
		d.Limits[i] = rep.explain(&b[i], i, ni)
	}
	return d
}

func (rep reply) explain(l *limiter.Limit, i int, n int64) limiter.LimitDecision {
	st := rep.limits[i]
	if l.Window > 0 {
		return counter.ExplainWindow(*l, n, rep.refused < 0, rep.now, st.used, st.newest, st.buckets, st.held)
	}
	return counter.ExplainQuota(*l, n, rep.refused < 0, rep.now, st.used, st.held)
}

// legacy is decide for the Limits calls: the Decision of lim.
func (rep reply) legacy(lim limiter.Limits, b limiter.Budget, n int64) limiter.Decision {
	var buf [2]limiter.LimitDecision
	out := buf[:len(b)]
	for i := range b {
		out[i] = rep.explain(&b[i], i, n)
	}
	return counter.Legacy(lim, out, rep.refused)
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

// Reset implements limiter.Inspector: the keys of the Limits calls, and
// those of the key's other limits, found with SCAN. Admin use only.
func (r *Store) Reset(ctx context.Context, key string) error {
	keys := r.keys(key)
	iter := r.c.Scan(ctx, 0, escapeGlob(r.tag(key))+":l:*", 256).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	// The keys share a slot, so one DEL works on Cluster too.
	return r.c.Del(ctx, keys...).Err()
}

func escapeGlob(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}
