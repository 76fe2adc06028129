package redisstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
	"github.com/tokengate/tokengate/limiter/memstore"
	"github.com/tokengate/tokengate/limiter/storetest"
)

// BenchmarkDecision is SPEC §9's "limiter check+reserve" for the memory and
// the Redis store in the same run: decisions per second and the latency of
// one decision (p50, p99), from 8 concurrent callers, on loopback. One
// decision is one Reserve: one lock for memory, one script round trip for
// Redis.
func BenchmarkDecision(b *testing.B) {
	addr := redistest.New(b).Addr()
	stores := []struct {
		name string
		s    limiter.Store
	}{
		{"memory", memstore.New()},
		{"redis", newRedisStore(b, addr, true)},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			ctx := context.Background()
			lim := limiter.Limits{TokensPerMinute: 1 << 50}
			var mu sync.Mutex
			var lat []time.Duration
			var next atomic.Int64
			b.SetParallelism(4) // 8 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprint("key-", next.Add(1))
				var mine []time.Duration
				for pb.Next() {
					start := time.Now()
					d, err := st.s.Reserve(ctx, key, lim, 100, start)
					mine = append(mine, time.Since(start))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = st.s.Settle(ctx, key, lim, d.Hold, 90, start)
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

func BenchmarkRedisReserveSettle(b *testing.B) {
	addr := redistest.New(b).Addr()
	red := newRedisStore(b, addr, true)
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 1 << 40}
	b.ReportAllocs()
	for b.Loop() {
		d, err := red.Reserve(ctx, "k", lim, 100, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		_, _ = red.Settle(ctx, "k", lim, d.Hold, 90, time.Now())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkRedisBudget is one decision (ReserveMany, then SettleMany: one
// round trip each, whatever the number of limits) on a Budget of one
// limit and of four (requests, input and output tokens per minute, cost
// per day), on a busy key: the clock moves a second a decision, so that
// every window keeps its 60 buckets.
func BenchmarkRedisBudget(b *testing.B) {
	addr := redistest.New(b).Addr()
	red := newRedisStore(b, addr, false)
	ctx := context.Background()
	// Time only moves forward, across runs too: a window holding buckets
	// ahead of its clock would count them all.
	now := utc(2026, 5, 5, 10, 0, 0)
	for _, k := range []int{1, 4} {
		bud := storetest.BenchBudget(k)
		n, used := make([]int64, k), make([]int64, k)
		for i := range n {
			n[i], used[i] = 100, 90
		}
		b.Run(fmt.Sprintf("limits=%d", k), func(b *testing.B) {
			key := fmt.Sprint("budget-", k)
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Second)
				d, err := red.ReserveMany(ctx, key, bud, n, now)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = red.SettleMany(ctx, key, bud, d.Hold, used, now)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
