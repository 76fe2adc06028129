package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// window and period build the limits of the Budget tests.
func window(name string, max int64, w time.Duration) limiter.Limit {
	return limiter.Limit{Name: name, Max: max, Window: w}
}

func period(name string, max int64, p limiter.Period) limiter.Limit {
	return limiter.Limit{Name: name, Max: max, Period: p}
}

// lim is one limit of a wanted decision: max, used, remaining, reset and
// retry-after.
func lim(max, used, remaining int64, reset, retry time.Duration) limiter.LimitDecision {
	return limiter.LimitDecision{Max: max, Used: used, Remaining: remaining, Reset: reset, RetryAfter: retry}
}

// admit and refuse build wanted Decisions; mplay fills in the Hold.
func admit(limits ...limiter.LimitDecision) limiter.Decisions {
	return limiter.Decisions{Allowed: true, Refused: -1, Limits: limits}
}

func refuse(by int, limits ...limiter.LimitDecision) limiter.Decisions {
	return limiter.Decisions{Refused: by, Limits: limits}
}

// mstep is one Budget call on key "k" and, for a reserve or a status, its
// answer.
type mstep struct {
	at   time.Duration
	op   string         // "reserve", "settle" or "status"
	n    []int64        // reserve: units asked of each limit
	of   int            // settle: the step whose Holds are settled, -1 for none
	used []int64        // settle: units charged to each limit
	b    limiter.Budget // the call's limits, when not the test's
	want limiter.Decisions
}

func mreserve(at time.Duration, n []int64, want limiter.Decisions) mstep {
	return mstep{at: at, op: "reserve", n: n, want: want}
}

func msettle(at time.Duration, of int, used []int64) mstep {
	return mstep{at: at, op: "settle", of: of, used: used}
}

func mstatus(at time.Duration, want limiter.Decisions) mstep {
	return mstep{at: at, op: "status", want: want}
}

// under makes the call with other limits than the test's, as after a
// reload.
func (st mstep) under(b limiter.Budget) mstep {
	st.b = b
	return st
}

func ns(v ...int64) []int64 { return v }

// mplay runs steps on key "k" of a fresh store whose clock starts at start.
// Reserves and statuses are compared with their want, whose Hold holds, by
// name, the n of every limit asked for more than zero when admitted (IDs
// are the store's, not compared); settles are checked against the status
// after them (env.settleMany).
func (su *suite) mplay(t *testing.T, start time.Time, all limiter.Budget, steps []mstep) {
	t.Helper()
	e := su.env(t, start)
	holds := make([]limiter.Holds, len(steps))
	for i, st := range steps {
		b := all
		if st.b != nil {
			b = st.b
		}
		e.at(st.at)
		var got limiter.Decisions
		switch st.op {
		case "reserve":
			got = e.reserveMany("k", b, st.n)
			holds[i] = got.Hold
		case "status":
			got = e.statusMany("k", b)
		case "settle":
			var h limiter.Holds
			if st.of >= 0 {
				h = holds[st.of]
			}
			e.settleMany("k", b, h, st.used)
			continue
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		want := st.want
		if st.op == "reserve" && want.Allowed {
			want.Hold.Amounts = amounts(b, st.n)
		}
		got.Hold.ID = ""
		if !sameDecisions(got, want) {
			t.Errorf("step %d: %s%v at start+%v:\n got %s\nwant %s", i, st.op, st.n, st.at, show(got), show(want))
		}
	}
}

// amounts is what an admitted reserve of n under b holds.
func amounts(b limiter.Budget, n []int64) []limiter.Amount {
	var out []limiter.Amount
	for i, v := range n {
		if v > 0 {
			out = append(out, limiter.Amount{Name: b[i].Name, N: v})
		}
	}
	return out
}

// sameDecisions compares two Decisions, a nil and an empty slice alike.
func sameDecisions(a, b limiter.Decisions) bool {
	if len(a.Hold.Amounts) == 0 && len(b.Hold.Amounts) == 0 {
		a.Hold.Amounts, b.Hold.Amounts = nil, nil
	}
	if len(a.Limits) == 0 && len(b.Limits) == 0 {
		a.Limits, b.Limits = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func show(d limiter.Decisions) string {
	s := fmt.Sprintf("allowed %v refused %d hold %+v", d.Allowed, d.Refused, d.Hold)
	for i, l := range d.Limits {
		s += fmt.Sprintf("\n   [%d] %+v", i, l)
	}
	return s
}

func (e *env) reserveMany(key string, b limiter.Budget, n []int64) limiter.Decisions {
	e.t.Helper()
	var d limiter.Decisions
	var err error
	if e.into {
		d = room(len(b))
		err = limiter.ReserveManyInto(e.ctx, e.s, key, b, n, e.clock.Now(), &d)
	} else {
		d, err = e.s.ReserveMany(e.ctx, key, b, n, e.clock.Now())
	}
	if err != nil {
		e.t.Fatalf("ReserveMany(%q, %v) at start+%v: %v", key, n, e.clock.Now().Sub(e.start), err)
	}
	return d
}

// settleMany settles h and checks that SettleMany answers what
// StatusMany answers right after.
func (e *env) settleMany(key string, b limiter.Budget, h limiter.Holds, used []int64) limiter.Decisions {
	e.t.Helper()
	var d limiter.Decisions
	var err error
	if e.into {
		// The room's holds are h's own: the settle must leave them be.
		d = room(len(b))
		d.Hold = h
		kept := slices.Clone(h.Amounts)
		err = limiter.SettleManyInto(e.ctx, e.s, key, b, h, used, e.clock.Now(), &d)
		if !slices.Equal(h.Amounts, kept) {
			e.t.Errorf("SettleManyInto changed the holds it settled: %+v, were %+v", h.Amounts, kept)
		}
	} else {
		d, err = e.s.SettleMany(e.ctx, key, b, h, used, e.clock.Now())
	}
	if err != nil {
		e.t.Fatalf("SettleMany(%q, %+v, %v) at start+%v: %v", key, h, used, e.clock.Now().Sub(e.start), err)
	}
	if st := e.statusMany(key, b); !sameDecisions(st, d) {
		e.t.Errorf("SettleMany(%q, %+v, %v) at start+%v answered\n  %s\nStatusMany right after\n  %s",
			key, h, used, e.clock.Now().Sub(e.start), show(d), show(st))
	}
	return d
}

func (e *env) statusMany(key string, b limiter.Budget) limiter.Decisions {
	e.t.Helper()
	d, err := e.s.StatusMany(e.ctx, key, b, e.clock.Now())
	if err != nil {
		e.t.Fatalf("StatusMany(%q) at start+%v: %v", key, e.clock.Now().Sub(e.start), err)
	}
	return d
}

// room is a caller's room for an answer on k limits, as MultiInto takes
// it: capacity for every limit, and garbage in it, which the answer must
// replace wherever it says anything.
func room(k int) limiter.Decisions {
	ls := make([]limiter.LimitDecision, k)
	as := make([]limiter.Amount, k)
	for i := range ls {
		ls[i] = limiter.LimitDecision{Max: -1, Used: -2, Remaining: -3, Reset: -4, RetryAfter: -5}
		as[i] = limiter.Amount{Name: "garbage", N: -6}
	}
	return limiter.Decisions{Allowed: true, Refused: 99, Limits: ls[:0], Hold: limiter.Holds{Amounts: as[:0], ID: "garbage"}}
}
