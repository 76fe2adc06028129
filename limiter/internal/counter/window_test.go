package counter

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

const (
	s  = time.Second
	ms = time.Millisecond
)

// t0 starts a second, as most tests want; at(d) is t0+d.
var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

// wstep is one call on a window and, for reserve and status, its answer.
type wstep struct {
	op       string // "reserve", "settle" or "status"
	t        time.Time
	n        int64 // reserve: tokens asked; settle: tokens released
	used     int64 // settle: tokens charged
	want     limiter.Decision
	wantIdle *bool // when set, idle(t) after the call
}

func reserve(t time.Time, n int64, want limiter.Decision) wstep {
	return wstep{op: "reserve", t: t, n: n, want: want}
}

func settle(t time.Time, reserved, used int64) wstep {
	return wstep{op: "settle", t: t, n: reserved, used: used}
}

func status(t time.Time, want limiter.Decision) wstep {
	return wstep{op: "status", t: t, want: want}
}

func idleAt(t time.Time, want bool) wstep {
	return wstep{op: "idle", t: t, wantIdle: &want}
}

// ok and no build the wanted limiter.Decision; the runner fills in Limit.
func ok(used, remaining int64, reset time.Duration) limiter.Decision {
	return limiter.Decision{Allowed: true, Used: used, Remaining: remaining, Reset: reset}
}

func no(used, remaining int64, reset, retry time.Duration) limiter.Decision {
	return limiter.Decision{Used: used, Remaining: remaining, Reset: reset, RetryAfter: retry}
}

// runWindow plays steps on a fresh window of limit tokens.
func runWindow(t *testing.T, limit int64, steps []wstep) {
	t.Helper()
	var w Window
	for i, st := range steps {
		var got limiter.Decision
		switch st.op {
		case "reserve":
			got = w.reserve(limit, st.n, st.t)
		case "status":
			got = w.status(limit, st.t)
		case "settle":
			w.settle(st.n, st.used, st.t)
			continue
		case "idle":
			if g := w.Idle(st.t); g != *st.wantIdle {
				t.Errorf("step %d: idle at t0+%v: got %v, want %v", i, st.t.Sub(t0), g, *st.wantIdle)
			}
			continue
		}
		want := st.want
		want.Limit = limit
		if got != want {
			t.Errorf("step %d: %s(%d) at t0+%v:\n got %+v\nwant %+v", i, st.op, st.n, st.t.Sub(t0), got, want)
		}
	}
}

func TestWindow(t *testing.T) {
	tests := []struct {
		name  string
		limit int64
		steps []wstep
	}{{
		name: "tokens leave at exactly s+60", limit: 100,
		steps: []wstep{
			settle(at(500*ms), 0, 40), // charged to second t0
			status(at(59*s+999*ms), ok(40, 60, 1*ms)),
			status(at(60*s), ok(0, 100, 0)),
			idleAt(at(59*s+999*ms), false),
			idleAt(at(60*s), true),
		},
	}, {
		name: "retry-after exact for several fills", limit: 100,
		steps: []wstep{
			settle(at(0), 0, 30),
			settle(at(10*s+900*ms), 0, 30),
			settle(at(20*s), 0, 30),
			reserve(at(25*s+250*ms), 10, ok(100, 0, 54*s+750*ms)),
			settle(at(25*s+250*ms), 10, 0),
			reserve(at(25*s+250*ms), 11, no(90, 10, 54*s+750*ms, 34*s+750*ms)),
			reserve(at(25*s+250*ms), 40, no(90, 10, 54*s+750*ms, 34*s+750*ms)),
			reserve(at(25*s+250*ms), 41, no(90, 10, 54*s+750*ms, 44*s+750*ms)),
			reserve(at(25*s+250*ms), 70, no(90, 10, 54*s+750*ms, 44*s+750*ms)),
			reserve(at(25*s+250*ms), 71, no(90, 10, 54*s+750*ms, 54*s+750*ms)),
			reserve(at(25*s+250*ms), 100, no(90, 10, 54*s+750*ms, 54*s+750*ms)),
			// When the first bucket has left, 40 fits at last.
			reserve(at(59*s+999*ms), 40, no(90, 10, 20*s+1*ms, 1*ms)),
			reserve(at(60*s), 40, ok(100, 0, 20*s)),
		},
	}, {
		name: "used == limit", limit: 100,
		steps: []wstep{
			settle(at(0), 0, 99),
			reserve(at(1*s), 0, ok(99, 1, 59*s)),
			status(at(1*s), ok(99, 1, 59*s)),
			reserve(at(1*s), 1, ok(100, 0, 59*s)),
			reserve(at(2*s), 0, no(100, 0, 58*s, 58*s)),
			status(at(2*s), no(100, 0, 58*s, 58*s)),
			settle(at(2*s), 1, 1),
			reserve(at(2*s), 0, no(100, 0, 60*s, 58*s)),
			reserve(at(60*s), 0, ok(1, 99, 2*s)),
		},
	}, {
		name: "n > limit never fits", limit: 100,
		steps: []wstep{
			reserve(at(0), 101, no(0, 100, 0, span)),
			settle(at(0), 0, 1),
			reserve(at(0), 100, no(1, 99, 60*s, 60*s)),
			reserve(at(0), 101, no(1, 99, 60*s, span)),
			idleAt(at(60*s), true),
		},
	}, {
		name: "reservations block, settle releases", limit: 100,
		steps: []wstep{
			reserve(at(0), 60, ok(60, 40, 0)),
			reserve(at(0), 50, no(60, 40, 0, span)),
			reserve(at(0), 40, ok(100, 0, 0)),
			status(at(0), no(100, 0, 0, span)),
			idleAt(at(10*time.Minute), false),
			settle(at(5*s), 60, 10), // 10 charged, 40 still held
			reserve(at(5*s), 61, no(50, 50, 60*s, span)),
			reserve(at(5*s), 51, no(50, 50, 60*s, 60*s)),
			reserve(at(5*s), 50, ok(100, 0, 60*s)),
			settle(at(6*s), 40, 0),
			settle(at(6*s), 50, 0),
			status(at(6*s), ok(10, 90, 59*s)),
			// Releasing more than is held, or charging less than
			// nothing, changes nothing.
			settle(at(6*s), 1000, -5),
			status(at(6*s), ok(10, 90, 59*s)),
			reserve(at(6*s), -3, ok(10, 90, 59*s)),
			idleAt(at(65*s), true),
		},
	}, {
		name: "clock going backwards keeps every token", limit: 100,
		steps: []wstep{
			settle(at(10*s), 0, 50),
			status(at(5*s), ok(50, 50, 60*s)),
			settle(at(3*s), 0, 50), // into second t0+10
			reserve(at(0), 0, no(100, 0, 60*s, 60*s)),
			status(at(69*s+999*ms), no(100, 0, 1*ms, 1*ms)),
			reserve(at(30*s), 0, no(100, 0, 40*s, 40*s)),
			status(at(70*s), ok(0, 100, 0)),
			// Status moved nothing: the head is still t0+30.
			reserve(at(20*s), 0, no(100, 0, 40*s, 40*s)),
		},
	}, {
		name: "reset follows the newest bucket", limit: 1000,
		steps: []wstep{
			reserve(at(0), 5, ok(5, 995, 0)),
			settle(at(1*s), 5, 5),
			settle(at(30*s), 0, 7),
			status(at(30*s+400*ms), ok(12, 988, 59*s+600*ms)),
			status(at(61*s), ok(7, 993, 29*s)),
			settle(at(61*s), 0, 1),
			status(at(89*s), ok(8, 992, 32*s)),
			status(at(120*s), ok(1, 999, 1*s)),
			status(at(121*s), ok(0, 1000, 0)),
		},
	}, {
		name: "a long gap empties the window", limit: 10,
		steps: []wstep{
			settle(at(0), 0, 4),
			settle(at(59*s), 0, 4),
			reserve(at(59*s), 3, no(8, 2, 60*s, 1*s)),
			reserve(at(60*s), 3, ok(7, 3, 59*s)),
			settle(at(60*s), 3, 0),
			reserve(at(10*time.Hour), 10, ok(10, 0, 0)),
			settle(at(10*time.Hour), 10, 10),
			status(at(10*time.Hour+59*s), no(10, 0, 1*s, 1*s)),
		},
	}, {
		name: "no budget at all", limit: 0,
		steps: []wstep{
			reserve(at(0), 0, no(0, 0, 0, span)),
			status(at(0), no(0, 0, 0, span)),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runWindow(t, tt.limit, tt.steps)
		})
	}
}

// TestWindowRetryAfterFits checks, over many fills, that a request admitted
// at now+RetryAfter fits and one a millisecond earlier does not.
func TestWindowRetryAfterFits(t *testing.T) {
	for fill := int64(1); fill <= 60; fill++ {
		for _, n := range []int64{1, 7, 30, 59, 60} {
			var w Window
			// Second k gets k tokens, for k < fill.
			for k := int64(0); k < fill; k++ {
				w.settle(0, k+1, at(time.Duration(k)*s))
			}
			now := at(time.Duration(fill)*s + 123*ms)
			d := w.reserve(60, n, now)
			if d.Allowed {
				continue
			}
			name := fmt.Sprintf("fill %d, n %d", fill, n)
			before := w
			if d := before.reserve(60, n, now.Add(d.RetryAfter-ms)); d.Allowed {
				t.Errorf("%s: admitted 1ms before RetryAfter %v", name, d.RetryAfter)
			}
			after := w
			if d := after.reserve(60, n, now.Add(d.RetryAfter)); !d.Allowed {
				t.Errorf("%s: refused at RetryAfter %v: %+v", name, d.RetryAfter, d)
			}
		}
	}
}

// TestWindowNewest holds Reset and Idle, which read the newest bucket
// charged and no other, to a scan of every bucket, and clamp, which does
// not divide by the span within head, to bucket, over random charges and
// gaps in windows of several spans, the clock stepping back too.
func TestWindowNewest(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, span := range []time.Duration{time.Second, 7 * s, time.Minute, time.Hour} {
		w := NewWindow(span)
		now := t0
		for step := range 3000 {
			gap := time.Duration(r.Int64N(int64(span) / 20))
			switch r.IntN(10) {
			case 0:
				gap = time.Duration(r.Int64N(int64(span) * 2)) // past the whole window
			case 1:
				gap = -gap // the clock went back
			}
			now = now.Add(gap)
			if r.IntN(3) > 0 {
				w.charge(r.Int64N(5), now)
			}
			probe := now.Add(time.Duration(r.Int64N(int64(span) * 3 / 2)))
			i, at := w.clamp(probe)
			if want := max(w.bucket(probe.UnixMilli()), w.head); i != want {
				t.Fatalf("%v step %d: clamped to bucket %d, want %d", span, step, i, want)
			}
			charged := w.charged(i)
			var reset time.Duration
			for b := w.head; b > i-Buckets && charged > 0; b-- {
				if w.buckets[slot(b)] != 0 {
					reset = w.leaves(b, at)
					break
				}
			}
			if d := w.decide(math.MaxInt64, 0, i, at, charged, true); d.Reset != reset {
				t.Fatalf("%v step %d: Reset %v, a scan says %v", span, step, d.Reset, reset)
			}
			if idle := w.Idle(probe); idle != (charged == 0 && w.reserved == 0) {
				t.Fatalf("%v step %d: Idle %v with %d charged", span, step, idle, charged)
			}
		}
	}
}

// BenchmarkWindowReserve is the arithmetic alone: admitted reservations, the
// clock moving a millisecond a call so that seconds roll over.
func BenchmarkWindowReserve(b *testing.B) {
	var w Window
	i := 0
	for b.Loop() {
		w.reserve(math.MaxInt64, 1, t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
