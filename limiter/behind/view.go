package behind

import (
	"sync"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// A view is what the shared store last said of a key's limits, kept so
// that a check (a ReserveMany that holds nothing: the request headers'
// "is anything left?") need not always ask it. A key with more than half
// of every limit left, as the store said within its view's life, less what this
// replica charged since, is admitted here: far from its limits, a check
// cannot refuse, and the request's charge still reaches the store,
// exactly, when it settles. Nearer a limit, for a key the store refused,
// and for every reserve that holds something (strict mode's), the store
// decides, atomically, as before. What the view can get wrong is bounded:
// in that life the other replicas would have to spend half of a limit for a
// check admitted here to be one the store would have refused, and a check
// still only admits what the store charges afterwards.
type view struct {
	at       time.Time
	budget   limiter.Budget
	left     []int64 // remaining per limit, less what was charged here since
	refused  bool    // the store refused: it decides again
	lastSeen time.Time
}

// viewTTL bounds how old a view may be to answer a check: 5 s, and no
// more than a twelfth of the shortest window of the key's budget (5 s of
// a minute, 83 ms of a second), so that what other replicas can spend in
// a view's life is small beside what it left.
const viewTTL = 5 * time.Second

// life is how long a view of b may answer checks.
func life(b limiter.Budget) time.Duration {
	d := viewTTL
	for _, l := range b {
		if l.Window != 0 {
			d = min(d, l.Window/12)
		}
	}
	return d
}

// maxViews bounds the views kept; past it, old ones are dropped.
const maxViews = 1 << 16

type views struct {
	mu sync.Mutex
	m  map[string]*view
}

// check answers a check from the view of key, if it can: the decisions
// and true; false when the store must be asked.
func (vs *views) check(key string, b limiter.Budget, now time.Time) (limiter.Decisions, bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	v := vs.m[key]
	if v == nil || now.Before(v.at) || !sameLimits(v.budget, b) || now.Sub(v.at) >= life(b) {
		return limiter.Decisions{}, false
	}
	v.lastSeen = now
	if v.refused {
		return limiter.Decisions{}, false
	}
	d := limiter.Decisions{Allowed: true, Refused: -1, Limits: make([]limiter.LimitDecision, len(b))}
	for i, l := range b {
		if v.left[i] <= l.Max/2 {
			return limiter.Decisions{}, false
		}
		d.Limits[i] = limiter.LimitDecision{Max: l.Max, Used: l.Max - v.left[i], Remaining: v.left[i]}
	}
	return d, true
}

// saw records what the store answered for key at now.
func (vs *views) saw(key string, b limiter.Budget, d limiter.Decisions, now time.Time) {
	if len(d.Limits) != len(b) {
		return
	}
	v := &view{at: now, budget: b, left: make([]int64, len(b)), refused: !d.Allowed, lastSeen: now}
	for i := range b {
		v.left[i] = d.Limits[i].Remaining
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.m == nil {
		vs.m = make(map[string]*view)
	}
	if len(vs.m) >= maxViews {
		for k, old := range vs.m { // map order: a random sample to drop
			if now.Sub(old.lastSeen) >= viewTTL || len(vs.m) >= maxViews {
				delete(vs.m, k)
			}
			if len(vs.m) < maxViews*3/4 {
				break
			}
		}
	}
	vs.m[key] = v
}

// spent takes what a settle charges here from the view of its key.
func (vs *views) spent(key string, b limiter.Budget, used []int64) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	v := vs.m[key]
	if v == nil || !sameLimits(v.budget, b) {
		return
	}
	for i, u := range used {
		v.left[i] -= max(u, 0)
	}
}

func sameLimits(a, b limiter.Budget) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pending is what this replica charged that is queued or on its way to
// the store, per key: a check the store answers is answered as if it had
// landed, so that a client's next request, sent before its last charge
// reached the store, is checked with it all the same.
type pending struct {
	mu sync.Mutex
	m  map[string]*charges
}

type charges struct {
	budget limiter.Budget
	used   []int64
	n      int // settles
}

// add adds (sign 1) or takes away (sign -1) a settle's charges.
func (p *pending) add(key string, b limiter.Budget, used []int64, sign int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]*charges)
	}
	c := p.m[key]
	if c == nil {
		if sign < 0 {
			return
		}
		c = &charges{budget: b, used: make([]int64, len(b))}
		p.m[key] = c
	}
	if !sameLimits(c.budget, b) {
		// A reload changed the key's limits: what is on its way under
		// the old ones is not counted against the new.
		if sign < 0 {
			c.n--
			if c.n <= 0 {
				delete(p.m, key)
			}
			return
		}
		c.budget, c.used = b, make([]int64, len(b))
	}
	for i, u := range used {
		c.used[i] += int64(sign) * max(u, 0)
	}
	c.n += sign
	if c.n <= 0 {
		delete(p.m, key)
	}
}

// of is what key's queued settles will charge each limit of b; nil for
// nothing, or nothing under b's limits.
func (p *pending) of(key string, b limiter.Budget) []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.m[key]
	if c == nil || !sameLimits(c.budget, b) {
		return nil
	}
	return append([]int64(nil), c.used...)
}

// withOwed is a check's answer d with the queued charges used counted: a
// limit they spend refuses it.
func withOwed(b limiter.Budget, d limiter.Decisions, used []int64, now time.Time) limiter.Decisions {
	if used == nil || len(d.Limits) != len(b) {
		return d
	}
	out := d
	out.Limits = append([]limiter.LimitDecision(nil), d.Limits...)
	for i, l := range b {
		ld := &out.Limits[i]
		ld.Used += used[i]
		ld.Remaining = max(l.Max-ld.Used, 0)
		if ld.Used+1 > l.Max && ld.RetryAfter == 0 {
			// What is queued leaves as the store will count it: from now.
			ld.RetryAfter = l.Leaves(now)
			if out.Allowed {
				out.Allowed, out.Refused = false, i
			}
		}
	}
	return out
}
