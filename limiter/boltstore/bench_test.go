package boltstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// BenchmarkStoreReserveSettle is a whole request (check+reserve, then
// settle) on each store, serial, with allocations: the window alone, and a
// window with a monthly quota. The bbolt store answers from memory, but
// with a quota every settle waits for its transaction to commit; parallel
// settles share transactions (bbolt's Batch), which the parallel runs show.
func BenchmarkStoreReserveSettle(b *testing.B) {
	limits := map[string]limiter.Limits{
		"window":       {TokensPerMinute: 1 << 40},
		"window+quota": {TokensPerMinute: 1 << 40, Quota: 1 << 50, Period: limiter.Monthly},
	}
	stores := map[string]func(b *testing.B) limiter.Store{
		"memory": func(*testing.B) limiter.Store { return memstore.New() },
		"bbolt": func(b *testing.B) limiter.Store {
			s, err := Open(Options{Path: b.TempDir() + "/bench.db", FlushInterval: time.Second})
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
					_, _ = s.Settle(ctx, key, lim, limiter.Hold{Tokens: 100}, 90, now)
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
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
						_, _ = s.Settle(ctx, key, lim, limiter.Hold{Tokens: 100}, 90, now)
						i++
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		}
	}
}
