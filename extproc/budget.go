package extproc

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tokengate/tokengate/extproc/cost"
	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// need is what a request draws on its policy's limits: tokens and cost
// by kind, and the request itself.
type need struct {
	prompt, completion int64 // tokens
	costIn, costOut    int64 // micro-units
	request            bool
	// capped (strict mode's reservation) holds of a sliding window no
	// more output than the window leaves after the input: a max_tokens
	// past the whole window could never be admitted, and reserving the
	// whole window lets it run on an empty one, as any request whose use
	// outgrows its reservation does. Input alone past the window is
	// still refused: it cannot fit.
	capped bool
}

// amounts is nd in each limit of the request's budget, in its order,
// written over the request's own buffer: stores do not keep amounts past
// a call, and the next call's replace them.
func (p *processor) amounts(nd need) []int64 {
	meters := p.policy.Meters()
	out := p.amountBuf[:len(p.budget)]
	for i, m := range meters {
		var in, o int64
		switch m.Unit {
		case config.UnitRequests:
			out[i] = 0
			if nd.request {
				out[i] = 1
			}
			continue
		case config.UnitTokens:
			in, o = nd.prompt, nd.completion
		case config.UnitCost:
			in, o = nd.costIn, nd.costOut
		}
		l := p.budget[i]
		switch m.Kind {
		case config.KindInput:
			out[i] = in
		case config.KindOutput:
			if nd.capped && l.Window != 0 {
				o = min(o, l.Max)
			}
			out[i] = o
		default:
			if nd.capped && l.Window != 0 {
				o = min(o, max(l.Max-in, 0))
			}
			out[i] = satAdd(in, o)
		}
	}
	return out
}

// nothing reports amounts that hold nothing.
func nothing(n []int64) bool {
	for _, v := range n {
		if v > 0 {
			return false
		}
	}
	return true
}

// usedNeed is what a settled request used: its tokens, their cost at
// the request's price (the reported usage's parts priced apart), and the
// request itself unless it is free (charge_unanswered: none).
func (p *processor) usedNeed(prompt, completion int64, source string) need {
	nd := need{prompt: prompt, completion: completion,
		request: source != sourceUnanswered || p.policy.ChargesUnanswered()}
	if p.policy.HasCost() {
		u := llm.Usage{Prompt: prompt, Completion: completion}
		if source == sourceReported {
			u = p.usage
		}
		nd.costIn, nd.costOut = cost.Split(p.priceFor(), u)
	}
	return nd
}

// priceFor is the request's price, looked up at the latest when the
// request settles (a request with no body phase); unpriced models cost
// nothing then, the body phase having refused them where it could.
func (p *processor) priceFor() cost.Price {
	if !p.priced {
		p.price, p.priced = p.policy.Price(p.model)
	}
	return p.price
}

// priceModel finds the price of the request's model for the policy's
// cost limits; the refusal to send when it has none.
func (p *processor) priceModel() bool {
	if !p.policy.HasCost() {
		return true
	}
	p.price, p.priced = p.policy.Price(p.model)
	return p.priced
}

// refusal says which limit refused, and in which words: APIM's for
// the shorthands, the limit's name for the others.
func (p *processor) refusal(d limiter.Decisions) (l limiter.Limit, m policy.Meter, quota bool, msg string) {
	i := max(d.Refused, 0)
	l, m = p.budget[i], p.policy.Meters()[i]
	quota = l.Period != limiter.NoPeriod
	secs := ceilSeconds(d.RetryAfter())
	switch {
	case m.Shorthand && quota:
		msg = fmt.Sprintf("Token quota is exceeded. Try again in %d seconds.", secs)
	case m.Shorthand:
		msg = fmt.Sprintf("Token limit is exceeded. Try again in %d seconds.", secs)
	default:
		what := "Limit"
		if quota {
			what = "Quota"
		}
		msg = fmt.Sprintf("%s %q (%s) is exceeded. Try again in %d seconds.", what, l.Name, describe(l, m), secs)
	}
	return l, m, quota, msg
}

// describe says a limit in words: "20000 input tokens per 1m0s",
// "2.000000 cost daily".
func describe(l limiter.Limit, m policy.Meter) string {
	amount := strconv.FormatInt(l.Max, 10)
	unit := m.Unit
	if m.Unit == config.UnitCost {
		amount = config.FormatMicros(l.Max)
	}
	if m.Kind != "" && m.Kind != config.KindTotal {
		unit = m.Kind + " " + unit
	}
	if l.Window != 0 {
		return fmt.Sprintf("%s %s per %v", amount, unit, l.Window)
	}
	return fmt.Sprintf("%s %s %s", amount, unit, l.Period)
}

// shown reports a limit worth advertising: the unlimited window a
// quota-only policy keeps is not.
func shown(l limiter.Limit) bool { return l.Max != math.MaxInt64 }

// closest is the index of the limit that pick selects and that is
// closest to refusing (the least remaining, as a share of its Max): the
// refused one when pick selects it; -1 when pick selects none.
func closest(b limiter.Budget, d limiter.Decisions, pick func(int) bool) int {
	if d.Refused >= 0 && pick(d.Refused) {
		return d.Refused
	}
	best, share := -1, 2.0
	for i, l := range b {
		if !pick(i) || !shown(l) || i >= len(d.Limits) {
			continue
		}
		s := 0.0
		if l.Max > 0 {
			s = float64(d.Limits[i].Remaining) / float64(l.Max)
		}
		if s < share {
			best, share = i, s
		}
	}
	return best
}

// rateHeaders tell the client where its budgets stand: OpenAI's
// x-ratelimit-*-tokens (the token window closest to refusing) and
// -requests (the request window closest to refusing), Anthropic's own
// names for the same, the policy's custom names, and the draft's fields
// for every limit. A budget the key does not have is not advertised.
func (p *processor) rateHeaders(h *headerSet, d limiter.Decisions) {
	b, meters := p.budget, p.policy.Meters()
	if len(d.Limits) != len(b) {
		return
	}
	window := func(unit string) func(int) bool {
		return func(i int) bool { return meters[i].Unit == unit && b[i].Window != 0 }
	}
	anthropic := p.route.API.Provider() == llm.Anthropic
	if i := closest(b, d, window(config.UnitTokens)); i >= 0 {
		l := d.Limits[i]
		h.setInt("x-ratelimit-limit-tokens", b[i].Max)
		h.setInt("x-ratelimit-remaining-tokens", l.Remaining)
		h.set("x-ratelimit-reset-tokens", l.Reset.Round(time.Millisecond).String())
		h.setInt(p.policy.Headers().RemainingTokens, l.Remaining)
		if anthropic {
			// Anthropic's own names, its reset a time (RFC 3339).
			h.setInt("anthropic-ratelimit-tokens-limit", b[i].Max)
			h.setInt("anthropic-ratelimit-tokens-remaining", l.Remaining)
			h.set("anthropic-ratelimit-tokens-reset", p.s.clock.Now().Add(l.Reset).UTC().Format(time.RFC3339))
		}
	}
	if i := closest(b, d, window(config.UnitRequests)); i >= 0 {
		l := d.Limits[i]
		h.setInt("x-ratelimit-limit-requests", b[i].Max)
		h.setInt("x-ratelimit-remaining-requests", l.Remaining)
		h.set("x-ratelimit-reset-requests", l.Reset.Round(time.Millisecond).String())
		if anthropic {
			h.setInt("anthropic-ratelimit-requests-limit", b[i].Max)
			h.setInt("anthropic-ratelimit-requests-remaining", l.Remaining)
			h.set("anthropic-ratelimit-requests-reset", p.s.clock.Now().Add(l.Reset).UTC().Format(time.RFC3339))
		}
	}
	if i := closest(b, d, func(i int) bool { return meters[i].Unit == config.UnitTokens && b[i].Period != limiter.NoPeriod }); i >= 0 {
		h.setInt(p.policy.Headers().RemainingQuotaTokens, d.Limits[i].Remaining)
	}
	p.draftHeaders(h, d)
}

// draftHeaders are the IETF httpapi rate-limit fields (RateLimit-Policy,
// RateLimit; draft-ietf-httpapi-ratelimit-headers), one item per limit,
// named as the limit: w is a window's length, or the current period's.
// Units other than requests are ones the draft's registry does not list
// ("tokens", "cost" in micro-units of the prices' currency): clients that
// know only requests must read qu.
func (p *processor) draftHeaders(h *headerSet, d limiter.Decisions) {
	b, meters := p.budget, p.policy.Meters()
	var policyBuf, stateBuf [320]byte
	pol, state := policyBuf[:0], stateBuf[:0]
	for i, l := range b {
		if !shown(l) {
			continue
		}
		if len(pol) > 0 {
			pol, state = append(pol, ", "...), append(state, ", "...)
		}
		pol = append(append(append(pol, '"'), l.Name...), '"')
		pol = strconv.AppendInt(append(pol, ";q="...), l.Max, 10)
		pol = append(append(append(pol, `;qu="`...), meters[i].Unit...), '"')
		pol = strconv.AppendInt(append(pol, ";w="...), p.spanSeconds(l), 10)
		state = append(append(append(state, '"'), l.Name...), '"')
		state = strconv.AppendInt(append(state, ";r="...), d.Limits[i].Remaining, 10)
		state = strconv.AppendInt(append(state, ";t="...), ceilSeconds(d.Limits[i].Reset), 10)
	}
	if len(pol) > 0 {
		h.setBytes("ratelimit-policy", pol)
		h.setBytes("ratelimit", state)
	}
}

// spanSeconds is a limit's w: a window's length, or the length of the
// period now is in, in whole seconds (at least 1).
func (p *processor) spanSeconds(l limiter.Limit) int64 {
	switch l.Period {
	case limiter.NoPeriod:
		return max(int64(l.Window/time.Second), 1)
	case limiter.Hourly:
		return 3600
	case limiter.Daily:
		return 86400
	case limiter.Weekly:
		return 7 * 86400
	}
	start, end := l.Period.Bounds(p.s.clock.Now())
	return int64(end.Sub(start) / time.Second)
}

// derived is where the request's limits stand at now without asking the
// store: the reservation's answer, with used (one per limit) charged in
// place of what the request held; nil used, the request still holding.
// Other requests' charges since the reservation are not in it: it is what
// a store that settles behind the response lets the headers say.
func (p *processor) derived(used []int64, now time.Time) limiter.Decisions {
	r := p.reserved
	if len(r.Limits) != len(p.budget) {
		return limiter.Decisions{Refused: -1}
	}
	elapsed := now.Sub(p.reservedAt)
	out := limiter.Decisions{Allowed: true, Refused: -1, Limits: make([]limiter.LimitDecision, len(p.budget))}
	for i, l := range p.budget {
		u, reset := r.Limits[i].Used, max(r.Limits[i].Reset-elapsed, 0)
		if used != nil {
			u = max(u-p.held(l.Name), 0) + used[i]
			if used[i] > 0 {
				reset = max(reset, l.Leaves(now))
			}
		}
		if l.Period != limiter.NoPeriod {
			reset = l.Leaves(now)
		}
		out.Limits[i] = limiter.LimitDecision{Max: l.Max, Used: u, Remaining: max(l.Max-u, 0), Reset: reset}
	}
	return out
}

// held is what the request's reservation holds of the limit name.
func (p *processor) held(name string) int64 {
	for _, a := range p.holds.Amounts {
		if a.Name == name {
			return a.N
		}
	}
	return 0
}

// ceilSeconds is a duration in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }

// tokenRemaining is what remains of the token window the headers report,
// for the metadata; ok false when the key has none.
func (p *processor) tokenRemaining(d limiter.Decisions) (int64, bool) {
	meters := p.policy.Meters()
	i := closest(p.budget, d, func(i int) bool { return meters[i].Unit == config.UnitTokens && p.budget[i].Window != 0 })
	if i < 0 {
		return 0, false
	}
	return d.Limits[i].Remaining, true
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
