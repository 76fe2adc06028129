package counter

import (
	"math"
	"time"
	"unsafe"

	"github.com/tokengate/tokengate/limiter"
)

// Counter is everything a store keeps of one key: the count of each of
// its limits, by name. Like Window it is pure arithmetic; the store
// holding it supplies the lock. Its methods are the Store contract's calls
// for one key (see limiter.Store): the Budget calls, and the Limits calls
// as the Budget calls on Limits.Budget().
type Counter struct {
	states []state
	// shape and shapeLen are the Budget the states are shaped to (see
	// shaped).
	shape    *limiter.Limit
	shapeLen uint8
	// busyUntil is a Unix millisecond before which the counter is not
	// idle, 0 when none is known: what IdleLooked last found, so that
	// the sweep's next look at a busy key is one comparison. Calls only
	// hold and charge more, which cannot make a counter idle sooner; a
	// reshape, which may drop counts, forgets it (see unshape).
	busyUntil int64
}

// state is the count of one name: a window or a quota, never both. A
// limit that comes back with another kind, or a window with another span,
// starts afresh (see state.window and state.quotaIn).
type state struct {
	name  string
	win   *Window
	quota *Quota
}

// ReserveMany is limiter.Multi's ReserveMany for one key, into out (one
// per limit of b): n[i] of every limit b[i] when each fits, held in all,
// or nothing. It returns the index of the first limit that refuses, -1
// when the request is admitted. b and n are the caller's to check, and
// a Budget passed is never written afterwards: the counter knows the
// Budget it is shaped to by its address (see shaped).
func (c *Counter) ReserveMany(b limiter.Budget, n []int64, now time.Time, out []limiter.LimitDecision) int {
	m := momentOf(now)
	if !c.shaped(b) {
		c.shapeTo(b, m)
	}
	states, n, out := c.states[:len(b)], n[:len(b)], out[:len(b)]
	refused := -1
	for i := range b {
		l, st := &b[i], &states[i]
		need := max(n[i], 0)
		var ok bool
		if w := st.win; w != nil {
			ok = w.reserveInto(&out[i], l.Max, need, m.at)
		} else {
			ok = st.quota.reserveInto(&out[i], l.Max, need, l.Period, m)
		}
		if !ok {
			refused = i
			break
		}
	}
	if refused >= 0 {
		// Nothing held: undo the holds made before the refusal, then say
		// of each limit whether it alone would admit the request.
		for i := range refused {
			states[i].release(n[i])
		}
		for i := range b {
			c.peek(&states[i], &b[i], max(n[i], 0), m, &out[i])
		}
	}
	c.prune(b, now) // which keeps b's states where they are
	return refused
}

// SettleMany releases held (by name, whatever b says) and charges used[i]
// to b[i] at now, then answers into out (one per limit of b) what
// StatusMany would right after, returning the index of the first limit
// that refuses. Settling and answering in one pass finds each limit's
// count once.
func (c *Counter) SettleMany(b limiter.Budget, held []limiter.Amount, used []int64, now time.Time, out []limiter.LimitDecision) int {
	m := momentOf(now)
	if c.shaped(b) {
		return c.settleShaped(b, held, used, m, out)
	}
	for j := range held {
		c.release(j, held[j].Name, held[j].N)
	}
	c.unshape()
	used, out = used[:len(b)], out[:len(b)]
	refused := -1
	for i := range b {
		l := &b[i]
		// Limits of other names are not touched by what follows, nor by
		// prune: each answer is the answer after the whole settle. A
		// limit charged nothing is not reshaped either.
		var ok bool
		switch u := used[i]; {
		case u > 0 && l.Window > 0:
			ok = c.at(i, l.Name).window(l.Window).chargeInto(&out[i], l.Max, u, m.at)
		case u > 0:
			ok = c.at(i, l.Name).quotaAt(l.Period, m).chargeInto(&out[i], l.Max, u, l.Period, m)
		default:
			ok = c.peek(c.find(i, l.Name), l, 0, m, &out[i])
		}
		if !ok && refused < 0 {
			refused = i
		}
	}
	c.prune(b, now)
	return refused
}

// settleShaped is SettleMany on the Budget the counter is shaped to,
// where b[i]'s state is states[i] and a Holds made under b lists its
// amounts in b's order: each is released in the same pass as its limit
// is charged. An amount out of that order (a Holds made under another
// Budget) is released after, and the answers drawn again.
func (c *Counter) settleShaped(b limiter.Budget, held []limiter.Amount, used []int64, m moment, out []limiter.LimitDecision) int {
	states, used, out := c.states[:len(b)], used[:len(b)], out[:len(b)]
	j := 0 // held[j] is the next amount to release
	refused := -1
	for i := range b {
		l, st := &b[i], &states[i]
		if j < len(held) && sameName(held[j].Name, l.Name) {
			st.release(held[j].N)
			j++
		}
		var ok bool
		switch u := used[i]; {
		case u > 0 && st.win != nil:
			ok = st.win.chargeInto(&out[i], l.Max, u, m.at)
		case u > 0:
			ok = st.quota.chargeInto(&out[i], l.Max, u, l.Period, m)
		default:
			ok = c.peek(st, l, 0, m, &out[i])
		}
		if !ok && refused < 0 {
			refused = i
		}
	}
	if j < len(held) {
		for ; j < len(held); j++ {
			c.release(j, held[j].Name, held[j].N)
		}
		refused = c.StatusMany(b, m.t, out)
	}
	c.prune(b, m.t)
	return refused
}

// StatusMany is ReserveMany with every n 0, changing nothing.
func (c *Counter) StatusMany(b limiter.Budget, now time.Time, out []limiter.LimitDecision) int {
	m := momentOf(now)
	refused := -1
	for i := range b {
		if !c.peek(c.find(i, b[i].Name), &b[i], 0, m, &out[i]) && refused < 0 {
			refused = i
		}
	}
	return refused
}

// Reserve is limiter.Store's Reserve for one key: ReserveMany on
// lim.Budget(), written out for those two limits so that the Limits calls
// cost what they did before Budgets (TestLimitsAreABudget holds the two
// together). The Hold it answers has no ID: the store holding the counter
// finds it again by key.
func (c *Counter) Reserve(lim limiter.Limits, n int64, now time.Time) limiter.Decision {
	c.unshape()
	n = max(n, 0)
	need := max(n, 1)
	wmax, qmax := legacyMax(lim)
	var q *Quota
	wi := 0
	if qmax > 0 {
		q = c.at(0, limiter.QuotaLimitName).quotaIn(lim.Period, now)
		wi = 1
	}
	w := c.at(wi, limiter.WindowLimitName).window(limiter.Window)
	t := instantOf(now)
	k := w.moveTo(&t)
	var d limiter.Decision
	switch {
	case q != nil && !q.fits(qmax, need):
		d = windowDecision(false, w.decide(wmax, n, k, t, w.sum, true))
		d.Reason, d.RetryAfter = limiter.QuotaExceeded, q.decide(qmax, now, false).RetryAfter
	case !w.fits(wmax, need):
		d = windowDecision(false, w.decide(wmax, n, k, t, w.sum, false))
		d.Reason = limiter.RateLimited
	default:
		w.reserved += n
		if q != nil {
			q.reserved += n
		}
		d = windowDecision(true, w.decide(wmax, n, k, t, w.sum, true))
		if n > 0 {
			d.Hold.Tokens = n
		}
	}
	if q != nil {
		d.Quota = quotaState(q.decide(qmax, now, true))
	}
	return noWindow(lim, d)
}

// Settle releases reserved tokens and charges used ones, to the window
// and, when lim has one, the quota: SettleMany on lim.Budget(), a Hold
// holding its tokens in both.
func (c *Counter) Settle(lim limiter.Limits, reserved, used int64, now time.Time) {
	c.unshape()
	c.release(0, limiter.WindowLimitName, reserved)
	c.release(0, limiter.QuotaLimitName, reserved)
	if used <= 0 {
		return
	}
	wi := 0
	if _, qmax := legacyMax(lim); qmax > 0 {
		c.at(0, limiter.QuotaLimitName).quotaIn(lim.Period, now).settle(0, used)
		wi = 1
	}
	c.at(wi, limiter.WindowLimitName).window(limiter.Window).charge(used, now)
}

// Status is Reserve(lim, 0, now) without changing anything.
func (c *Counter) Status(lim limiter.Limits, now time.Time) limiter.Decision {
	wmax, qmax := legacyMax(lim)
	ok, wd := peekWindow(c.state(limiter.WindowLimitName), limiter.Window, wmax, 0, now)
	d := windowDecision(ok, wd)
	if !ok {
		d.Reason = limiter.RateLimited
	}
	if qmax > 0 {
		ok, qd := peekQuota(c.state(limiter.QuotaLimitName), lim.Period, qmax, 0, now)
		d.Quota = quotaState(qd)
		if !ok {
			d.Allowed, d.Reason, d.RetryAfter = false, limiter.QuotaExceeded, qd.RetryAfter
		}
	}
	return noWindow(lim, d)
}

// legacyMax is the Max of lim's window (math.MaxInt64 without one: the
// window still counts, for the headers, but never refuses) and of its
// quota (0 without one).
func legacyMax(lim limiter.Limits) (window, quota int64) {
	window = lim.TokensPerMinute
	if window <= 0 {
		window = math.MaxInt64
	}
	if lim.Quota > 0 && lim.Period != limiter.NoPeriod {
		quota = lim.Quota
	}
	return window, quota
}

// noWindow blanks the window's figures of Limits without a rate limit,
// so callers don't advertise an infinite budget.
func noWindow(lim limiter.Limits, d limiter.Decision) limiter.Decision {
	if lim.TokensPerMinute <= 0 {
		d.Limit, d.Remaining, d.Reset = 0, 0, 0
	}
	return d
}

func quotaState(d limiter.LimitDecision) limiter.QuotaState {
	return limiter.QuotaState{Limit: d.Max, Used: d.Used, Remaining: d.Remaining, Reset: d.Reset}
}

// Legacy is the Decision of Limits lim from the decisions on its Budget
// (out, in lim.Budget()'s order) and the index of the limit that refused.
func Legacy(lim limiter.Limits, out []limiter.LimitDecision, refused int) limiter.Decision {
	last := len(out) - 1
	w := out[last]
	d := windowDecision(refused < 0, w)
	d.RetryAfter = 0
	if last > 0 {
		d.Quota = quotaState(out[0])
	}
	switch {
	case refused == last:
		d.Reason, d.RetryAfter = limiter.RateLimited, w.RetryAfter
	case refused >= 0:
		d.Reason, d.RetryAfter = limiter.QuotaExceeded, out[refused].RetryAfter
	}
	return noWindow(lim, d)
}

// Idle reports whether the counter holds nothing a fresh one would not, so
// that its store can forget it.
func (c *Counter) Idle(now time.Time) bool {
	idle, _ := c.IdleLooked(now)
	return idle
}

// IdleLooked is Idle, and how many limits it looked at to tell: one for
// a counter known busy until after now (see busyUntil); else the first
// limit that is not idle tells a busy counter, and until when it is
// busy for the next look, and all of them (at least one) an idle one.
func (c *Counter) IdleLooked(now time.Time) (idle bool, looked int) {
	ms := now.UnixMilli()
	if c.busyUntil != 0 && ms < c.busyUntil {
		return false, 1
	}
	for i := range c.states {
		held, quiet := c.states[i].quietFrom()
		if ms < quiet {
			c.busyUntil = quiet
			return false, i + 1
		}
		if held {
			return false, i + 1
		}
	}
	return true, max(len(c.states), 1)
}

// Emptied is Idle for a counter that a call at now has just advanced to
// now, where it costs no loop over buckets. It may answer false for a
// counter that is idle; never true for one that is not.
func (c *Counter) Emptied(now time.Time) bool {
	for _, st := range c.states {
		if w := st.win; w != nil && (w.sum != 0 || w.reserved != 0) {
			return false
		}
		if q := st.quota; q != nil && !q.Idle(now) {
			return false
		}
	}
	return true
}

// Used is the tokens_per_minute window's charged tokens at now plus those
// held (limiter.KeyUsage's Used); 0 when the key has none.
func (c *Counter) Used(now time.Time) int64 {
	if st := c.state(limiter.WindowLimitName); st != nil && st.win != nil {
		return st.win.Used(now)
	}
	return 0
}

// SetWindow replaces the tokens_per_minute window, with one restored from
// a file written before Budgets.
func (c *Counter) SetWindow(w Window) {
	c.unshape()
	st := c.add(limiter.WindowLimitName)
	st.win, st.quota = &w, nil
}

// SetQuota replaces the token_quota quota, with one restored from a file
// written before Budgets.
func (c *Counter) SetQuota(q Quota) {
	c.unshape()
	st := c.add(limiter.QuotaLimitName)
	st.win, st.quota = nil, &q
}

// state returns the state of name, nil when there is none.
func (c *Counter) state(name string) *state {
	for i := range c.states {
		if sameName(c.states[i].name, name) {
			return &c.states[i]
		}
	}
	return nil
}

// add returns the state of name, appending an empty one when there is
// none.
func (c *Counter) add(name string) *state {
	if st := c.state(name); st != nil {
		return st
	}
	c.states = append(c.states, state{name: name})
	return &c.states[len(c.states)-1]
}

// sameName is a == b, without the call that comparing the bytes costs
// when both are one string, as a state's name and the name of the Budget
// limit that made it are.
func sameName(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// at returns the state of name, which Budgets keep at index i (the
// first call made it there, and a counter sees the same Budget call after
// call), appending an empty one when there is none.
func (c *Counter) at(i int, name string) *state {
	if i < len(c.states) && sameName(c.states[i].name, name) {
		return &c.states[i]
	}
	return c.add(name)
}

// shaped reports whether the counter's first states are b's limits' in
// b's order, each of its limit's kind and span: what the last ReserveMany
// left behind when it was on b. Budgets are known by their address and
// length, not compared: a caller changes a Budget by passing another
// slice, never by writing into one it passed (memcore passes its own
// copies, which never change). A call on any other Budget, or through
// the Limits calls, forgets the shape first: it may reshape states that
// b shares.
func (c *Counter) shaped(b limiter.Budget) bool {
	return len(b) > 0 && c.shape == unsafe.SliceData(b) && int(c.shapeLen) == len(b)
}

// unshape forgets the shape, for a call that may reshape states.
func (c *Counter) unshape() { c.shape, c.shapeLen, c.busyUntil = nil, 0, 0 }

// shapeTo gives every limit of b its state, of its kind and span, at
// its index in b (the states of other names follow), and takes b as the
// counter's shape.
func (c *Counter) shapeTo(b limiter.Budget, now moment) {
	c.unshape()
	for i := range b {
		c.normalize(&b[i], now)
	}
	for i := range b {
		if sameName(c.states[i].name, b[i].Name) {
			continue
		}
		for j := i + 1; j < len(c.states); j++ {
			if sameName(c.states[j].name, b[i].Name) {
				c.states[i], c.states[j] = c.states[j], c.states[i]
				break
			}
		}
	}
	if len(b) > 0 {
		c.shape, c.shapeLen = unsafe.SliceData(b), uint8(len(b))
	}
}

// window returns st's window of span, starting it afresh when st held
// another kind, or another span.
func (st *state) window(span time.Duration) *Window {
	if st.win == nil || st.win.Span() != span {
		w := NewWindow(span)
		w.reserved = st.reserved()
		st.win, st.quota = &w, nil
	}
	return st.win
}

// quotaIn returns st's quota rolled into now's period of p, starting it
// afresh when st held a window.
func (st *state) quotaIn(p limiter.Period, now time.Time) *Quota {
	return st.quotaAt(p, moment{t: now, sec: now.Unix()})
}

// quotaAt is quotaIn for a time already converted (only t and sec read).
func (st *state) quotaAt(p limiter.Period, now moment) *Quota {
	q := st.quota
	if q == nil {
		q = &Quota{reserved: st.reserved()}
		st.win, st.quota = nil, q
	}
	q.rollAt(p, now.t, now.sec)
	return q
}

// normalize gives l's name l's kind and span, as a reserve does to every
// limit of its Budget.
func (c *Counter) normalize(l *limiter.Limit, now moment) {
	st := c.add(l.Name)
	if l.Window > 0 {
		st.window(l.Window)
	} else {
		st.quotaAt(l.Period, now)
	}
}

// find is state for name, which Budgets keep at index i (see at); nil
// when there is none.
func (c *Counter) find(i int, name string) *state {
	if i < len(c.states) && sameName(c.states[i].name, name) {
		return &c.states[i]
	}
	return c.state(name)
}

// peek draws into d the decision of l for a request of n at now, st the
// state of l's name (nil when there is none), and reports whether l alone
// admits it, changing nothing.
func (c *Counter) peek(st *state, l *limiter.Limit, n int64, now moment, d *limiter.LimitDecision) bool {
	if l.Window > 0 {
		return peekWindowInto(d, st, l.Window, l.Max, n, now.at)
	}
	return peekQuotaInto(d, st, l.Period, l.Max, n, now)
}

// peekWindow is peek for a window of span, st the state of its name (nil
// when there is none).
func peekWindow(st *state, span time.Duration, limit, n int64, now time.Time) (bool, limiter.LimitDecision) {
	var d limiter.LimitDecision
	ok := peekWindowInto(&d, st, span, limit, n, instantOf(now))
	return ok, d
}

func peekWindowInto(d *limiter.LimitDecision, st *state, span time.Duration, limit, n int64, now instant) bool {
	if st != nil && st.win != nil && st.win.Span() == span {
		return st.win.peekInto(d, limit, n, now)
	}
	fresh := NewWindow(span)
	if st != nil {
		fresh.reserved = st.reserved()
	}
	return fresh.peekInto(d, limit, n, now)
}

// peekInto is the decision on n units at now, without advancing w.
func (w *Window) peekInto(d *limiter.LimitDecision, limit, n int64, now instant) bool {
	k, t := w.clampAt(now)
	charged := w.charged(k)
	ok := fits(satAdd(charged, w.reserved), max(n, 1), limit)
	w.decideInto(d, limit, n, k, t, charged, ok)
	return ok
}

// peekQuota is peek for a period.
func peekQuota(st *state, p limiter.Period, limit, n int64, now time.Time) (bool, limiter.LimitDecision) {
	var d limiter.LimitDecision
	ok := peekQuotaInto(&d, st, p, limit, n, momentOf(now))
	return ok, d
}

func peekQuotaInto(d *limiter.LimitDecision, st *state, p limiter.Period, limit, n int64, now moment) bool {
	var q Quota
	switch {
	case st == nil:
	case st.quota != nil:
		q = *st.quota
	default:
		q.reserved = st.reserved()
	}
	q.rollAt(p, now.t, now.sec)
	ok := q.fits(limit, max(n, 1))
	q.decideInto(d, limit, now, ok)
	return ok
}

func (st *state) reserved() int64 {
	switch {
	case st.win != nil:
		return st.win.reserved
	case st.quota != nil:
		return st.quota.reserved
	}
	return 0
}

// quietFrom reports whether st holds units for requests in flight, and
// the Unix millisecond from which nothing charged to it counts any more
// (math.MinInt64 when nothing does now): Idle, told for any later time.
func (st *state) quietFrom() (held bool, from int64) {
	switch {
	case st.win != nil:
		return st.win.reserved != 0, st.win.quietFrom()
	case st.quota != nil:
		return st.quota.reserved != 0, st.quota.quietFrom()
	}
	return false, math.MinInt64
}

func (st *state) idle(now time.Time) bool {
	held, quiet := st.quietFrom()
	return !held && now.UnixMilli() >= quiet
}

// release lets go of n held in the limit of name, no more than it holds;
// the name is looked for at index i first (see at).
func (c *Counter) release(i int, name string, n int64) {
	if st := c.find(i, name); st != nil {
		st.release(n)
	}
}

// release lets go of n held in st's window or quota.
func (st *state) release(n int64) {
	if st.win != nil {
		st.win.release(n)
	} else if st.quota != nil {
		st.quota.release(n)
	}
}

// prune forgets the states of limits b no longer has once they are idle,
// so that a busy key does not keep a dropped limit for ever.
func (c *Counter) prune(b limiter.Budget, now time.Time) {
	if len(c.states) > len(b) {
		c.pruneOthers(b, now)
	}
}

// pruneOthers is prune for a counter with states of other names than b's.
func (c *Counter) pruneOthers(b limiter.Budget, now time.Time) {
	keep := c.states[:0]
	for _, st := range c.states {
		if inBudget(b, st.name) || !st.idle(now) {
			keep = append(keep, st)
		}
	}
	clear(c.states[len(keep):])
	c.states = keep
}

func inBudget(b limiter.Budget, name string) bool {
	for _, l := range b {
		if l.Name == name {
			return true
		}
	}
	return false
}
