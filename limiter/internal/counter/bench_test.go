package counter

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// BenchmarkCounter is one request's worth of arithmetic on one key, the
// clock moving a millisecond a request: Reserve and Settle through the
// Limits calls, and ReserveMany and SettleMany on Budgets of one and four
// limits.
func BenchmarkCounter(b *testing.B) {
	b.Run("limits", func(b *testing.B) {
		var c Counter
		lim := limiter.Limits{TokensPerMinute: 1 << 40}
		i := 0
		for b.Loop() {
			now := t0.Add(time.Duration(i) * time.Millisecond)
			c.Reserve(lim, 100, now)
			c.Settle(lim, 100, 90, now)
			c.Status(lim, now)
			i++
		}
	})
	for _, k := range []int{1, 4} {
		b.Run(fmt.Sprintf("budget=%d", k), func(b *testing.B) {
			var c Counter
			bud := benchBudget(k)
			n, used := make([]int64, k), make([]int64, k)
			for j := range n {
				n[j], used[j] = 100, 90
			}
			held := make([]limiter.Amount, k)
			for j := range held {
				held[j] = limiter.Amount{Name: bud[j].Name, N: 100}
			}
			out := make([]limiter.LimitDecision, k)
			i := 0
			for b.Loop() {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				c.ReserveMany(bud, n, now, out)
				c.SettleMany(bud, held, used, now, out)
				i++
			}
		})
	}
}

// benchBudget is k limits: a minute of tokens, an hour of input tokens, a
// second of requests, a day of cost.
func benchBudget(k int) limiter.Budget {
	all := limiter.Budget{
		{Name: "tokens", Max: 1 << 50, Window: time.Minute},
		{Name: "input_tokens", Max: 1 << 50, Window: time.Hour},
		{Name: "requests", Max: 1 << 50, Window: time.Second},
		{Name: "cost", Max: 1 << 50, Period: limiter.Daily},
	}
	return all[:k]
}
