package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// The Budget tests (limiter.Multi): several limits of one key decided on
// at once.

const (
	minute = time.Minute
	hour   = time.Hour
)

// testBudgetAllOrNothing: a request is admitted only when every limit
// admits it, and then held in all; a refusal holds nothing anywhere and
// names the first limit that refuses.
func testBudgetAllOrNothing(t *testing.T, su *suite) {
	b := limiter.Budget{window("tokens", 100, minute), window("requests", 3, minute)}
	su.mplay(t, t0, b, []mstep{
		mreserve(0, ns(40, 1), admit(lim(100, 40, 60, 0, 0), lim(3, 1, 2, 0, 0))), // 0
		// The tokens refuse; the request slot it would have taken stays free.
		mreserve(0, ns(70, 1), refuse(0, lim(100, 40, 60, 0, minute), lim(3, 1, 2, 0, 0))),
		mreserve(0, ns(10, 1), admit(lim(100, 50, 50, 0, 0), lim(3, 2, 1, 0, 0))), // 2
		// The requests refuse; no token is held for it.
		mreserve(0, ns(10, 2), refuse(1, lim(100, 50, 50, 0, 0), lim(3, 2, 1, 0, minute))),
		mstatus(0, admit(lim(100, 50, 50, 0, 0), lim(3, 2, 1, 0, 0))),
		msettle(1*s, 0, ns(30, 1)),
		mstatus(1*s, admit(lim(100, 40, 60, 60*s, 0), lim(3, 2, 1, 60*s, 0))),
		// Both refuse: the first is named, each says how long to wait.
		mreserve(2*s, ns(100, 5), refuse(0, lim(100, 40, 60, 59*s, minute), lim(3, 2, 1, 59*s, minute))),
		mreserve(2*s, ns(60, 1), admit(lim(100, 100, 0, 59*s, 0), lim(3, 3, 0, 59*s, 0))), // 8
		mreserve(2*s, ns(0, 0), refuse(0, lim(100, 100, 0, 59*s, 59*s), lim(3, 3, 0, 59*s, 59*s))),
		msettle(3*s, 2, ns(0, 0)),
		msettle(3*s, 8, ns(0, 0)),
		mstatus(3*s, admit(lim(100, 30, 70, 58*s, 0), lim(3, 1, 2, 58*s, 0))),
	})
}

// testBudgetWindows slides windows of a second, ten seconds, an hour and
// a day: units charged in a bucket (1/60 of the window) leave together at
// the bucket's start plus the window, never later than a window after
// they were charged, never earlier than one bucket before that.
func testBudgetWindows(t *testing.T, su *suite) {
	day := utc(2026, 5, 5, 0, 0, 0) // a bucket starts there, whatever the window
	for _, w := range []time.Duration{time.Second, 10 * time.Second, hour, 24 * hour} {
		t.Run(w.String(), func(t *testing.T) {
			// bucket(k) is when bucket k starts: ceil(k*w/60).
			bucket := func(k int64) time.Duration {
				wms := int64(w / time.Millisecond)
				return time.Duration((k*wms+59)/60) * ms
			}
			b1 := bucket(1)
			b := limiter.Budget{window("units", 100, w)}
			su.mplay(t, day, b, []mstep{
				msettle(1*ms, -1, ns(30)),    // bucket 0
				msettle(b1+1*ms, -1, ns(50)), // bucket 1
				mstatus(b1+1*ms, admit(lim(100, 80, 20, w-1*ms, 0))),
				mstatus(w-1*ms, admit(lim(100, 80, 20, b1+1*ms, 0))),
				// Bucket 0 must leave for 30 more to fit: at w.
				mreserve(w-1*ms, ns(30), refuse(0, lim(100, 80, 20, b1+1*ms, 1*ms))),
				mstatus(w, admit(lim(100, 50, 50, b1, 0))),
				mreserve(w, ns(30), admit(lim(100, 80, 20, b1, 0))), // 6
				msettle(w, 6, ns(0)),
				mstatus(w+b1-1*ms, admit(lim(100, 50, 50, 1*ms, 0))),
				mstatus(w+b1, admit(lim(100, 0, 100, 0, 0))),
			})
		})
	}
}

// testBudgetRetryAfterFits checks, over many fills of windows of every
// length, that a request refused with RetryAfter d is still refused a
// millisecond before d and admitted at d.
func testBudgetRetryAfterFits(t *testing.T, su *suite) {
	for _, w := range []time.Duration{time.Second, 10 * time.Second, hour, 24 * hour} {
		t.Run(w.String(), func(t *testing.T) {
			e := su.env(t, t0)
			b := limiter.Budget{window("units", 60, w)}
			step := w / 60
			cell := 0
			for _, fill := range []int{1, 2, 5, 30, 59, 60} {
				for _, n := range []int64{1, 7, 30, 60} {
					key := fmt.Sprintf("fill%d-n%d", fill, n)
					base := time.Duration(cell) * 3 * w
					cell++
					for k := range fill {
						e.at(base + time.Duration(k)*step)
						e.settleMany(key, b, limiter.Holds{}, ns(int64(k+1)))
					}
					at := base + time.Duration(fill)*step + step/3
					e.at(at)
					d := e.reserveMany(key, b, ns(n))
					if d.Allowed {
						e.settleMany(key, b, d.Hold, ns(0))
						continue
					}
					retry := d.RetryAfter()
					if retry != d.Limits[0].RetryAfter || retry <= 0 {
						t.Fatalf("%s: RetryAfter() %v, the limit's %v", key, retry, d.Limits[0].RetryAfter)
					}
					e.at(at + retry - ms)
					if early := e.reserveMany(key, b, ns(n)); early.Allowed {
						t.Errorf("%s: admitted 1ms before RetryAfter %v", key, retry)
						e.settleMany(key, b, early.Hold, ns(0))
					}
					e.at(at + retry)
					late := e.reserveMany(key, b, ns(n))
					if !late.Allowed {
						t.Errorf("%s: refused at RetryAfter %v: %s", key, retry, show(late))
						continue
					}
					e.settleMany(key, b, late.Hold, ns(0))
				}
			}
		})
	}
}

// testBudgetPeriodBesideWindows: a daily limit refuses until midnight
// while the windows beside it slide on, and starts afresh at midnight
// while they still count.
func testBudgetPeriodBesideWindows(t *testing.T, su *suite) {
	b := limiter.Budget{window("requests", 3, minute), window("tokens", 1000, hour), period("cost", 500, limiter.Daily)}
	su.mplay(t, utc(2026, 5, 5, 23, 30, 0), b, []mstep{
		mreserve(0, ns(1, 400, 200), admit(lim(3, 1, 2, 0, 0), lim(1000, 400, 600, 0, 0), lim(500, 200, 300, 30*minute, 0))), // 0
		msettle(5*s, 0, ns(1, 300, 450)),
		// A token charged at 23:30:05 is in the hour's bucket of 23:30,
		// which leaves at 00:30.
		mstatus(5*s, admit(lim(3, 1, 2, 60*s, 0), lim(1000, 300, 700, hour-5*s, 0), lim(500, 450, 50, 30*minute-5*s, 0))),
		mreserve(10*s, ns(1, 100, 100), refuse(2, lim(3, 1, 2, 55*s, 0), lim(1000, 300, 700, hour-10*s, 0), lim(500, 450, 50, 30*minute-10*s, 30*minute-10*s))),
		mreserve(10*s, ns(1, 100, 50), admit(lim(3, 2, 1, 55*s, 0), lim(1000, 400, 600, hour-10*s, 0), lim(500, 500, 0, 30*minute-10*s, 0))), // 4
		msettle(20*s, 4, ns(1, 100, 50)),
		// Midnight: the day is whole again, the hour still counts.
		mstatus(30*minute, admit(lim(3, 0, 3, 0, 0), lim(1000, 400, 600, 30*minute, 0), lim(500, 0, 500, 24*hour, 0))),
		mreserve(30*minute, ns(1, 700, 10), refuse(1, lim(3, 0, 3, 0, 0), lim(1000, 400, 600, 30*minute, 30*minute), lim(500, 0, 500, 24*hour, 0))),
		mreserve(hour, ns(1, 700, 10), admit(lim(3, 1, 2, 0, 0), lim(1000, 700, 300, 0, 0), lim(500, 10, 490, 23*hour+30*minute, 0))),
	})
}

// testBudgetHoldsPerLimit: a settle releases what its hold held in each
// limit, nothing more, and charges each limit its own use; a second
// settle of the same Holds releases nothing and charges again.
func testBudgetHoldsPerLimit(t *testing.T, su *suite) {
	b := limiter.Budget{window("a", 100, minute), period("b", 1000, limiter.Daily)}
	left := 6400 * s // from t0 to midnight UTC
	su.mplay(t, t0, b, []mstep{
		mreserve(0, ns(60, 500), admit(lim(100, 60, 40, 0, 0), lim(1000, 500, 500, left, 0))), // 0
		mreserve(0, ns(30, 0), admit(lim(100, 90, 10, 0, 0), lim(1000, 500, 500, left, 0))),   // 1: holds nothing in b
		msettle(1*s, 0, ns(10, 200)),
		mstatus(1*s, admit(lim(100, 40, 60, 60*s, 0), lim(1000, 200, 800, left-1*s, 0))),
		msettle(2*s, 1, ns(25, 25)),
		mstatus(2*s, admit(lim(100, 35, 65, 60*s, 0), lim(1000, 225, 775, left-2*s, 0))),
		msettle(3*s, 0, ns(5, 5)), // again: charged, nothing released
		mstatus(3*s, admit(lim(100, 40, 60, 60*s, 0), lim(1000, 230, 770, left-3*s, 0))),
		mreserve(3*s, ns(60, 0), admit(lim(100, 100, 0, 60*s, 0), lim(1000, 230, 770, left-3*s, 0))), // 8
		mreserve(3*s, ns(1, 0), refuse(0, lim(100, 100, 0, 60*s, 58*s), lim(1000, 230, 770, left-3*s, 0))),
		msettle(4*s, 8, ns(0, 0)),
		mstatus(4*s, admit(lim(100, 40, 60, 59*s, 0), lim(1000, 230, 770, left-4*s, 0))),
	})
}

// testBudgetReload: every call is answered by the Budget it brings, as
// after a reload. Limits reordered or added keep their counts, by name; a
// limit dropped before its request settles has the hold released and the
// use not charged; a window whose length changes starts afresh, still
// counting what requests in flight hold.
func testBudgetReload(t *testing.T, su *suite) {
	tokens, requests, cost := window("tokens", 1000, minute), window("requests", 10, minute), period("cost", 5000, limiter.Daily)
	b1 := limiter.Budget{tokens, requests}
	b2 := limiter.Budget{cost, requests, tokens}
	b3 := limiter.Budget{requests, cost}
	b4 := limiter.Budget{window("tokens", 1000, hour)}
	left := 6400 * s // from t0 to midnight UTC
	hourLeft := 59*minute + 40*s
	su.mplay(t, t0, b1, []mstep{
		msettle(0, -1, ns(200, 2)),
		mreserve(1*s, ns(50, 1), admit(lim(1000, 250, 750, 59*s, 0), lim(10, 3, 7, 59*s, 0))), // 1
		mstatus(1*s, admit(lim(5000, 0, 5000, left-1*s, 0), lim(10, 3, 7, 59*s, 0), lim(1000, 250, 750, 59*s, 0))).under(b2),
		// Settled once the tokens are gone from the Budget.
		msettle(2*s, 1, ns(1, 70)).under(b3),
		mstatus(2*s, admit(lim(1000, 200, 800, 58*s, 0), lim(10, 3, 7, 60*s, 0))),
		mstatus(2*s, admit(lim(5000, 70, 4930, left-2*s, 0), lim(10, 3, 7, 60*s, 0), lim(1000, 200, 800, 58*s, 0))).under(b2),
		// The tokens by the hour: a new count.
		mstatus(2*s, admit(lim(1000, 0, 1000, 0, 0))).under(b4),
		mreserve(3*s, ns(100), admit(lim(1000, 100, 900, 0, 0))).under(b4), // 7
		// ... and by the minute again: the minute's count is gone, the
		// hold in flight still counts.
		mstatus(3*s, admit(lim(1000, 100, 900, 0, 0), lim(10, 3, 7, 59*s, 0))),
		msettle(3*s, 7, ns(100)).under(b4),
		mstatus(3*s, admit(lim(1000, 100, 900, hourLeft-3*s, 0))).under(b4),
	})
}

// testBudgetHoldExpiry: a store with a hold TTL drops the Holds of a
// request left unsettled that long, from every limit, and a late settle of
// them charges their use and releases nothing twice; a store without one
// keeps them until they are settled.
func testBudgetHoldExpiry(t *testing.T, su *suite) {
	b := limiter.Budget{window("tokens", 100, minute), period("requests", 2, limiter.Monthly)}
	start := utc(2026, 5, 5, 0, 0, 0)
	month := 27 * 24 * hour // to June
	if su.holdTTL <= 0 {
		su.mplay(t, start, b, []mstep{
			mreserve(0, ns(80, 1), admit(lim(100, 80, 20, 0, 0), lim(2, 1, 1, month, 0))), // 0
			mreserve(24*hour, ns(30, 1), refuse(0, lim(100, 80, 20, 0, minute), lim(2, 1, 1, month-24*hour, 0))),
			msettle(24*hour+1*s, 0, ns(10, 1)),
			mstatus(24*hour+1*s, admit(lim(100, 10, 90, 60*s, 0), lim(2, 1, 1, month-24*hour-1*s, 0))),
		})
		return
	}
	ttl := su.holdTTL
	su.mplay(t, start, b, []mstep{
		mreserve(0, ns(80, 1), admit(lim(100, 80, 20, 0, 0), lim(2, 1, 1, month, 0))), // 0
		mreserve(ttl-1*ms, ns(30, 1), refuse(0, lim(100, 80, 20, 0, minute), lim(2, 1, 1, month-ttl+1*ms, 0))),
		mreserve(ttl, ns(30, 1), admit(lim(100, 30, 70, 0, 0), lim(2, 1, 1, month-ttl, 0))), // 2: the first is gone
		msettle(ttl+1*s, 0, ns(10, 1)), // the expired hold: charged, the other still held
		mstatus(ttl+1*s, refuse(1, lim(100, 40, 60, 60*s, 0), lim(2, 2, 0, month-ttl-1*s, month-ttl-1*s))),
		msettle(ttl+1*s, 2, ns(0, 0)),
		mstatus(ttl+1*s, admit(lim(100, 10, 90, 60*s, 0), lim(2, 1, 1, month-ttl-1*s, 0))),
	})
}

// testBudgetNoOvershoot has many goroutines reserve on one key with two
// limits and never settle: exactly as many get in as the tighter limit
// allows, and neither limit ever counts past its Max.
func testBudgetNoOvershoot(t *testing.T, su *suite) {
	const goroutines, tries = 16, 20
	e := su.env(t, t0)
	b := limiter.Budget{window("tokens", 1000, minute), period("requests", 100, limiter.Daily)}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tries {
				d, err := e.s.ReserveMany(e.ctx, "k", b, ns(7, 1), e.clock.Now())
				if err != nil {
					t.Errorf("goroutine %d try %d: %v", g, i, err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
				for j, l := range d.Limits {
					if l.Used > l.Max {
						t.Errorf("goroutine %d try %d: limit %d used %d > %d", g, i, j, l.Used, l.Max)
					}
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 100 {
		t.Errorf("admitted %d requests, want the 100 the requests limit allows", got)
	}
	d := e.statusMany("k", b)
	if d.Limits[0].Used != 700 || d.Limits[1].Used != 100 {
		t.Errorf("held %d tokens and %d requests, want 700 and 100", d.Limits[0].Used, d.Limits[1].Used)
	}
}

// testLimitsAreABudget: the Limits calls and the Budget calls on
// Limits.Budget() are one count: each sees what the other charged and
// holds.
func testLimitsAreABudget(t *testing.T, su *suite) {
	e := su.env(t, utc(2026, 5, 5, 10, 0, 0))
	lims := limiter.Limits{TokensPerMinute: 100, Quota: 1000, Period: limiter.Daily}
	b := lims.Budget()
	if len(b) != 2 || b[0].Name != limiter.QuotaLimitName || b[1].Name != limiter.WindowLimitName || b[1].Window != limiter.Window {
		t.Fatalf("Limits.Budget() = %+v", b)
	}
	e.settle("k", lims, limiter.Hold{}, 30)
	left := 14 * hour
	want := admit(lim(1000, 30, 970, left, 0), lim(100, 30, 70, 60*s, 0))
	if d := e.statusMany("k", b); !sameDecisions(d, want) {
		t.Errorf("StatusMany after Settle:\n got %s\nwant %s", show(d), show(want))
	}
	e.at(1 * s)
	h := e.reserveMany("k", b, ns(20, 20))
	if d := e.status("k", lims); d.Used != 50 || d.Quota.Used != 50 {
		t.Errorf("Status after ReserveMany: used %d, quota used %d; want 50 and 50", d.Used, d.Quota.Used)
	}
	r := e.reserve("k", lims, 50)
	if !r.Allowed {
		t.Fatalf("Reserve(50) refused: %+v", r)
	}
	want = refuse(1, lim(1000, 100, 900, left-1*s, 0), lim(100, 100, 0, 59*s, 59*s))
	if d := e.reserveMany("k", b, ns(1, 1)); !sameDecisions(d, want) {
		t.Errorf("ReserveMany beside a Reserve:\n got %s\nwant %s", show(d), show(want))
	}
	e.settleMany("k", b, h.Hold, ns(15, 15))
	e.settle("k", lims, r.Hold, 5)
	if d := e.status("k", lims); d.Used != 50 || d.Quota.Used != 50 {
		t.Errorf("after both settles: used %d, quota used %d; want 50 and 50", d.Used, d.Quota.Used)
	}
}

// testInvalidBudget: a Budget that Validate refuses, or amounts that are
// not one per limit, get ErrInvalidBudget and change nothing.
func testInvalidBudget(t *testing.T, su *suite) {
	e := su.env(t, t0)
	good := limiter.Budget{window("tokens", 100, minute)}
	for _, c := range []struct {
		name string
		b    limiter.Budget
		n    []int64
	}{
		{"name twice", limiter.Budget{window("a", 1, minute), period("a", 1, limiter.Daily)}, ns(1, 1)},
		{"empty name", limiter.Budget{window("", 1, minute)}, ns(1)},
		{"brace in name", limiter.Budget{window("a}b", 1, minute)}, ns(1)},
		{"window too short", limiter.Budget{window("a", 1, 500*time.Millisecond)}, ns(1)},
		{"window too long", limiter.Budget{window("a", 1, 25*hour)}, ns(1)},
		{"window and period", limiter.Budget{{Name: "a", Max: 1, Window: minute, Period: limiter.Daily}}, ns(1)},
		{"neither", limiter.Budget{{Name: "a", Max: 1}}, ns(1)},
		{"negative max", limiter.Budget{window("a", -1, minute)}, ns(1)},
		{"too few amounts", good, ns()},
		{"too many amounts", good, ns(1, 1)},
	} {
		if _, err := e.s.ReserveMany(e.ctx, "k", c.b, c.n, e.clock.Now()); !errors.Is(err, limiter.ErrInvalidBudget) {
			t.Errorf("%s: ReserveMany: got %v, want ErrInvalidBudget", c.name, err)
		}
		if _, err := e.s.SettleMany(e.ctx, "k", c.b, limiter.Holds{}, c.n, e.clock.Now()); !errors.Is(err, limiter.ErrInvalidBudget) {
			t.Errorf("%s: SettleMany: got %v, want ErrInvalidBudget", c.name, err)
		}
	}
	if _, err := e.s.StatusMany(e.ctx, "k", limiter.Budget{window("a", 1, 0)}, e.clock.Now()); !errors.Is(err, limiter.ErrInvalidBudget) {
		t.Errorf("StatusMany: got %v, want ErrInvalidBudget", err)
	}
	if d := e.statusMany("k", good); d.Limits[0].Used != 0 {
		t.Errorf("invalid calls changed the key: %s", show(d))
	}
}
