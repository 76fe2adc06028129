package storetest

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

const (
	s  = time.Second
	ms = time.Millisecond
)

// t0 starts a second (2023-11-14 22:13:20 UTC); the window tests start
// there.
var t0 = time.Unix(1_700_000_000, 0).UTC()

func utc(y int, m time.Month, d, h, min, sec int) time.Time {
	return time.Date(y, m, d, h, min, sec, 0, time.UTC)
}

// step is one call on key "k" and, for a reserve or a status, its answer.
type step struct {
	at   time.Duration // from the test's start
	op   string        // "reserve", "settle" or "status"
	n    int64         // reserve: tokens asked
	of   int           // settle: the step whose Hold is settled, -1 for the zero Hold
	used int64         // settle: tokens charged
	lim  *limiter.Limits
	want limiter.Decision
}

func reserve(at time.Duration, n int64, want limiter.Decision) step {
	return step{at: at, op: "reserve", n: n, want: want}
}

// settle ends the Hold that step `of` got, charging used.
func settle(at time.Duration, of int, used int64) step {
	return step{at: at, op: "settle", of: of, used: used}
}

// charge settles the zero Hold: used is charged, nothing released.
func charge(at time.Duration, used int64) step {
	return step{at: at, op: "settle", of: -1, used: used}
}

func status(at time.Duration, want limiter.Decision) step {
	return step{at: at, op: "status", want: want}
}

// under makes the call with other limits than the test's.
func (st step) under(lim limiter.Limits) step {
	st.lim = &lim
	return st
}

// ok and no build the window part of a wanted Decision; play fills in
// Limit, and Hold from the reserve's n.
func ok(used, remaining int64, reset time.Duration) limiter.Decision {
	return limiter.Decision{Allowed: true, Used: used, Remaining: remaining, Reset: reset}
}

func no(used, remaining int64, reset, retry time.Duration) limiter.Decision {
	return limiter.Decision{Reason: limiter.RateLimited, Used: used, Remaining: remaining, Reset: reset, RetryAfter: retry}
}

// play runs steps on key "k" of a fresh store whose clock starts at start.
// Reserves and statuses are compared with their want, whose Limit is the
// call's window limit and whose Hold holds n when admitted (IDs are the
// store's, not compared); settles are checked against the status after
// them (env.settle).
func (su *suite) play(t *testing.T, start time.Time, lim limiter.Limits, steps []step) {
	t.Helper()
	e := su.env(t, start)
	holds := make([]limiter.Hold, len(steps))
	for i, st := range steps {
		l := lim
		if st.lim != nil {
			l = *st.lim
		}
		e.at(st.at)
		var got limiter.Decision
		switch st.op {
		case "reserve":
			got = e.reserve("k", l, st.n)
			holds[i] = got.Hold
		case "status":
			got = e.status("k", l)
		case "settle":
			var h limiter.Hold
			if st.of >= 0 {
				h = holds[st.of]
			}
			e.settle("k", l, h, st.used)
			continue
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		want := st.want
		want.Limit = l.TokensPerMinute
		if st.op == "reserve" && want.Allowed && st.n > 0 {
			want.Hold.Tokens = st.n
		}
		got.Hold.ID = ""
		if got != want {
			t.Errorf("step %d: %s(%d) at start+%v:\n got %+v\nwant %+v", i, st.op, st.n, st.at, got, want)
		}
	}
}
