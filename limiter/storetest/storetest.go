// Package storetest is the conformance suite of limiter.Store: one set of
// tests, decision by decision on an injected clock, that every store runs
// (memstore, boltstore, redisstore, fallback), the Limits calls and the
// Budget calls (limiter.Multi) alike. It checks the contract
// written on limiter.Store and nothing else, so a newcomer adding a store
// (say, a SQL one) needs only this suite to know the store is right: call
// Run from the new package's tests with a function that opens an empty
// store, and make it pass.
package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Opener returns a fresh, empty store for one test, closed by the suite
// when the test ends. The suite passes clock.Now() to every call; a store
// that also reads a clock of its own (boltstore dates its restore and
// flushes by it) is given this one. A store that can decide on a clock of
// its own instead (redisstore's ServerTime) must be opened to use the time
// passed in.
type Opener func(t *testing.T, clock limiter.Clock) limiter.Store

// Option tells the suite what the store under test promises beyond the
// contract's minimum.
type Option func(*suite)

// HoldTTL says that the store drops a hold left unsettled for d (a shared
// store's hold TTL, as the opener configured it). Without it, the suite
// checks that holds last until they are settled. d must be at least
// minHoldTTL: the other tests keep holds a minute or two.
func HoldTTL(d time.Duration) Option { return func(s *suite) { s.holdTTL = d } }

const minHoldTTL = 5 * time.Minute

type suite struct {
	open    Opener
	holdTTL time.Duration
	into    bool // Budget calls through limiter.MultiInto
}

// Run runs the whole suite on the stores open returns, one fresh store
// per subtest.
func Run(t *testing.T, open Opener, opts ...Option) {
	su := &suite{open: open}
	for _, o := range opts {
		o(su)
	}
	if su.holdTTL > 0 && su.holdTTL < minHoldTTL {
		t.Fatalf("storetest: a hold TTL of %v is shorter than the suite's holds; open the store with one of %v or more", su.holdTTL, minHoldTTL)
	}
	type testCase struct {
		name string
		run  func(*testing.T, *suite)
	}
	cases := []testCase{
		// The window (window.go).
		{"AdmitsUpToTheLimit", testAdmitsUpToTheLimit},
		{"TokensLeaveAtSecondPlus60", testTokensLeaveAtSecondPlus60},
		{"WindowSlidesSecondBySecond", testWindowSlidesSecondBySecond},
		{"RetryAfter", testRetryAfter},
		{"RetryAfterFits", testRetryAfterFits},
		{"ResetFollowsNewestBucket", testResetFollowsNewestBucket},
		{"LongGapEmptiesWindow", testLongGapEmptiesWindow},
		{"MoreThanTheLimitNeverFits", testMoreThanTheLimitNeverFits},
		{"KeysAreApart", testKeysAreApart},
		// Holds and settles (holds.go).
		{"HoldsBlockSettleReleases", testHoldsBlockSettleReleases},
		{"SettleReleasesOnlyItsHold", testSettleReleasesOnlyItsHold},
		{"SettleOnce", testSettleOnce},
		{"NegativeAndZero", testNegativeAndZero},
		{"HoldExpiry", testHoldExpiry},
		{"LimitsPerCall", testLimitsPerCall},
		{"NoOvershootUnderConcurrency", testNoOvershoot},
		{"ConcurrentKeysAddUp", testConcurrentKeys},
		{"ListAndReset", testListAndReset},
		// Quotas (quota.go).
		{"QuotaPeriods", testQuotaPeriods},
		{"QuotaAndWindowTogether", testQuotaAndWindowTogether},
		{"QuotaOnlyAdvertisesNoWindow", testQuotaOnly},
		{"HoldOutlivesAPeriod", testHoldOutlivesAPeriod},
		{"Scenario", testScenario},
		// Budgets: several limits at once (budget.go).
		{"BudgetAllOrNothing", testBudgetAllOrNothing},
		{"BudgetWindows", testBudgetWindows},
		{"BudgetRetryAfterFits", testBudgetRetryAfterFits},
		{"BudgetPeriodBesideWindows", testBudgetPeriodBesideWindows},
		{"BudgetHoldsPerLimit", testBudgetHoldsPerLimit},
		{"BudgetReload", testBudgetReload},
		{"BudgetHoldExpiry", testBudgetHoldExpiry},
		{"BudgetNoOvershootUnderConcurrency", testBudgetNoOvershoot},
		{"LimitsAreABudget", testLimitsAreABudget},
		{"InvalidBudget", testInvalidBudget},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, su) })
	}
	// A store that answers into its caller's room (limiter.MultiInto)
	// passes the Budget tests again through it.
	into := *su
	into.into = true
	for _, tc := range cases {
		if strings.HasPrefix(tc.name, "Budget") || tc.name == "LimitsAreABudget" {
			t.Run("Into/"+tc.name, func(t *testing.T) { tc.run(t, &into) })
		}
	}
}

// env is one test's store, and the clock that dates its calls.
type env struct {
	t     *testing.T
	s     limiter.Store
	clock *limiter.ManualClock
	start time.Time
	ctx   context.Context
	into  bool // Budget calls through limiter.MultiInto (see room)
}

// env opens a fresh store on a clock at start.
func (su *suite) env(t *testing.T, start time.Time) *env {
	t.Helper()
	clock := limiter.NewManualClock(start)
	s := su.open(t, clock)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if _, ok := s.(limiter.MultiInto); su.into && !ok {
		t.Skipf("%T answers no caller's room (limiter.MultiInto)", s)
	}
	return &env{t: t, s: s, clock: clock, start: start, ctx: context.Background(), into: su.into}
}

// at moves the clock to start+d and returns that time. Time only moves
// forward: stores may take an earlier time for the latest they have seen.
func (e *env) at(d time.Duration) time.Time {
	e.t.Helper()
	want := e.start.Add(d)
	now := e.clock.Now()
	if want.Before(now) {
		e.t.Fatalf("storetest: the clock cannot go back from start+%v to start+%v", now.Sub(e.start), d)
	}
	return e.clock.Advance(want.Sub(now))
}

func (e *env) reserve(key string, lim limiter.Limits, n int64) limiter.Decision {
	e.t.Helper()
	d, err := e.s.Reserve(e.ctx, key, lim, n, e.clock.Now())
	if err != nil {
		e.t.Fatalf("Reserve(%q, %+v, %d) at start+%v: %v", key, lim, n, e.clock.Now().Sub(e.start), err)
	}
	return d
}

// settle settles h and checks the contract's promise that Settle answers
// what Status answers right after.
func (e *env) settle(key string, lim limiter.Limits, h limiter.Hold, used int64) limiter.Decision {
	e.t.Helper()
	d, err := e.s.Settle(e.ctx, key, lim, h, used, e.clock.Now())
	if err != nil {
		e.t.Fatalf("Settle(%q, %+v, %+v, %d) at start+%v: %v", key, lim, h, used, e.clock.Now().Sub(e.start), err)
	}
	if st := e.status(key, lim); st != d {
		e.t.Errorf("Settle(%q, %+v, %+v, %d) at start+%v answered\n  %+v\nStatus right after\n  %+v",
			key, lim, h, used, e.clock.Now().Sub(e.start), d, st)
	}
	return d
}

func (e *env) status(key string, lim limiter.Limits) limiter.Decision {
	e.t.Helper()
	d, err := e.s.Status(e.ctx, key, lim, e.clock.Now())
	if err != nil {
		e.t.Fatalf("Status(%q, %+v) at start+%v: %v", key, lim, e.clock.Now().Sub(e.start), err)
	}
	return d
}

// used is what Status says is used (charged plus held) in key's window.
func (e *env) used(key string) int64 {
	e.t.Helper()
	return e.status(key, limiter.Limits{TokensPerMinute: 1 << 40}).Used
}
