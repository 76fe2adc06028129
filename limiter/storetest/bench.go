package storetest

import (
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// BenchBudget is the Budget of k limits (1 or 4) that the stores'
// Budget benchmarks decide on, so that their figures compare: one minute
// of tokens, or issue 16's four (requests, input and output tokens per
// minute, cost per day). No benchmark run spends it.
func BenchBudget(k int) limiter.Budget {
	if k == 1 {
		return limiter.Budget{{Name: "tokens", Max: 1 << 50, Window: time.Minute}}
	}
	return limiter.Budget{
		{Name: "requests", Max: 1 << 50, Window: time.Minute},
		{Name: "input_tokens", Max: 1 << 50, Window: time.Minute},
		{Name: "output_tokens", Max: 1 << 50, Window: time.Minute},
		{Name: "cost", Max: 1 << 50, Period: limiter.Daily},
	}
}
