package limiter

import (
	"context"
	"errors"
	"time"
)

// Store is a set of counters, one per counter key: a sliding window of
// Window in Buckets one-second buckets and, when the Limits ask for one, a
// quota per calendar Period; or, through Multi, the limits of a Budget. This comment is the whole contract a store
// keeps; limiter/storetest checks it call by call.
//
// Counting. Tokens charged in the Unix second s count against the window
// while now < s+Window and leave at exactly s+Window. A quota counts the
// tokens charged in the UTC period (Period.Bounds) containing the time of
// the Settle that charged them. Used, in every Decision, is charged plus
// held.
//
// Time. Every call takes now, and a store decides with it: stores never
// read the wall clock to decide (the processor passes Clock.Now(), tests a
// ManualClock), so the caller controls time. Two exceptions, both stated
// by the store: a shared store may be configured to decide on its own
// clock so that replicas agree (redisstore's ServerTime), and an
// in-process store treats a now earlier than one already seen for a key as
// that later time, so a clock stepping back neither loses a token nor
// counts one twice.
//
// Holds. Reserve admits a request needing n tokens when
// used+held+max(n,1) <= limit for the window, and the same for the quota
// when lim has one; the check and the hold are one atomic step, so
// concurrent requests (on any replica sharing the store) are never admitted
// together past a limit. An admitted Reserve with n > 0 returns the Hold
// of its n tokens, held against both budgets until settled. A Reserve that
// holds nothing (n <= 0, which is APIM's check, or a refusal) returns the
// zero Hold. A store shared by replicas drops a hold left unsettled for
// its hold TTL, so that a replica dying with requests in flight does not
// hold budget for ever (redisstore's holds are leases, which the replica
// that made them renews while it lives: a dead replica's free within one
// lease, a live one's last up to the hold TTL; to a caller that never
// waits for a renewal, the lease is the hold TTL); a store in this
// process keeps holds until they are settled (they die with it).
//
// Settle, exactly once per admitted request, ends the request's Hold (the
// zero Hold too: that settle releases nothing) and charges used to the
// window's second and the quota's period of now; used may be zero. A
// store need not detect a second settle of one Hold, but it never releases
// more than the key holds, so counts never go negative and a confused
// caller cannot mint budget; the second settle's used is charged again. A
// hold the store already dropped (its TTL, or lease) is settled like the others:
// used is charged, nothing is released twice. Negative n and used count as
// zero.
//
// Hold IDs are opaque: callers pass a Hold back as Reserve gave it, and
// may fold the zero Hold into another. What an ID says is the store's
// business (redisstore's "id|tokens" lets its script count what a hold
// holds; fallback's "local:" prefix sends a hold's settle to the store
// that made it).
//
// Limits come with every call, not with the key: a reload may change them
// between a request's Reserve and its Settle, and a store answers each call
// by the Limits it is given. A quota counts only what is settled under
// Limits that have one; a hold made under a quota and settled without one
// is released from it, its use charged to the window alone.
//
// Budgets. ReserveMany, SettleMany and StatusMany (Multi) decide on a
// Budget: several limits of one key at once, each with its own unit,
// window and Max. ReserveMany admits a request needing n[i] of each limit
// b[i] when, for every i, used_i+held_i+max(n[i],1) <= Max_i, and then
// holds n[i] in each; the check and the holds are one atomic step across
// all the limits, as for Reserve. A refusal holds nothing in any limit,
// and its Refused is the first limit in Budget order that refuses; every
// limit that refuses has its RetryAfter (Decisions.RetryAfter is the
// longest). SettleMany ends the Holds, releasing each of its amounts from
// the limit of that name, whether or not b still has one (and no more
// than that limit holds), and charges used[i] to b[i] at now; StatusMany
// is ReserveMany with nothing to hold, and SettleMany answers what it
// would answer right after. Holds follow Reserve's rules: a shared store
// drops them after its hold TTL, an in-process one keeps them until
// settled, and Holds.ID is opaque, as Hold.ID.
//
// A limit with a Window of W counts in Buckets buckets of W/Buckets: a
// unit charged at the Unix millisecond t lands in bucket
// floor(t*Buckets/W), which starts at ceil(bucket*W/Buckets), and leaves
// at that start plus W: between W minus one bucket and W after it was
// charged. The precision of a window is one bucket, 1/60 of it (17 ms of
// a second, 1 s of a minute, 1 min of an hour, 24 min of a day). A
// minute's buckets are Unix seconds: it is exactly Store's window. A limit
// with a Period counts as the quota does: what is settled in the UTC
// period containing the settle's now.
//
// A limit's count belongs to its Name within the key, so that a reload
// that reorders a Budget, or adds limits to it, keeps every count; a
// limit dropped from the Budget is forgotten once idle. A name whose
// limit changes kind (window or period), or whose window changes length,
// starts its count afresh, still counting the units held for requests in
// flight; a period that changes keeps the count only when the new period
// starts where the counted one did. The Limits calls are the Budget calls
// on Limits.Budget(): the quota and the window are the limits named
// QuotaLimitName and WindowLimitName, so a Budget that names a one-minute
// window and a quota so shares their counts with the Limits calls. The
// one difference is the Hold: a Limits Hold holds its tokens in both.
//
// A Budget that Validate refuses, or amounts (n, used) that are not one
// per limit, get an error wrapping ErrInvalidBudget and no decision. The
// amounts are the caller's: a store reads them during the call and keeps
// a copy if it needs them later (fallback's replays), so a caller may
// reuse one buffer call after call.
//
// Errors. An error means no decision: the processor refuses the request
// (503) rather than let it through unlimited, so a store applies its own
// failure policy before answering one. ErrUnavailable, wrapped or not,
// says the store refuses on purpose while its backend is away (fallback's
// fail_closed); any other error is the backend's own failure. A Reserve
// that fails may still return the Hold it may have made (a script that ran
// though its reply was lost), so that a wrapping store can release it. A
// call whose context ended may answer the context's error.
type Store interface {
	Multi
	// Reserve checks (n <= 0) or reserves n tokens, as above.
	Reserve(ctx context.Context, key string, lim Limits, n int64, now time.Time) (Decision, error)
	// Settle ends hold h and charges used at now, as above. With a quota
	// in lim, a store that persists keeps the quota's charge before it
	// returns: a crash must not refund a month. It answers what Status
	// would answer right after, so that a caller reporting the budget to
	// the client needs no second call.
	Settle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error)
	// Status reports the key without changing it, as Reserve with n == 0
	// would: Allowed means used+held < limit (and the same for the quota).
	Status(ctx context.Context, key string, lim Limits, now time.Time) (Decision, error)
	Inspector
	// Close flushes what the store must keep and releases its resources.
	Close() error
}

// Multi is the Budget half of every Store: several limits of one key
// decided on at once, as Store's comment says under "Budgets".
type Multi interface {
	// ReserveMany checks (every n[i] <= 0) or reserves n[i] units of each
	// limit b[i], all or nothing.
	ReserveMany(ctx context.Context, key string, b Budget, n []int64, now time.Time) (Decisions, error)
	// SettleMany ends h, releasing each of its amounts from the limit of
	// that name, and charges used[i] to b[i] at now. It answers what
	// StatusMany would answer right after; like Settle, a store that
	// persists keeps a period's charge before it returns.
	SettleMany(ctx context.Context, key string, b Budget, h Holds, used []int64, now time.Time) (Decisions, error)
	// StatusMany reports the key's limits without changing them, as
	// ReserveMany with every n[i] == 0 would.
	StatusMany(ctx context.Context, key string, b Budget, now time.Time) (Decisions, error)
}

// MultiInto is a Multi that can answer into the caller's room: a store in
// this process, whose answers would otherwise each be an allocation (one
// per limit, twice a request). ReserveManyInto and SettleManyInto are
// ReserveMany and SettleMany writing their answer into *d, reusing the
// capacity of d.Limits and, for a reservation, of d.Hold.Amounts; they
// allocate only when that is too little. The caller owns that room: the
// store keeps nothing of it after the call. SettleManyInto leaves the
// room of d.Hold.Amounts alone (its answer holds nothing), so h may be a
// hold kept in it. Callers reach either kind of store through
// ReserveManyInto and SettleManyInto.
type MultiInto interface {
	ReserveManyInto(ctx context.Context, key string, b Budget, n []int64, now time.Time, d *Decisions) error
	SettleManyInto(ctx context.Context, key string, b Budget, h Holds, used []int64, now time.Time, d *Decisions) error
}

// ReserveManyInto is m's ReserveManyInto when m has one, else its
// ReserveMany, whose answer then replaces *d.
func ReserveManyInto(ctx context.Context, m Multi, key string, b Budget, n []int64, now time.Time, d *Decisions) error {
	if mi, ok := m.(MultiInto); ok {
		return mi.ReserveManyInto(ctx, key, b, n, now, d)
	}
	var err error
	*d, err = m.ReserveMany(ctx, key, b, n, now)
	return err
}

// SettleManyInto is m's SettleManyInto when m has one, else its
// SettleMany, whose answer then replaces *d.
func SettleManyInto(ctx context.Context, m Multi, key string, b Budget, h Holds, used []int64, now time.Time, d *Decisions) error {
	if mi, ok := m.(MultiInto); ok {
		return mi.SettleManyInto(ctx, key, b, h, used, now, d)
	}
	var err error
	*d, err = m.SettleMany(ctx, key, b, h, used, now)
	return err
}

// Inspector is the admin API's view of a store, part of every Store: it
// lists and forgets keys, off the request path.
type Inspector interface {
	// List returns the keys starting with prefix that hold anything at
	// now, in no particular order.
	List(ctx context.Context, prefix string, now time.Time) ([]KeyUsage, error)
	// Reset forgets a key: its window, its holds and its quota.
	Reset(ctx context.Context, key string) error
}

// KeyUsage is one counter key as the admin API lists it.
type KeyUsage struct {
	Key string
	// Used is the window's charged tokens plus those held, at the time
	// given to List: the window of the Limits calls (the limit named
	// WindowLimitName), 0 for a key that has only other limits. A
	// Budget's limits are StatusMany's to report.
	Used int64
}

// ErrUnavailable is what a fail-closed store answers while its backend is
// down; the processor turns it into a 503.
var ErrUnavailable = errors.New("limiter: store unavailable")

// Settle is one SettleMany call, as a value: what a store that settles
// behind the response queues, and what a BatchSettler takes many of.
type Settle struct {
	Key    string
	Budget Budget
	Holds  Holds
	Used   []int64
	Now    time.Time
	// Late is how long after its response the settle is sent (the time
	// it waited in a queue). A store that charges at its own clock
	// (Redis's, store.redis.server_time) charges that much earlier, at
	// the response's time as Now says, so that a charge behind its
	// response leaves a window when one made in line would.
	Late time.Duration
}

// BatchSettler is a store that can take many settles in one round trip
// (redisstore pipelines them). SettleManyBatch settles each as SettleMany
// would and answers an error per settle, nil for those that were made.
type BatchSettler interface {
	SettleManyBatch(ctx context.Context, s []Settle) []error
}

// Behind is a store that settles behind the response: SettleBehind queues
// the settle and returns at once, so that the response need not wait for
// a round trip to a shared store; false when the queue is full, and the
// caller then settles in line. The store keeps its own copy of s.Used.
// A queued settle is made within moments, and on Close before the store
// closes; a process killed outright loses what is still queued (the holds
// of those requests free themselves as any dead replica's do).
type Behind interface {
	SettleBehind(s Settle) bool
}

type orderedKey struct{}

// WithOrdered returns ctx carrying f, which a store that runs its calls
// in one order (redisstore's pipeliner: one queue, one pipeline at a time)
// calls once, at the moment the call takes its place in that order,
// before any later call can. A store without one order never calls it.
// behind uses it to know exactly which of its queued settles a check's
// answer counts: those placed before the check, and only those.
func WithOrdered(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, orderedKey{}, f)
}

// Ordered is the f of WithOrdered, nil when ctx has none.
func Ordered(ctx context.Context) func() {
	f, _ := ctx.Value(orderedKey{}).(func())
	return f
}
