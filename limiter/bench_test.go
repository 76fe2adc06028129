package limiter

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// reportOps adds the ops/s figure the spec's targets are written in.
func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkWindowReserve is the arithmetic alone: admitted reservations, the
// clock moving a millisecond a call so that seconds roll over.
func BenchmarkWindowReserve(b *testing.B) {
	var w window
	i := 0
	for b.Loop() {
		w.reserve(math.MaxInt64, 1, t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
	reportOps(b)
}

// BenchmarkMemoryReserve is check+reserve through the store, from every
// core at once, on one hot key and spread over many.
func BenchmarkMemoryReserve(b *testing.B) {
	for _, keys := range []int{1, 10000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			m := NewMemory()
			names := make([]string, keys)
			for i := range names {
				names[i] = fmt.Sprintf("subscription-key-%08d", i)
			}
			var next atomic.Int64
			ctx := context.Background()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 7919
				for pb.Next() {
					now := t0.Add(time.Duration(i) * time.Microsecond)
					_, _ = m.Reserve(ctx, names[i%keys], Limits{TokensPerMinute: math.MaxInt64}, 1, now)
					i++
				}
			})
			reportOps(b)
		})
	}
}

// BenchmarkMemoryReserveSettle is a whole request's worth: reserve, then
// settle what was used.
func BenchmarkMemoryReserveSettle(b *testing.B) {
	m := NewMemory()
	ctx := context.Background()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprint("key-", next.Add(1))
		i := 0
		for pb.Next() {
			now := t0.Add(time.Duration(i) * time.Microsecond)
			_, _ = m.Reserve(ctx, key, Limits{TokensPerMinute: 1 << 40}, 100, now)
			_ = m.Settle(ctx, key, Limits{}, 100, 90, now)
			i++
		}
	})
	reportOps(b)
}
