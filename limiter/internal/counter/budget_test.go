package counter

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// TestWindowGeometry: for windows of many spans, every millisecond falls
// in a bucket that starts at or before it and ends after it, and what is
// charged then leaves between one bucket less than the window and the
// window later.
func TestWindowGeometry(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, span := range []time.Duration{time.Second, 1001 * ms, 7 * s, 10 * s, time.Minute, 61 * s, time.Hour, 24 * time.Hour} {
		w := NewWindow(span)
		spanMs := int64(span / ms)
		width := float64(spanMs) / Buckets
		for range 2000 {
			t0 := r.Int64N(4e12) - 1e12 // negative times too
			i := w.bucket(t0)
			if w.start(i) > t0 || w.start(i+1) <= t0 {
				t.Fatalf("%v: t %d in bucket %d of [%d, %d)", span, t0, i, w.start(i), w.start(i+1))
			}
			leaves := w.start(i + Buckets)
			if d := leaves - t0; d > spanMs || float64(d) <= float64(spanMs)-width-1 {
				t.Fatalf("%v: charged at %d leaves at %d, %d ms later", span, t0, leaves, d)
			}
		}
		if span == time.Minute && w.span != 0 {
			t.Errorf("a minute window is not the zero Window's: span %d", w.span)
		}
	}
}

// TestLimitsAreABudget plays random Limits calls on one counter and the
// same calls as Budget calls on lim.Budget() on another: the answers, and
// the counters, must not differ.
func TestLimitsAreABudget(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	limits := []limiter.Limits{
		{TokensPerMinute: 100},
		{TokensPerMinute: 100, Quota: 300, Period: limiter.Hourly},
		{Quota: 250, Period: limiter.Hourly},
		{},
		{TokensPerMinute: 60, Quota: 1000, Period: limiter.Daily},
	}
	for round := range 50 {
		var legacy, multi Counter
		now := t0
		var held []int64
		for step := range 300 {
			now = now.Add(time.Duration(r.IntN(3000)) * ms)
			lim := limits[r.IntN(len(limits))]
			b := lim.Budget()
			var want, got limiter.Decision
			op := r.IntN(3)
			switch op {
			case 0:
				n := int64(r.IntN(80)) - 5
				want = legacy.Reserve(lim, n, now)
				out := make([]limiter.LimitDecision, len(b))
				nn := make([]int64, len(b))
				for i := range nn {
					nn[i] = max(n, 0)
				}
				refused := multi.ReserveMany(b, nn, now, out)
				got = Legacy(lim, out, refused)
				if refused < 0 && n > 0 {
					got.Hold.Tokens = n
					held = append(held, n)
				}
			case 1:
				var h int64
				if len(held) > 0 && r.IntN(4) > 0 {
					k := r.IntN(len(held))
					h = held[k]
					held = append(held[:k], held[k+1:]...)
				}
				used := int64(r.IntN(60)) - 5
				legacy.Settle(lim, h, used, now)
				us := make([]int64, len(b))
				for i := range us {
					us[i] = used
				}
				settled := make([]limiter.LimitDecision, len(b))
				refused := multi.SettleMany(b, []limiter.Amount{{Name: limiter.WindowLimitName, N: h}, {Name: limiter.QuotaLimitName, N: h}}, us, now, settled)
				want = legacy.Status(lim, now)
				out := make([]limiter.LimitDecision, len(b))
				got = Legacy(lim, out, multi.StatusMany(b, now, out))
				if s := Legacy(lim, settled, refused); s != got {
					t.Fatalf("round %d step %d: SettleMany answered %+v, StatusMany after it %+v", round, step, s, got)
				}
			case 2:
				want = legacy.Status(lim, now)
				out := make([]limiter.LimitDecision, len(b))
				got = Legacy(lim, out, multi.StatusMany(b, now, out))
			}
			if got != want {
				t.Fatalf("round %d step %d: op %d under %+v at t0+%v:\nLimits %+v\nBudget %+v", round, step, op, lim, now.Sub(t0), want, got)
			}
		}
		if legacy.Idle(now) != multi.Idle(now) || legacy.Used(now) != multi.Used(now) {
			t.Fatalf("round %d: the counters differ: %+v / %+v", round, legacy, multi)
		}
	}
}

// TestBudgetReload: limits reordered or added keep their counts; a limit
// dropped is forgotten once idle; a name whose window changes length, or
// whose kind changes, starts afresh but keeps what is held.
func TestBudgetReload(t *testing.T) {
	var c Counter
	a, bl := limiter.Limit{Name: "a", Max: 100, Window: time.Minute}, limiter.Limit{Name: "b", Max: 100, Period: limiter.Daily}
	out := make([]limiter.LimitDecision, 3)
	status := func(b limiter.Budget, now time.Time) []int64 {
		c.StatusMany(b, now, out)
		var used []int64
		for i := range b {
			used = append(used, out[i].Used)
		}
		return used
	}
	c.SettleMany(limiter.Budget{a, bl}, nil, []int64{10, 20}, at(0), out)
	if c.ReserveMany(limiter.Budget{a, bl}, []int64{5, 5}, at(0), out) >= 0 {
		t.Fatal("refused")
	}
	cl := limiter.Limit{Name: "c", Max: 9, Window: time.Hour}
	if got, want := status(limiter.Budget{cl, bl, a}, at(1*s)), []int64{0, 25, 15}; !reflect.DeepEqual(got, want) {
		t.Errorf("reordered and added: used %v, want %v", got, want)
	}
	// a by the hour: afresh, the 5 held still counted; then a settles.
	ah := limiter.Limit{Name: "a", Max: 100, Window: time.Hour}
	c.ReserveMany(limiter.Budget{ah}, []int64{0}, at(1*s), out)
	if got, want := status(limiter.Budget{ah, a}, at(1*s)), []int64{5, 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("window changed: used %v, want %v", got, want)
	}
	c.SettleMany(limiter.Budget{ah}, []limiter.Amount{{Name: "a", N: 5}, {Name: "b", N: 5}}, []int64{0}, at(2*s), out)
	if got, want := status(limiter.Budget{ah, bl}, at(2*s)), []int64{0, 20}; !reflect.DeepEqual(got, want) {
		t.Errorf("settled: used %v, want %v", got, want)
	}
	// b as a window: afresh.
	bw := limiter.Limit{Name: "b", Max: 100, Window: time.Minute}
	c.SettleMany(limiter.Budget{bw}, nil, []int64{1}, at(3*s), out)
	if got, want := status(limiter.Budget{bw, bl}, at(3*s)), []int64{1, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("kind changed: used %v, want %v", got, want)
	}
	// Dropped and idle: forgotten by the next call that prunes.
	c.SettleMany(limiter.Budget{bw}, nil, []int64{0}, at(2*time.Hour), out)
	if len(c.states) != 1 || c.states[0].name != "b" {
		t.Errorf("after a's hour: states %+v, want b's alone", c.states)
	}
}

// TestRecordRoundTrip writes a counter of every kind of limit, and reads
// it back later.
func TestRecordRoundTrip(t *testing.T) {
	day := time.Date(2026, 5, 5, 10, 0, 0, 0, time.UTC)
	b := limiter.Budget{
		{Name: "tokens", Max: 1000, Window: time.Minute},
		{Name: "requests", Max: 10, Window: time.Second},
		{Name: "input_tokens", Max: 1 << 40, Window: 24 * time.Hour},
		{Name: "cost", Max: 5000, Period: limiter.Monthly},
		{Name: "idle", Max: 5, Window: time.Hour},
	}
	var c Counter
	for k := range 5 {
		c.SettleMany(b, nil, []int64{int64(10 * k), 1, 1 << 35, 7, 0}, day.Add(time.Duration(k)*700*ms), make([]limiter.LimitDecision, len(b)))
	}
	out := make([]limiter.LimitDecision, len(b))
	c.ReserveMany(b, []int64{1, 1, 1, 1, 1}, day.Add(3*s), out) // held: never written
	rec, ok := c.AppendRecord(nil, day.Add(3*s))
	if !ok {
		t.Fatal("nothing to write")
	}
	for _, later := range []time.Duration{3 * s, 30 * s, 2 * time.Hour, 30 * 24 * time.Hour} {
		now := day.Add(later)
		got, err := DecodeRecord(rec, now)
		if err != nil {
			t.Fatalf("decode at +%v: %v", later, err)
		}
		var want Counter
		for k := range 5 {
			want.SettleMany(b, nil, []int64{int64(10 * k), 1, 1 << 35, 7, 0}, day.Add(time.Duration(k)*700*ms), make([]limiter.LimitDecision, len(b)))
		}
		g, w := make([]limiter.LimitDecision, len(b)), make([]limiter.LimitDecision, len(b))
		got.StatusMany(b, now, g)
		want.StatusMany(b, now, w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("at +%v:\n got %+v\nwant %+v", later, g, w)
		}
		if _, ok := got.AppendRecord(nil, now); ok != !got.Idle(now) {
			t.Errorf("at +%v: AppendRecord says %v, Idle %v", later, ok, got.Idle(now))
		}
	}
	if _, ok := (&Counter{}).AppendRecord(nil, day); ok {
		t.Error("an empty counter has a record")
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"version 1", []byte{1, 0}, "unknown record version 1"},
		{"no count", []byte{2}, "truncated"},
		{"too many", []byte{2, 100}, "100 limits in a record"},
		{"cut name", []byte{2, 1, 5, 'a'}, "truncated"},
		{"empty name", []byte{2, 1, 0, 'w'}, "limit 0: name of 0 bytes"},
		{"unknown kind", []byte{2, 1, 1, 'a', 'x'}, `limit "a": unknown kind 120`},
		{"short window", []byte{2, 1, 1, 'a', 'w', 100, 0, 0}, `limit "a": window of 100 ms`},
		{"bucket age", []byte{2, 1, 1, 'a', 'w', 0xe0, 0xd4, 0x03, 0, 1, 60, 1}, `limit "a": bucket age 60 out of order`},
		{"period", []byte{2, 1, 1, 'a', 'q', 9, 0, 0}, `limit "a": unknown quota period 9`},
		{"twice", []byte{2, 2, 1, 'a', 'q', 1, 0, 1, 1, 'a', 'q', 1, 0, 1}, `limit "a" twice`},
		{"trailing", []byte{2, 0, 0}, "1 bytes after the last limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRecord(tt.b, t0)
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestShapedAgreesWithUnshaped plays random calls on several Budgets that
// share names (reordered, a window's span changed, a window become a
// quota, a limit dropped) on two counters: one as it runs, taking the
// shaped path whenever a Budget comes back, and one made to forget its
// shape before every call. Their answers, and what they hold, must not
// differ.
func TestShapedAgreesWithUnshaped(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a := limiter.Limit{Name: "a", Max: 300, Window: time.Minute}
	bl := limiter.Limit{Name: "b", Max: 500, Window: 10 * time.Second}
	q := limiter.Limit{Name: "q", Max: 2000, Period: limiter.Hourly}
	budgets := []limiter.Budget{
		{a, bl, q},
		{q, a, bl}, // reordered
		{a, {Name: "b", Max: 500, Window: time.Hour}, q},  // b's span changed
		{a, {Name: "b", Max: 400, Period: limiter.Daily}}, // b now a quota; q dropped
		{bl},
		{a, bl, q}, // the first again, at another address
		// The Limits calls' names, of other kinds than theirs.
		{{Name: limiter.WindowLimitName, Max: 600, Period: limiter.Hourly}, {Name: limiter.QuotaLimitName, Max: 700, Window: 5 * time.Second}},
	}
	limits := []limiter.Limits{{TokensPerMinute: 250}, {TokensPerMinute: 250, Quota: 900, Period: limiter.Hourly}}
	for round := range 40 {
		var shaped, plain Counter
		now := t0
		type hold struct {
			b   limiter.Budget
			amt []limiter.Amount
		}
		var holds []hold
		for step := range 400 {
			// The sweep's look, which remembers until when a counter
			// is busy, against every limit looked at: at a later
			// time, or an earlier one (a clock stepping back).
			probe := now.Add(time.Duration(r.IntN(3*3600)-60) * time.Second)
			if idle, _ := shaped.IdleLooked(probe); idle != idleNow(&plain, probe) {
				t.Fatalf("round %d step %d: IdleLooked at %v says %v", round, step, probe, idle)
			}
			now = now.Add(time.Duration(r.IntN(4000)) * ms)
			b := budgets[r.IntN(len(budgets))]
			plain.unshape()
			out1, out2 := make([]limiter.LimitDecision, len(b)), make([]limiter.LimitDecision, len(b))
			var got1, got2 int
			switch op := r.IntN(7); {
			case op < 3:
				n := make([]int64, len(b))
				for i := range n {
					n[i] = int64(r.IntN(60)) - 3
				}
				got1, got2 = shaped.ReserveMany(b, n, now, out1), plain.ReserveMany(b, n, now, out2)
				if got1 < 0 {
					var amt []limiter.Amount
					for i, v := range n {
						if v > 0 {
							amt = append(amt, limiter.Amount{Name: b[i].Name, N: v})
						}
					}
					holds = append(holds, hold{b, amt})
				}
			case op < 6:
				var h hold
				if len(holds) > 0 && r.IntN(5) > 0 {
					k := r.IntN(len(holds))
					h = holds[k]
					holds = append(holds[:k], holds[k+1:]...)
					if r.IntN(4) > 0 {
						// Mostly under its own Budget; else under the
						// random one, as after a reload (its amounts
						// then out of that Budget's order, or of
						// names it does not have).
						b = h.b
					}
					out1, out2 = make([]limiter.LimitDecision, len(b)), make([]limiter.LimitDecision, len(b))
				}
				used := make([]int64, len(b))
				for i := range used {
					used[i] = int64(r.IntN(50)) - 3
				}
				got1, got2 = shaped.SettleMany(b, h.amt, used, now, out1), plain.SettleMany(b, h.amt, used, now, out2)
			default:
				// The Limits calls reshape the states of their names,
				// which the last Budget shares: the shape is forgotten.
				lim := limits[r.IntN(len(limits))]
				d1, d2 := shaped.Reserve(lim, 10, now), plain.Reserve(lim, 10, now)
				if d1 != d2 {
					t.Fatalf("round %d step %d: Reserve %+v, unshaped %+v", round, step, d1, d2)
				}
				if r.IntN(2) == 0 {
					shaped.Settle(lim, d1.Hold.Tokens, 7, now)
					plain.Settle(lim, d2.Hold.Tokens, 7, now)
				}
				continue
			}
			if got1 != got2 || !reflect.DeepEqual(out1, out2) {
				t.Fatalf("round %d step %d on %v: refused %d %+v, unshaped refused %d %+v", round, step, b, got1, out1, got2, out2)
			}
			for _, b := range budgets {
				s1, s2 := make([]limiter.LimitDecision, len(b)), make([]limiter.LimitDecision, len(b))
				if shaped.StatusMany(b, now, s1) != plain.StatusMany(b, now, s2) || !reflect.DeepEqual(s1, s2) {
					t.Fatalf("round %d step %d: status on %v: %+v, unshaped %+v", round, step, b, s1, s2)
				}
			}
		}
	}
}

// idleNow is Idle worked out afresh from every limit, remembering
// nothing.
func idleNow(c *Counter, now time.Time) bool {
	for i := range c.states {
		if !c.states[i].idle(now) {
			return false
		}
	}
	return true
}

// TestQuotaQuietAtPeriodEnd: a quota charged in a period keeps its key
// busy to the period's last nanosecond and no further, whether the look
// is afresh or remembered from a look earlier in the period; one holding
// units for a request in flight stays busy past it.
func TestQuotaQuietAtPeriodEnd(t *testing.T) {
	b := limiter.Budget{{Name: "q", Max: 1000, Period: limiter.Daily}}
	_, end := limiter.Daily.Bounds(t0)
	out := make([]limiter.LimitDecision, 1)
	var c Counter
	c.SettleMany(b, nil, []int64{5}, t0, out)
	for _, look := range []struct {
		at   time.Time
		idle bool
	}{{t0, false}, {end.Add(-time.Nanosecond), false}, {end, true}} {
		if got := idleNow(&c, look.at); got != look.idle {
			t.Errorf("afresh at %v: idle %v, want %v", look.at, got, look.idle)
		}
		if got, _ := c.IdleLooked(look.at); got != look.idle {
			t.Errorf("remembered at %v: idle %v, want %v", look.at, got, look.idle)
		}
	}
	var held Counter
	if held.ReserveMany(b, []int64{5}, t0, out) >= 0 {
		t.Fatal("reservation refused")
	}
	if idle, _ := held.IdleLooked(end.Add(time.Hour)); idle {
		t.Error("a quota holding units is idle after its period")
	}
}
