// Package cost prices a request's tokens for cost budgets (issue 16): per
// model, per million tokens, in integer micro-units of the currency, so a
// budget adds up exactly and never drifts as floats do.
package cost

import (
	"math"
	"math/bits"
	"strings"

	"github.com/tokengate/tokengate/extproc/llm"
)

// Price is what a million tokens of each kind cost, in micro-units
// (1 USD = 1,000,000): $3 per million input tokens is Input: 3_000_000.
// A zero CachedInput, CacheWrite or Reasoning price means the kind costs
// as its whole does (Input, Input, Output).
type Price struct {
	Input, CachedInput, CacheWrite, Output, Reasoning int64
}

// perMillion is the tokens a price is quoted for.
const perMillion = 1_000_000

// Of is the cost of usage u at price p, in micro-units: the uncached
// input at Input, cache reads at CachedInput, cache writes at CacheWrite,
// the output but its reasoning at Output, the reasoning at Reasoning. Each
// part is rounded up, so a request is never free by rounding, and the sum
// saturates rather than wraps.
func Of(p Price, u llm.Usage) int64 {
	in, out := Split(p, u)
	return satAdd(in, out)
}

// Split is Of in two: the input's cost and the output's, for limits that
// count one of them.
func Split(p Price, u llm.Usage) (input, output int64) {
	cached, written := min(u.CacheRead, u.Prompt), min(u.CacheWrite, max(u.Prompt-u.CacheRead, 0))
	reasoning := min(u.Reasoning, u.Completion)
	input = satAdd(satAdd(Tokens(u.Prompt-cached-written, p.Input), Tokens(cached, or(p.CachedInput, p.Input))),
		Tokens(written, or(p.CacheWrite, p.Input)))
	output = satAdd(Tokens(u.Completion-reasoning, p.Output), Tokens(reasoning, or(p.Reasoning, p.Output)))
	return input, output
}

// Reservation is what strict mode holds for a request's cost: its prompt
// estimate at the input price and its completion budget at the output
// price (the dearer of output and reasoning: the budget may be either).
func Reservation(p Price, promptEstimate, completionBudget int64) (input, output int64) {
	return Tokens(promptEstimate, p.Input), Tokens(completionBudget, max(p.Output, p.Reasoning))
}

// Tokens is the cost of n tokens at price per million, rounded up; no
// cost for nothing, and no overflow for any count.
func Tokens(n, price int64) int64 {
	if n <= 0 || price <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(n), uint64(price))
	if hi >= perMillion { // the quotient would not fit 64 bits
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, perMillion)
	if r > 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// Table is a price list by model, with a price for models it does not
// list, or none (their requests are refused: a cost budget cannot count
// what it cannot price).
type Table struct {
	byModel  map[string]Price
	fallback *Price
}

// NewTable makes a table; models compare without regard to case.
// fallback nil refuses unlisted models.
func NewTable(byModel map[string]Price, fallback *Price) Table {
	t := Table{byModel: make(map[string]Price, len(byModel)), fallback: fallback}
	for m, p := range byModel {
		t.byModel[strings.ToLower(m)] = p
	}
	return t
}

// For returns the price of model; ok is false when the table has none.
func (t Table) For(model string) (Price, bool) {
	if p, ok := t.byModel[strings.ToLower(model)]; ok {
		return p, true
	}
	if t.fallback != nil {
		return *t.fallback, true
	}
	return Price{}, false
}

func or(a, b int64) int64 {
	if a > 0 {
		return a
	}
	return b
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
