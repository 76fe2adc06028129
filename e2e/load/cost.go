package load

import (
	"fmt"
	"math/big"
)

// Price is what a model's tokens cost, per million, in micro-units of the
// currency (2.50 per million is 2,500,000), as a policy's prices: price
// it. The harness prices the upstream's usage itself, so that a cost
// limit is checked against the bill and not against the gateway's own
// account.
type Price struct{ Input, Output int64 }

// Cost is what r's usage costs at p, in micro-units: its prompt at the
// input price and its completion at the output price, each part rounded
// up to a whole micro-unit (⌈tokens × price / 10⁶⌉), as the limiter
// rounds.
func (p Price) Cost(r Record) int64 {
	return perMillionUp(r.Prompt, p.Input) + perMillionUp(r.Completion, p.Output)
}

// perMillionUp is ⌈n × price / 10⁶⌉, exact in any size (a usage is
// counted in int64 tokens, a price in int64 micro-units).
func perMillionUp(n, price int64) int64 {
	if n <= 0 || price <= 0 {
		return 0
	}
	q, m := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(n), big.NewInt(price)), big.NewInt(1_000_000), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		panic(fmt.Sprintf("load: %d tokens at %d per million overflow int64", n, price))
	}
	return q.Int64()
}

// Cost is what the admitted requests cost at p, in micro-units.
func (r *Result) Cost(p Price) int64 {
	var sum int64
	for _, rec := range r.Records {
		sum += p.Cost(rec)
	}
	return sum
}

// WorstCost is the 60-second window that charged the most cost at p; its
// Tokens are micro-units.
func (r *Result) WorstCost(p Price) Window {
	return WorstWindowOf(r.Records, WindowSpan, p.Cost)
}

// ReportCost is Report in cost: the worst window at p against limit,
// both in micro-units.
func (r *Result) ReportCost(p Price, limit int64) string {
	return r.report(r.WorstCost(p), limit, "micro-units")
}
