// Package limiter is the contract between the ext_proc processor and the
// stores that keep token budgets: the Store interface, the types it speaks
// (Limits, Decision, Hold, Period; and for several limits at once Budget,
// Limit, Decisions, Holds), the calendar of quota periods and the clock. The stores themselves are in its subpackages (memstore, boltstore,
// redisstore, fallback), and limiter/storetest checks that each one keeps
// the contract.
package limiter

import "time"

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
// replica that made it), its ID. The ID is the store's own: callers pass
// the Hold back unchanged and never read or build an ID (see Store).
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

// Decision is what a store answers to Reserve, Settle and Status. Limit
// through Reset describe the window; Quota the calendar quota.
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
