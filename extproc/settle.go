package extproc

import (
	"cmp"
	"context"
	"fmt"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// settleTimeout bounds the settle that runs after Envoy has gone: the
// stream's context is cancelled by then, and a shared store still needs a
// chance to hear of the charge.
const settleTimeout = 2 * time.Second

// Sources of a settled count, in metadata and logs.
const (
	sourceReported  = "reported"  // the upstream's usage
	sourceCounted   = "counted"   // prompt estimate + completion tokenized from the stream or the answer
	sourceEstimated = "estimated" // prompt estimate alone
	sourceNone      = "none"      // a failed request without usage costs nothing
	// The stream ended with no response at all: charge_unanswered decides.
	sourceUnanswered = "unanswered"
	// A background Responses request without usage: its output is
	// fetched later, uncounted, so its whole output budget is charged.
	sourceBackground = "background"
	// A 2xx answer without usage that tokengate cannot read: its output
	// budget is charged too.
	sourceUnreadable = "unreadable"
)

// charge is what a finished request really used (SPEC §2 step 5): the
// reported usage when there is one; a failed request without usage costs
// nothing; otherwise the prompt, counted now if the policy did not
// estimate it, plus whatever completion the stream delivered or the
// buffered answer carries. A request that got no response at all (the
// stream ended after the request body: a client gone, an Envoy reset, a
// local reply Envoy keeps from the processor) is charged its prompt, or
// nothing, as the policy's charge_unanswered says: tokengate cannot tell
// whether the upstream read it, and a client that walks away must not be
// free by default.
func (p *processor) charge() (prompt, completion, total int64, source string) {
	switch {
	case p.found == sourceReported:
		return p.usage.Prompt, p.usage.Completion, p.usage.Total, sourceReported
	case p.status != 0 && (p.status < 200 || p.status > 299):
		return 0, 0, 0, sourceNone
	case !p.responded && !p.policy.ChargesUnanswered():
		return 0, 0, 0, sourceUnanswered
	case p.req != nil && p.req.Background, p.found == sourceUnreadable:
		// Output tokengate cannot see is charged its whole budget. A
		// background request's, answered or not: the upstream may be
		// running it, and a client that hangs up at once must not make
		// it cheaper.
		source := sourceUnreadable
		if p.req != nil && p.req.Background {
			source = sourceBackground
		}
		p.estimatePrompt()
		c := p.outputBudget()
		return p.estimate, c, p.estimate + c, source
	case !p.responded:
		p.estimatePrompt()
		return p.estimate, 0, p.estimate, sourceUnanswered
	}
	if p.stream != nil {
		c, source := p.stream.CompletionTokens(), sourceCounted
		if p.stream.Lost() {
			// An event too large to read may have held text, or the
			// usage: the stream is charged as an answer tokengate cannot
			// read.
			c, source = max(c, p.outputBudget()), sourceUnreadable
		}
		// A prompt the stream reported before it was cut (Anthropic's
		// message_start) is exact, and spares the estimate.
		if prompt, said := p.stream.Prompt(); said {
			return prompt, c, prompt + c, source
		}
		p.estimatePrompt()
		if c > 0 || source == sourceUnreadable {
			return p.estimate, c, p.estimate + c, source
		}
		return p.estimate, 0, p.estimate, sourceEstimated
	}
	p.estimatePrompt()
	if p.found == sourceCounted {
		return p.estimate, p.answered, p.estimate + p.answered, sourceCounted
	}
	return p.estimate, 0, p.estimate, sourceEstimated
}

// outputBudget is what a request whose output tokengate cannot see is
// charged for it: what strict mode would hold for its completion.
func (p *processor) outputBudget() int64 {
	if p.req == nil {
		return p.completionBudget(0, 1)
	}
	return p.completionBudget(p.req.MaxOutput, p.req.Choices)
}

// completionBudget is a completion's budget: maxOutput (the request's
// max_tokens, or its API's name for it) for each of its choices, else
// the policy's strict budget, else the one strict mode falls back to.
func (p *processor) completionBudget(maxOutput, choices int64) int64 {
	_, budget := p.policy.Strict()
	return saturatingMul(cmp.Or(max(maxOutput, 0), budget, config.DefaultCompletionBudget), max(choices, 1))
}

// counted is what the policy charges of a request's tokens.
func (p *processor) counted(prompt, completion, total int64) int64 {
	switch p.policy.Count() {
	case config.CountPrompt:
		return prompt
	case config.CountCompletion:
		return completion
	}
	return total
}

// decision is how an admitted request is reported: allowed, or in shadow
// mode would_reject when it would have been refused.
func (p *processor) decision() string {
	if p.shadow != "" {
		return decisionWouldReject
	}
	return decisionAllowed
}

// decisionFor names a refusal: quota_exceeded when a calendar limit
// refused, rate_limited when a window did.
func (p *processor) decisionFor(d limiter.Decisions) string {
	if d.Refused >= 0 && p.budget[d.Refused].Period != limiter.NoPeriod {
		return decisionQuota
	}
	return decisionRateLimited
}

// settlement is what settling one request charged, and where its budget
// stands after it (d, when err is nil).
type settlement struct {
	prompt, completion, total int64
	charged                   int64 // what the policy counts of them
	cost                      int64 // what they cost, in micro-units (cost limits only)
	source                    string
	d                         limiter.Decisions
	err                       error
}

// settleOnce charges the request, ends its reservation, and records and
// logs it: the one way a request is settled. ctx is the stream's while
// Envoy waits for the answer, or a detached one once the stream is gone.
func (p *processor) settleOnce(ctx context.Context) settlement {
	p.stage = stageDone
	var st settlement
	st.prompt, st.completion, st.total, st.source = p.charge()
	st.charged = p.counted(st.prompt, st.completion, st.total)
	// Counted before the store hears of it: whoever sees the charge in
	// the window finds it in the metrics and the log too.
	p.record(st.prompt, st.completion, st.source)
	p.logDecision(p.decision(), zap.Int64("tokens", st.charged), zap.String("source", st.source))
	nd := p.usedNeed(st.prompt, st.completion, st.source)
	st.cost = satAdd(nd.costIn, nd.costOut)
	p.s.metrics.costed(p.policy.Name(), st.cost)
	used, now := p.amounts(nd), p.s.clock.Now()
	if bh, ok := p.s.store.(limiter.Behind); ok &&
		bh.SettleBehind(limiter.Settle{Key: p.counter, Budget: p.budget, Holds: p.holds, Used: used, Now: now}) {
		// The response goes on at once; the store hears of the charge
		// moments later, and the headers say what it will answer then.
		st.d = p.derived(used, now)
		return st
	}
	p.room.answer = limiter.Decisions{Limits: p.room.settle[:0]}
	st.err = limiter.SettleManyInto(ctx, p.s.store, p.counter, p.budget, p.holds, used, now, &p.room.answer)
	st.d = p.room.answer
	if st.err != nil {
		p.s.storeError("settle", st.err)
		p.s.log.Warn("limiter store failed to settle", zap.String("key", p.keyHash[:8]), zap.Error(st.err))
	}
	return st
}

// settle settles a request whose answer is passing through Envoy, and
// returns the headers and metadata that tell the client where its budget
// stands.
func (p *processor) settle() (*extprocv3.HeaderMutation, *meta) {
	st := p.settleOnce(p.ctx)
	if st.err != nil {
		return nil, nil
	}
	var h headerSet
	p.rateHeaders(&h, st.d)
	if name := p.policy.Headers().TokensConsumed; name != "" {
		h.setInt(name, st.charged)
	}
	md := newMeta(p.decision())
	if st.source == sourceReported {
		md.num("cached_tokens", p.usage.CacheRead).num("cache_write_tokens", p.usage.CacheWrite).num("reasoning_tokens", p.usage.Reasoning)
	}
	if p.policy.HasCost() {
		md.num("cost_micros", st.cost)
	}
	if r, ok := p.tokenRemaining(st.d); ok {
		md.num("remaining_tokens", r)
	}
	return h.mutation(), md.num("prompt_tokens", st.prompt).num("completion_tokens", st.completion).
		num("total_tokens", st.total).str("source", st.source)
}

// finish settles a request whose stream ended before its response did:
// client gone, Envoy reset, or an upstream that never finished. A stream
// is charged with what it delivered so far. The stream's context is done
// by now, and a shared store still needs a chance to hear of the charge.
func (p *processor) finish() {
	if p.decoder != nil {
		p.decoder.Abort()
		p.decoder = nil
	}
	if !p.stage.holding() {
		return
	}
	if p.stream != nil {
		p.takeUsage(p.stream.Usage())
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), settleTimeout)
	defer cancel()
	st := p.settleOnce(ctx)
	p.s.log.Debug("stream ended before the response did; settled", zap.String("key", p.keyHash[:8]),
		zap.Int("status", p.status), zap.Int64("tokens", st.total), zap.String("source", st.source))
}

// takeUsage keeps the usage the upstream reported, if it did.
func (p *processor) takeUsage(u llm.Usage, ok bool) {
	if ok {
		p.usage, p.found = u, sourceReported
	}
}

// record counts a settled request in the metrics.
func (p *processor) record(prompt, completion int64, source string) {
	m := p.s.metrics
	m.request(p.policy.Name(), p.decision())
	m.charged(p.policy.Name(), source, prompt, completion)
	if source == sourceReported {
		m.breakdown(p.policy.Name(), p.route.API, p.usage)
		m.estimate(p.route.API, p.estimate, p.usage.Prompt)
	}
}

// reject answers a refusal, naming the limit that refused: 429 when a
// window is spent, 403 when a calendar quota is, with x-should-retry:
// false so SDKs don't spin on a quota that resets next month.
func (p *processor) reject(d limiter.Decisions) *extprocv3.ProcessingResponse {
	decision := p.decisionFor(d)
	l, m, quota, msg := p.refusal(d)
	var h headerSet
	p.retryHeaders(&h, d.RetryAfter())
	p.rateHeaders(&h, d)
	p.s.metrics.request(p.policy.Name(), decision)
	p.s.metrics.refused(p.policy.Name(), l.Name)
	p.logDecision(decision, zap.String("limit", l.Name), zap.Duration("retry_after", d.RetryAfter()))
	md := newMeta(decision).str("limit", l.Name).num("remaining", d.Limits[max(d.Refused, 0)].Remaining)
	if r, ok := p.tokenRemaining(d); ok {
		md.num("remaining_tokens", r)
	}
	if quota {
		h.set("x-should-retry", "false")
		return p.refuse(llm.QuotaExceeded, &h, msg, "tokengate_quota_exceeded", md)
	}
	if m.Unit == config.UnitRequests {
		// OpenAI's type for a spent request window.
		return p.refuse(llm.RequestsLimited, &h, msg, "tokengate_rate_limited", md)
	}
	return p.refuse(llm.RateLimited, &h, msg, "tokengate_rate_limited", md)
}

// rejectUnpriced answers a request whose model the price list does not
// price, under a policy with a cost limit: a budget cannot count what it
// cannot price.
func (p *processor) rejectUnpriced() *extprocv3.ProcessingResponse {
	p.release()
	p.s.metrics.request(p.policy.Name(), decisionUnpriced)
	p.logDecision(decisionUnpriced, zap.String("model", p.model))
	msg := fmt.Sprintf("The model %q has no price, and this API's cost limit needs one.", p.model)
	return p.refuse(llm.Unpriced, &headerSet{}, msg, "tokengate_unpriced_model", newMeta(decisionUnpriced))
}

// unavailable answers 503 while the shared store is away under
// on_error: fail_closed.
func (p *processor) unavailable() *extprocv3.ProcessingResponse {
	p.s.metrics.request(p.policy.Name(), decisionUnavailable)
	p.logDecision(decisionUnavailable)
	var h headerSet
	h.set("retry-after", "1")
	return p.refuse(llm.Unavailable, &h, "The token limiter is unavailable. Try again shortly.",
		"tokengate_unavailable", newMeta(decisionUnavailable))
}

func (p *processor) rejectMissingKey() *extprocv3.ProcessingResponse {
	p.s.metrics.request(p.policy.Name(), decisionMissingKey)
	p.logDecision(decisionMissingKey)
	msg := fmt.Sprintf("Access denied due to missing subscription key. Include it in one of these headers: %v.",
		p.keySourcesFor(p.policy))
	return p.refuse(llm.MissingKey, &headerSet{}, msg, "tokengate_missing_key", newMeta(decisionMissingKey))
}

// logDecision writes one line per decision at debug and per refusal at
// info, with the key's hash prefix only.
func (p *processor) logDecision(decision string, fields ...zap.Field) {
	lvl := zap.DebugLevel
	if decision != decisionAllowed && decision != decisionPassthrough {
		lvl = zap.InfoLevel
	}
	ce := p.s.log.Check(lvl, "decision")
	if ce == nil {
		return
	}
	base := []zap.Field{zap.String("decision", decision), zap.String("api", p.route.API.String())}
	if p.policy != nil {
		base = append(base, zap.String("policy", p.policy.Name()))
	}
	if p.keyHash != "" {
		base = append(base, zap.String("key", p.keyHash[:8]))
	}
	ce.Write(append(base, fields...)...)
}
