// Package limiter keeps token budgets: a sliding 60-second window per counter
// key, kept in 1-second buckets, with reservations that are settled exactly
// once. Stores hide behind Store so the ext_proc processor never knows which
// one is in use.
package limiter

import (
	"context"
	"time"
)

// Window is the span of the sliding window; Buckets is how many buckets it
// is kept in, one per second.
const (
	Window  = 60 * time.Second
	Buckets = 60
)

// Limits are the budgets of one counter key: a sliding window, a calendar
// quota, or both (APIM's rule). A zero field is no limit.
type Limits struct {
	TokensPerMinute int64
	Quota           int64
	Period          Period
}

// Hold is what Reserve holds for a request until Settle: the tokens and,
// for a store that must find the hold again (a shared store outliving the
// replica that made it), its ID. A request passes back what its Reserve
// calls gave it.
type Hold struct {
	Tokens int64
	ID     string
}

// Reason says which budget refused a request.
type Reason int

// Reasons; a request both budgets refuse is QuotaExceeded, the one a client
// cannot wait out in a minute.
const (
	ReasonNone Reason = iota
	RateLimited
	QuotaExceeded
)

// Decision is what a store answers to Reserve and Status. Limit through
// Reset describe the window; Quota the calendar quota.
type Decision struct {
	// Allowed reports whether the requested tokens fit both budgets.
	Allowed bool
	// Reason, when !Allowed, says which budget refused.
	Reason Reason
	// Limit is the window's budget, 0 when the key has none.
	Limit int64
	// Used is the tokens charged in the window plus those reserved by
	// requests still in flight, after this call.
	Used int64
	// Remaining is Limit-Used, never below zero.
	Remaining int64
	// RetryAfter, when !Allowed, is the time until enough tokens leave the
	// window for the request to fit. When tokens in flight alone block the
	// request, it is a full Window: the best guess a client can get.
	RetryAfter time.Duration
	// Reset is the time until every charged token has left the window, as
	// OpenAI's x-ratelimit-reset-tokens means it.
	Reset time.Duration
	// Quota is the calendar quota's state, zero when the key has none.
	Quota QuotaState
	// Hold is what this call holds (zero unless admitted with n > 0).
	Hold Hold
}

// QuotaState is a quota as a decision sees it.
type QuotaState struct {
	Limit     int64
	Used      int64 // charged this period plus reserved in flight
	Remaining int64
	// Reset is the time until the period ends and the quota is whole again;
	// it is also the retry-after of a request the quota refused.
	Reset time.Duration
}

// Store is a set of windows, one per counter key. Implementations are safe
// for concurrent use. Every method takes the time so that tests and replicas
// control the clock; a time earlier than one already seen for the key is
// treated as that later time.
type Store interface {
	// Reserve admits a request needing n tokens when used+reserved+max(n,1)
	// <= limit, and then holds n tokens for it until Settle. With n == 0 it
	// is APIM's check: reject once the window is spent. A negative n counts
	// as zero. The check and the hold are one step, so concurrent requests
	// can never be admitted together past the limit.
	//
	// With a quota in lim, the request must also fit the quota, and n is
	// held against both.
	Reserve(ctx context.Context, key string, lim Limits, n int64, now time.Time) (Decision, error)
	// Settle ends the hold h and charges used tokens
	// to the window at now. It must be called exactly once per admitted
	// request; used may be zero. Negative values count as zero, and no more
	// is released than the key holds, so a confused caller cannot mint
	// budget.
	// With a quota in lim, used is also charged to the quota's period at
	// now, and a store that persists keeps it before returning: a crash
	// must not refund a month.
	//
	// It answers what Status would answer right after, so a caller that
	// reports the budget to the client needs no second call (a second
	// round trip, for a shared store).
	Settle(ctx context.Context, key string, lim Limits, h Hold, used int64, now time.Time) (Decision, error)
	// Status reports the window without changing it, as Reserve with n == 0
	// would: Allowed means used+reserved < limit.
	Status(ctx context.Context, key string, lim Limits, now time.Time) (Decision, error)
	// Close flushes what the store must keep and releases its resources.
	Close() error
}

// Clock tells the time. Stores never read the wall clock themselves; the
// processor passes Clock.Now() in.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
