package main

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"
)

// The lab's conversation: short, so a run costs about a hundred tokens
// and a 500 tokens-per-minute policy refuses the sixth or seventh.
const (
	systemPrompt = "You are a sarcastic unhelpful assistant."
	userPrompt   = "Can you tell me the time, please?"
)

// Rate limit headers the gateway sets (tokengate, and OpenAI itself).
const (
	hdrRemaining    = "x-ratelimit-remaining-tokens"
	hdrLimit        = "x-ratelimit-limit-tokens"
	hdrRetryAfter   = "retry-after"
	hdrRetryAfterMs = "retry-after-ms"
)

// result is what one run was answered. Status 0 means no answer at all
// (Err says why).
type result struct {
	Run                       int
	Status                    int
	Err                       error
	Prompt, Completion, Total int
	Remaining, Limit          string // header values as sent, "" when absent
	RetryAfter, RetryAfterMs  string
	Start                     time.Time
	Latency                   time.Duration
	Attempts                  []attempt // sdk only: every try the SDK made
}

// retryAfterMs is the retry-after-ms header, else retry-after in ms, else
// -1: the wait the server asked for.
func (r result) retryAfterMs() int {
	// The SDKs read retry-after-ms as a float; so does tokenlab.
	if ms, err := strconv.ParseFloat(r.RetryAfterMs, 64); err == nil && ms >= 0 {
		return int(math.Ceil(ms))
	}
	if s, err := strconv.Atoi(r.RetryAfter); err == nil {
		return s * 1000
	}
	return -1
}

// forEachRun calls do for runs 1..n, at most concurrency at a time, and
// returns once every started run is done. Once ctx is done no new run
// starts, so an interrupted lab stops promptly.
func forEachRun(ctx context.Context, n, concurrency int, do func(ctx context.Context, run int)) {
	runs := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for r := range runs {
				do(ctx, r)
			}
		})
	}
feed:
	for r := 1; r <= n; r++ {
		select {
		case runs <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(runs)
	wg.Wait()
}

// policyLimit is the limit the chart draws: the --limit flag, else the
// first x-ratelimit-limit-tokens header seen; 0 when neither says.
func policyLimit(flagLimit int, results []result) int {
	if flagLimit > 0 {
		return flagLimit
	}
	for _, r := range results {
		if n, err := strconv.Atoi(r.Limit); err == nil && n > 0 {
			return n
		}
	}
	return 0
}
