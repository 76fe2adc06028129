package limiter

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
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
			_, _ = m.Settle(ctx, key, Limits{}, Hold{Tokens: 100}, 90, now)
			i++
		}
	})
	reportOps(b)
}

// BenchmarkStoreReserveSettle is a whole request (check+reserve, then
// settle) on each store, serial, with allocations: the window alone, and a
// window with a monthly quota. The bbolt store answers from memory, but
// with a quota every settle waits for its transaction to commit; parallel
// settles share transactions (bbolt's Batch), which the parallel runs show.
func BenchmarkStoreReserveSettle(b *testing.B) {
	limits := map[string]Limits{
		"window":       {TokensPerMinute: 1 << 40},
		"window+quota": {TokensPerMinute: 1 << 40, Quota: 1 << 50, Period: Monthly},
	}
	stores := map[string]func(b *testing.B) Store{
		"memory": func(*testing.B) Store { return NewMemory() },
		"bbolt": func(b *testing.B) Store {
			s, err := OpenBolt(BoltOptions{Path: b.TempDir() + "/bench.db", FlushInterval: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
	}
	for _, storeName := range []string{"memory", "bbolt"} {
		for _, limName := range []string{"window", "window+quota"} {
			lim := limits[limName]
			b.Run(storeName+"/"+limName+"/serial", func(b *testing.B) {
				s := stores[storeName](b)
				ctx := context.Background()
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					now := t0.Add(time.Duration(i) * time.Microsecond)
					key := fmt.Sprint("key-", i%1024)
					_, _ = s.Reserve(ctx, key, lim, 100, now)
					_, _ = s.Settle(ctx, key, lim, Hold{Tokens: 100}, 90, now)
					i++
				}
				reportOps(b)
			})
			b.Run(storeName+"/"+limName+"/parallel", func(b *testing.B) {
				s := stores[storeName](b)
				ctx := context.Background()
				var next atomic.Int64
				b.SetParallelism(32) // settles waiting on disk leave the cores idle otherwise
				b.RunParallel(func(pb *testing.PB) {
					key := fmt.Sprint("key-", next.Add(1))
					i := 0
					for pb.Next() {
						now := t0.Add(time.Duration(i) * time.Microsecond)
						_, _ = s.Reserve(ctx, key, lim, 100, now)
						_, _ = s.Settle(ctx, key, lim, Hold{Tokens: 100}, 90, now)
						i++
					}
				})
				reportOps(b)
			})
		}
	}
}

// BenchmarkDecision is SPEC §9's "limiter check+reserve" for the memory and
// the Redis store in the same run: decisions per second and the latency of
// one decision (p50, p99), from 8 concurrent callers, on loopback. One
// decision is one Reserve: one lock for memory, one script round trip for
// Redis.
func BenchmarkDecision(b *testing.B) {
	addr := startRedis(b)
	stores := []struct {
		name string
		s    Store
	}{
		{"memory", NewMemory()},
		{"redis", newRedisStore(b, addr, true)},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			ctx := context.Background()
			lim := Limits{TokensPerMinute: 1 << 50}
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

// BenchmarkMemoryPerKey measures SPEC §9's memory per active key: a
// million keys, each charged once, in the memory store; bytes/key is the
// live heap they add, map and entries included.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 1_000_000
	ctx := context.Background()
	lim := Limits{TokensPerMinute: 1 << 40}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := NewMemory()
		for i := range keys {
			// Keys as the processor makes them: policy, then a 64-hex hash.
			key := fmt.Sprintf("default:%064x", i)
			_, _ = m.Settle(ctx, key, lim, Hold{}, 100, t0)
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
