package limiter

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Limit is one budget of a counter key: Max units in a sliding Window or,
// with Window 0, in the UTC calendar Period (see Store for how each
// counts). A sliding window is kept in Buckets buckets of Window/Buckets
// each, so it is exact to one bucket: 1/60 of its length (17 ms of a
// second, a second of a minute, a minute of an hour, 24 minutes of a day).
type Limit struct {
	// Name identifies the limit's count within the key ("tokens",
	// "input_tokens", "requests", "cost"), so that a reload that reorders
	// limits, or adds some, keeps each one's count. It is 1 to
	// MaxNameLen bytes of ASCII letters, digits, '_', '-' and '.'.
	Name string
	// Max is the budget; 0 refuses everything.
	Max int64
	// Window is the sliding window's length, MinWindow to MaxWindow in
	// whole milliseconds; 0 for a calendar limit.
	Window time.Duration
	// Period is the calendar limit's period; NoPeriod for a window.
	Period Period
}

// Budget is every limit of a counter key, in the order in which they are
// checked: the first that refuses a request is the one a refusal names.
type Budget []Limit

// Bounds of a Budget.
const (
	MinWindow  = time.Second
	MaxWindow  = 24 * time.Hour
	MaxNameLen = 64
	// MaxLimits bounds a Budget, so that a decision's cost stays bounded
	// (one Redis call carries every limit).
	MaxLimits = 16
)

// The names Limits.Budget gives today's two budgets. A Budget that uses
// them, with a one-minute window and a calendar quota, shares their
// counts: a policy moving from Limits to a Budget keeps its key's state.
const (
	WindowLimitName = "tokens_per_minute"
	QuotaLimitName  = "token_quota"
)

// ErrInvalidBudget is what a store answers, wrapped with the reason, to a
// Budget that Validate refuses, or to amounts that do not match it: no
// decision is made.
var ErrInvalidBudget = errors.New("limiter: invalid budget")

// Validate reports why b cannot be decided on, or nil. Every store checks
// it before deciding.
func (b Budget) Validate() error {
	if len(b) > MaxLimits {
		return fmt.Errorf("%w: %d limits, at most %d", ErrInvalidBudget, len(b), MaxLimits)
	}
	for i, l := range b {
		if err := l.validate(); err != "" {
			return fmt.Errorf("%w: limit %d (%q): %s", ErrInvalidBudget, i, l.Name, err)
		}
		for _, o := range b[:i] {
			if o.Name == l.Name {
				return fmt.Errorf("%w: limit %d: name %q used twice", ErrInvalidBudget, i, l.Name)
			}
		}
	}
	return nil
}

func (l Limit) validate() string {
	if len(l.Name) == 0 || len(l.Name) > MaxNameLen {
		return fmt.Sprintf("name must be 1 to %d bytes", MaxNameLen)
	}
	for i := 0; i < len(l.Name); i++ {
		if c := l.Name[i]; !nameByte(c) {
			return fmt.Sprintf("name has %q: only letters, digits, '_', '-' and '.'", c)
		}
	}
	if l.Max < 0 {
		return "max is negative"
	}
	switch {
	case l.Window == 0 && l.Period == NoPeriod:
		return "neither a window nor a period"
	case l.Window != 0 && l.Period != NoPeriod:
		return "both a window and a period"
	case l.Window != 0 && (l.Window < MinWindow || l.Window > MaxWindow || l.Window%time.Millisecond != 0):
		return fmt.Sprintf("window %v: must be %v to %v in whole milliseconds", l.Window, MinWindow, MaxWindow)
	case l.Period > Yearly:
		return fmt.Sprintf("unknown period %d", l.Period)
	}
	return ""
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

// Check reports whether amounts (a ReserveMany's n, a SettleMany's used)
// fit b, one per limit.
func (b Budget) Check(amounts []int64) error {
	if len(amounts) != len(b) {
		return fmt.Errorf("%w: %d amounts for %d limits", ErrInvalidBudget, len(amounts), len(b))
	}
	return nil
}

// Budget is lim as a Budget: the quota first (QuotaLimitName, when lim
// has one), so that a request both refuse is the quota's, then the window
// (WindowLimitName, one minute). A window without a limit is still kept,
// with Max math.MaxInt64, so that Limits without one count all the same.
func (lim Limits) Budget() Budget { return lim.AppendBudget(nil) }

// AppendBudget appends lim's Budget to dst; stores use it to build one on
// the stack.
func (lim Limits) AppendBudget(dst Budget) Budget {
	if lim.Quota > 0 && lim.Period != NoPeriod {
		dst = append(dst, Limit{Name: QuotaLimitName, Max: lim.Quota, Period: lim.Period})
	}
	tpm := lim.TokensPerMinute
	if tpm <= 0 {
		tpm = math.MaxInt64
	}
	return append(dst, Limit{Name: WindowLimitName, Max: tpm, Window: Window})
}

// Holds is what ReserveMany holds for a request until SettleMany: an
// amount per limit that holds any, by name, so that a settle made under a
// reloaded Budget releases each from the limit it was held in. ID is the
// store's, as Hold's: callers pass Holds back unchanged.
type Holds struct {
	Amounts []Amount
	ID      string
}

// Amount is what a hold holds in one limit.
type Amount struct {
	Name string
	N    int64
}

// LimitDecision is one limit as a decision sees it.
type LimitDecision struct {
	Max int64
	// Used is charged plus held, after the call.
	Used int64
	// Remaining is Max-Used, never below zero.
	Remaining int64
	// Reset is, for a window, the time until every charged unit has
	// left it; for a period, the time until the period ends.
	Reset time.Duration
	// RetryAfter, when this limit does not admit the request, is the time
	// until it would: for a window, until enough units leave it (a whole
	// Window when units in flight alone block the request); for a period,
	// until it ends. Zero when this limit admits it.
	RetryAfter time.Duration
}

// Decisions is what a store answers to ReserveMany, SettleMany and
// StatusMany.
type Decisions struct {
	// Allowed reports whether the request fits every limit.
	Allowed bool
	// Refused is the index in the Budget of the first limit that refuses
	// the request, -1 when it is allowed.
	Refused int
	// Limits are the limits' states, in Budget order.
	Limits []LimitDecision
	// Hold is what this call holds (zero unless admitted with some n > 0).
	Hold Holds
}

// RetryAfter is the time until every limit that refuses the request would
// admit it: the longest of their RetryAfter, zero when it is allowed.
func (d Decisions) RetryAfter() time.Duration {
	var r time.Duration
	for _, l := range d.Limits {
		r = max(r, l.RetryAfter)
	}
	return r
}

// Leaves is, for a window, how long a unit charged at now stays in it:
// until its bucket's start plus Window (Store's comment); for a period,
// until the period ends.
func (l Limit) Leaves(now time.Time) time.Duration {
	if l.Period != NoPeriod {
		_, end := l.Period.Bounds(now)
		return end.Sub(now)
	}
	w, t := l.Window.Milliseconds(), now.UnixMilli()
	if w <= 0 || t < 0 {
		return l.Window
	}
	bucket := t / w * Buckets
	bucket += (t % w) * Buckets / w // floor(t*Buckets/w) without overflow
	start := bucket / Buckets * w
	start += ((bucket%Buckets)*w + Buckets - 1) / Buckets // ceil(bucket*w/Buckets)
	return time.Duration(start+w-t)*time.Millisecond - time.Duration(now.Nanosecond()%int(time.Millisecond))
}
