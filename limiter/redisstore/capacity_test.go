package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/behind"
	"github.com/tokengate/tokengate/limiter/internal/redistest"
)

// info reads fields of Redis's INFO section as numbers.
func info(b *testing.B, c *redis.Client, section string, fields ...string) []float64 {
	b.Helper()
	txt, err := c.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float64, len(fields))
	for _, line := range strings.Split(txt, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for i, f := range fields {
			if k == f {
				out[i], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

// commands is the number of calls Redis counted: every command summed
// (those the scripts run inside included), and the scripts alone.
func commands(b *testing.B, c *redis.Client) (all, scripts float64) {
	b.Helper()
	txt, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(txt, "\r\n") {
		if name, rest, ok := strings.Cut(line, ":calls="); ok {
			v, _, _ := strings.Cut(rest, ",")
			f, _ := strconv.ParseFloat(v, 64)
			all += f
			if name == "cmdstat_evalsha" || name == "cmdstat_eval" {
				scripts += f
			}
		}
	}
	return all, scripts
}

// BenchmarkRedisCapacity is what one request costs Redis, the inputs of
// docs/capacity.md: a request is a check at its headers and a settle at
// its response (ReserveMany with nothing to hold, then SettleMany), from 8
// concurrent callers over 10,000 keys, through the store as tokengate
// uses it (concurrent calls pipelined): inline, every check and settle a
// script; behind (tokengate's default), settles batched behind the
// responses and checks far from the limits answered from the last answer. It reports, per request, Redis's
// own CPU time (INFO cpu: what one Redis core spends, whatever else runs
// on the machine), the commands Redis executed and the bytes it read and
// wrote; and, for the active keys the run leaves, Redis's memory per key.
func BenchmarkRedisCapacity(b *testing.B) {
	for _, run := range []struct {
		k      int
		behind bool
	}{{1, false}, {4, false}, {1, true}, {4, true}} {
		k := run.k
		name := fmt.Sprintf("limits=%d/inline", k)
		if run.behind {
			name = fmt.Sprintf("limits=%d/behind", k)
		}
		b.Run(name, func(b *testing.B) {
			addr := redistest.New(b).Addr()
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			var red limiter.Store = New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "cap:"})
			var queued *behind.Store
			if run.behind {
				// As tokengate runs it: settles behind the responses,
				// checks far from the limits answered from the last
				// answer.
				queued = behind.New(red, behind.Options{})
				red = queued
			}
			defer red.Close()
			bud := budget4[:k]
			used := make([]int64, k)
			for i := range used {
				used[i] = 10
			}
			ctx := context.Background()
			now := utc(2026, 5, 5, 10, 0, 0)
			if _, err := red.StatusMany(ctx, "warm", bud, now); err != nil {
				b.Fatal(err)
			}
			const callers, keys = 8, 10000
			mem0 := info(b, c, "memory", "used_memory")[0]
			cpu0 := info(b, c, "cpu", "used_cpu_sys", "used_cpu_user")
			net0 := info(b, c, "stats", "total_net_input_bytes", "total_net_output_bytes")
			cmd0, scr0 := commands(b, c)
			var wg sync.WaitGroup
			per := (b.N + callers - 1) / callers
			b.ResetTimer()
			for w := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						key := fmt.Sprint("key-", (w*per+i)%keys)
						at := now.Add(time.Duration(i) * time.Millisecond)
						d, err := red.ReserveMany(ctx, key, bud, make([]int64, k), at)
						if err != nil {
							b.Error(err)
							return
						}
						if queued != nil && queued.SettleBehind(limiter.Settle{Key: key, Budget: bud, Holds: d.Hold, Used: used, Now: at}) {
							continue
						}
						if _, err := red.SettleMany(ctx, key, bud, d.Hold, used, at); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if queued != nil {
				queued.Flush()
			}
			b.StopTimer()
			n := float64(per * callers)
			cpu1 := info(b, c, "cpu", "used_cpu_sys", "used_cpu_user")
			net1 := info(b, c, "stats", "total_net_input_bytes", "total_net_output_bytes")
			cmd1, scr1 := commands(b, c)
			cmds := cmd1 - cmd0 - 3 // the INFO calls in between
			b.ReportMetric((cpu1[0]+cpu1[1]-cpu0[0]-cpu0[1])*1e6/n, "redis-cpu-µs/req")
			b.ReportMetric(cmds/n, "redis-cmds/req")
			b.ReportMetric((scr1-scr0)/n, "scripts/req")
			b.ReportMetric((net1[0]-net0[0])/n, "bytes-in/req")
			b.ReportMetric((net1[1]-net0[1])/n, "bytes-out/req")
			active := min(n, keys)
			b.ReportMetric((info(b, c, "memory", "used_memory")[0]-mem0)/active, "redis-bytes/key")
		})
	}
}

// scriptMicros is the time Redis spent in scripts (INFO commandstats,
// evalsha and eval: the commands inside them included) in µs.
func scriptMicros(b *testing.B, c *redis.Client) float64 {
	b.Helper()
	txt, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var usec float64
	for _, line := range strings.Split(txt, "\r\n") {
		for _, name := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				_, v, _ := strings.Cut(rest, "usec=")
				v, _, _ = strings.Cut(v, ",")
				f, _ := strconv.ParseFloat(v, 64)
				usec += f
			}
		}
	}
	return usec
}

// BenchmarkRedisScripts is what each script costs Redis itself on a busy
// key (a minute window charged every second of the last minute: 60
// buckets), over 1,000 keys: a check (the headers' status, as a view
// refresh makes it), a settle in a batch of 50 to a bucket already
// charged (the steady state: one HINCRBY), and one that starts a bucket
// (the shape read and the expiry besides). It reports Redis's time in
// scripts per call (INFO commandstats), which docs/benchmark-notes.md
// quotes.
func BenchmarkRedisScripts(b *testing.B) {
	addr := redistest.New(b).Addr()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	red := New(Options{Client: redis.NewClient(&redis.Options{Addr: addr}), Prefix: "scripts:"})
	defer red.Close()
	bud := limiter.Budget{{Name: limiter.WindowLimitName, Max: 1 << 50, Window: time.Minute}}
	const keys = 1000
	key := func(i int) string { return fmt.Sprint("k", i%keys) }
	t0 := utc(2026, 5, 5, 10, 0, 0)
	settle := func(i0, n int, at time.Time) {
		batch := make([]limiter.Settle, n)
		for j := range batch {
			batch[j] = limiter.Settle{Key: key(i0 + j), Budget: bud, Used: []int64{7}, Now: at}
		}
		for j, err := range red.SettleManyBatch(ctx, batch) {
			if err != nil {
				b.Fatalf("settle %d: %v", j, err)
			}
		}
	}
	for s := range 60 {
		for i := 0; i < keys; i += 100 {
			settle(i, 100, t0.Add(time.Duration(s)*time.Second))
		}
	}
	last := t0.Add(59 * time.Second)
	run := func(name string, per int, op func(i int)) {
		b.Run(name, func(b *testing.B) {
			u0 := scriptMicros(b, c)
			i := 0
			for b.Loop() {
				op(i)
				i += per
			}
			b.ReportMetric((scriptMicros(b, c)-u0)/float64(i), "redis-µs/op")
		})
	}
	run("check", 1, func(i int) {
		if _, err := red.StatusMany(ctx, key(i), bud, last); err != nil {
			b.Fatal(err)
		}
	})
	run("settle/bucket-charged", 50, func(i int) { settle(i, 50, last) })
	// Each round over the keys a new second: every settle starts its
	// key's bucket (and the key keeps one more: settles drop none).
	run("settle/bucket-starts", 50, func(i int) { settle(i, 50, last.Add(time.Duration(1+i/keys)*time.Second)) })
}
