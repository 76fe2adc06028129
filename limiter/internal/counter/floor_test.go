package counter

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/storetest"
)

// floorLane is one limit's count as the floor functions keep it: the
// counter's own Window or Quota, in place rather than behind a state's
// pointer.
type floorLane struct {
	w     Window
	q     Quota
	quota bool
}

// floorReserve is ReserveMany cut down to what every limit must do on a
// request: check the fit, hold, draw the decision, list the amount held;
// one loop, no call in it. It handles only a key already shaped, a
// window whose head now is in and a quota whose period now is in
// (answering -2 otherwise). It is not tokengate's code: it bounds from
// below what a limit can add to a decision (BenchmarkLimitFloor).
//
//go:noinline
func floorReserve(lanes []floorLane, b limiter.Budget, n []int64, m moment, out []limiter.LimitDecision, held []limiter.Amount) ([]limiter.Amount, int) {
	lanes, n, out = lanes[:len(b)], n[:len(b)], out[:len(b)]
	for i := range lanes {
		ln, need := &lanes[i], max(n[i], 0)
		var used, reset int64
		if ln.quota {
			q := &ln.q
			if m.sec < q.start || m.sec >= q.end {
				return held, -2
			}
			used, reset = satAdd(q.used, q.reserved), (q.end-m.sec)*1e9-m.nsec
		} else {
			w := &ln.w
			if w.span != 0 || uint64(m.at.ms-w.head*1000) >= 1000 {
				return held, -2
			}
			used = satAdd(w.sum, w.reserved)
			if w.sum != 0 {
				reset = ((w.newest()+Buckets)*1000-m.at.ms)*1e6 - m.at.ns
			}
		}
		limit := b[i].Max
		if !fits(used, max(need, 1), limit) {
			return held, i
		}
		if ln.quota {
			ln.q.reserved += need
		} else {
			ln.w.reserved += need
		}
		used += need
		out[i] = limiter.LimitDecision{Max: limit, Used: used, Remaining: limit - used, Reset: time.Duration(reset)}
		if need > 0 {
			held = append(held, limiter.Amount{Name: b[i].Name, N: need})
		}
	}
	return held, -1
}

// floorSettle is settleShaped cut down as floorReserve is: release what
// was held, charge what was used, draw the decision.
//
//go:noinline
func floorSettle(lanes []floorLane, b limiter.Budget, held []limiter.Amount, used []int64, m moment, out []limiter.LimitDecision) int {
	lanes, used, out = lanes[:len(b)], used[:len(b)], out[:len(b)]
	j, refused := 0, -1
	for i := range lanes {
		ln, u := &lanes[i], used[i]
		var r int64
		if j < len(held) && sameName(held[j].Name, b[i].Name) {
			r = max(held[j].N, 0)
			j++
		}
		var count, reset int64
		if ln.quota {
			q := &ln.q
			if m.sec < q.start || m.sec >= q.end {
				return -2
			}
			q.reserved -= min(r, q.reserved)
			if u > 0 {
				q.used = satAdd(q.used, u)
			}
			count, reset = satAdd(q.used, q.reserved), (q.end-m.sec)*1e9-m.nsec
		} else {
			w := &ln.w
			if w.span != 0 || uint64(m.at.ms-w.head*1000) >= 1000 {
				return -2
			}
			w.reserved -= min(r, w.reserved)
			if u > 0 {
				s := slot(w.head)
				u = min(u, maxBucket-w.buckets[s])
				w.buckets[s] += u
				w.sum += u
				w.age = 0
			}
			count = satAdd(w.sum, w.reserved)
			if w.sum != 0 {
				reset = ((w.newest()+Buckets)*1000-m.at.ms)*1e6 - m.at.ns
			}
		}
		limit := b[i].Max
		out[i] = limiter.LimitDecision{Max: limit, Used: count, Remaining: max(limit-count, 0), Reset: time.Duration(reset)}
		if count >= limit && refused < 0 {
			refused = i
		}
	}
	return refused
}

// BenchmarkLimitFloor is the least a limit adds to a request's decision
// in Go: floorReserve and floorSettle on 1,024 keys, as
// memstore's BenchmarkMemoryBudget/limits=k/serial calls the store, with
// nothing around them (no lookup, no lock, no sweep). The difference
// between limits=4 and limits=1, over three, is that least, to set
// against what the store adds per limit (docs/benchmark-notes.md).
func BenchmarkLimitFloor(b *testing.B) {
	for _, k := range []int{1, 4} {
		b.Run(fmt.Sprintf("limits=%d", k), func(b *testing.B) {
			bud := storetest.BenchBudget(k)
			start := momentOf(t0)
			keys := make([][]floorLane, 1024)
			for i := range keys {
				keys[i] = make([]floorLane, k)
				for j := range keys[i] {
					keys[i][j].w.head = start.sec
				}
				if k == 4 {
					keys[i][3].quota = true
					q := &keys[i][3].q
					q.period, q.start, q.end = limiter.Daily, start.sec, start.sec+86400
				}
			}
			n, used := make([]int64, k), make([]int64, k)
			for i := range n {
				n[i], used[i] = 100, 90
			}
			var out [2][4]limiter.LimitDecision
			held := make([]limiter.Amount, 0, k)
			i := 0
			for b.Loop() {
				// Within one second, so that every window stays in its head.
				m := momentOf(t0.Add(time.Duration(i%1000) * time.Microsecond))
				lanes := keys[i%len(keys)]
				h, refused := floorReserve(lanes, bud, n, m, out[0][:], held[:0])
				if refused != -1 || floorSettle(lanes, bud, h, used, m, out[1][:]) == -2 {
					b.Fatalf("request %d: refused %d, or outside the fast path", i, refused)
				}
				i++
			}
		})
	}
}
