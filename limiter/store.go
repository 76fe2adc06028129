package limiter

import (
	"context"
	"errors"
	"time"
)

// Store is a set of counters, one per counter key: a sliding window of
// Window in Buckets one-second buckets and, when the Limits ask for one, a
// quota per calendar Period. This comment is the whole contract a store
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
// hold budget for ever; a store in this process keeps holds until they
// are settled (they die with it).
//
// Settle, exactly once per admitted request, ends the request's Hold (the
// zero Hold too: that settle releases nothing) and charges used to the
// window's second and the quota's period of now; used may be zero. A
// store need not detect a second settle of one Hold, but it never releases
// more than the key holds, so counts never go negative and a confused
// caller cannot mint budget; the second settle's used is charged again. A
// hold the store already dropped (its TTL) is settled like the others:
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
// Errors. An error means no decision: the processor refuses the request
// (503) rather than let it through unlimited, so a store applies its own
// failure policy before answering one. ErrUnavailable, wrapped or not,
// says the store refuses on purpose while its backend is away (fallback's
// fail_closed); any other error is the backend's own failure. A Reserve
// that fails may still return the Hold it may have made (a script that ran
// though its reply was lost), so that a wrapping store can release it. A
// call whose context ended may answer the context's error.
type Store interface {
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
	// given to List.
	Used int64
}

// ErrUnavailable is what a fail-closed store answers while its backend is
// down; the processor turns it into a 503.
var ErrUnavailable = errors.New("limiter: store unavailable")
