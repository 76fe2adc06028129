package memstore

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/storetest"
)

// reportOps adds the ops/s figure the spec's targets are written in.
func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkMemoryReserve is check+reserve through the store, from every
// core at once, on one hot key and spread over many.
func BenchmarkMemoryReserve(b *testing.B) {
	for _, keys := range []int{1, 10000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			m := New()
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
					_, _ = m.Reserve(ctx, names[i%keys], limiter.Limits{TokensPerMinute: math.MaxInt64}, 1, now)
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
	m := New()
	ctx := context.Background()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprint("key-", next.Add(1))
		i := 0
		for pb.Next() {
			now := t0.Add(time.Duration(i) * time.Microsecond)
			_, _ = m.Reserve(ctx, key, limiter.Limits{TokensPerMinute: 1 << 40}, 100, now)
			_, _ = m.Settle(ctx, key, limiter.Limits{}, limiter.Hold{Tokens: 100}, 90, now)
			i++
		}
	})
	reportOps(b)
}

// BenchmarkMemoryPerKey measures SPEC §9's memory per active key: a
// million keys, each charged once, in the memory store; bytes/key is the
// live heap they add, map and entries included.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 1_000_000
	ctx := context.Background()
	lim := limiter.Limits{TokensPerMinute: 1 << 40}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := New()
		for i := range keys {
			// Keys as the processor makes them: policy, then a 64-hex hash.
			key := fmt.Sprintf("default:%064x", i)
			_, _ = m.Settle(ctx, key, lim, limiter.Hold{}, 100, t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if m.Len() != keys {
			b.Fatalf("%d keys held, want %d", m.Len(), keys)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/keys, "bytes/key")
		runtime.KeepAlive(m)
	}
}

// BenchmarkMemoryBudget is one decision on a Budget of one limit and of
// four, a whole request's worth (ReserveMany, then SettleMany): serial
// over 1024 keys, and from every core at once, a key per goroutine. The
// calls answer into a room reused call after call (limiter.MultiInto),
// as tokengate's processor does.
func BenchmarkMemoryBudget(b *testing.B) {
	for _, k := range []int{1, 4} {
		bud := storetest.BenchBudget(k)
		n, used := make([]int64, k), make([]int64, k)
		for i := range n {
			n[i], used[i] = 100, 90
		}
		// request is one request's calls, answered into its room.
		request := func(m *Store, key string, now time.Time, room *[2]limiter.Decisions) {
			ctx := context.Background()
			_ = m.ReserveManyInto(ctx, key, bud, n, now, &room[0])
			_ = m.SettleManyInto(ctx, key, bud, room[0].Hold, used, now, &room[1])
		}
		b.Run(fmt.Sprintf("limits=%d/serial", k), func(b *testing.B) {
			m := New()
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = fmt.Sprintf("default:%064x", i)
			}
			var room [2]limiter.Decisions
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				request(m, keys[i%len(keys)], t0.Add(time.Duration(i)*time.Microsecond), &room)
				i++
			}
			reportOps(b)
		})
		b.Run(fmt.Sprintf("limits=%d/parallel", k), func(b *testing.B) {
			m := New()
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprint("key-", next.Add(1))
				var room [2]limiter.Decisions
				i := 0
				for pb.Next() {
					request(m, key, t0.Add(time.Duration(i)*time.Microsecond), &room)
					i++
				}
			})
			reportOps(b)
		})
	}
}
