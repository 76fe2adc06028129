package extproc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"

	"github.com/tokengate/tokengate/extproc/cost"
	"github.com/tokengate/tokengate/extproc/decode"
	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// Decisions, as they appear in metadata and logs.
const (
	decisionAllowed     = "allowed"
	decisionRateLimited = "rate_limited"
	decisionMissingKey  = "missing_key"
	decisionPassthrough = "passthrough"
	decisionQuota       = "quota_exceeded"
	decisionWouldReject = "would_reject"
	decisionUnavailable = "unavailable"
	decisionUnreadable  = "unreadable_body"
	decisionUnpriced    = "unpriced_model"
)

// stage is how far a request has come. It moves forward only, one way:
// new → open → admitted → body read → done, where a refusal or a
// settlement jumps to done from wherever the request was.
type stage uint8

const (
	stageNew      stage = iota // no request headers yet
	stageOpen                  // headers seen, nothing held (yet): passed through, or not counted
	stageAdmitted              // admitted: a reservation is held and must be settled
	stageBodyRead              // admitted, and the request body read; more body is a confused client
	stageDone                  // settled or refused: nothing is held, nothing more is charged
)

// holding reports whether the request has a reservation to settle.
func (s stage) holding() bool { return s == stageAdmitted || s == stageBodyRead }

// processor holds one HTTP request's state across its ext_proc messages.
type processor struct {
	s     *Server
	ctx   context.Context
	stage stage

	path    string
	route   llm.Route
	policy  *policy.Policy
	id      identity
	keyHash string         // hex SHA-256 of the subscription key; the key itself is never kept
	tier    string         // the caller's tier under the policy, "" for none
	counter string         // the limiter key: policy, key hash and, per model, the model
	budget  limiter.Budget // the key's limits under the policy, set by admit
	model   string
	shadow  string // in shadow mode, the refusal that was not sent
	// deferred is set for a request whose policy the body's model picks:
	// no policy matches its path alone, and some policy restricted to
	// models matches it. Nothing is held until the body is read.
	deferred bool

	// Envoy's body modes, from the stream's protocol_config: a body of a
	// buffered mode comes in one message, whatever its end_of_stream says.
	wholeRequestBody, wholeResponseBody bool
	reqEncoding                         string // the request's content-encoding

	holds limiter.Holds // what the reservation holds
	// reserved is the store's answer to the last admit, at reservedAt:
	// with a store that settles behind the response, the headers that
	// answer is sent with are derived from it (derived).
	reserved   limiter.Decisions
	reservedAt time.Time
	// amountBuf holds what a call asks of each limit (amounts).
	amountBuf [limiter.MaxLimits]int64
	// room is where a store in this process answers (limiter.MultiInto):
	// a policy of up to roomLimits limits is decided without allocating.
	room struct {
		reserve, settle [roomLimits]limiter.LimitDecision
		amounts         [roomLimits]limiter.Amount
		answer          limiter.Decisions // passed by pointer: kept here, not on the heap per call
	}
	price    cost.Price   // the model's price, for cost limits
	priced   bool         // price is looked up
	req      *llm.Request // the request body, read; nil when it was not JSON
	estimate int64        // prompt tokens estimated from the request body
	prompted bool         // estimate is computed (else it is 0 so far)
	body     []byte

	// The response.
	responded bool   // a response phase was seen: the request was answered
	status    int    // upstream status, 0 until known
	encoding  string // content-encoding of the response
	// found says what the answer itself told of its tokens: sourceReported
	// (usage), sourceCounted (a buffered answer without usage, its
	// completion counted into answered), sourceUnreadable (a 2xx answer
	// without usage that could not be read), or "" (nothing yet).
	found    string
	usage    llm.Usage
	answered int64
	stream   *llm.StreamCounter // set for event-stream responses
	decoder  *decode.Stream     // set for encoded event streams
}

func (p *processor) handle(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	if pc := req.GetProtocolConfig(); pc != nil {
		p.wholeRequestBody = wholeBody(pc.GetRequestBodyMode())
		p.wholeResponseBody = wholeBody(pc.GetResponseBodyMode())
	}
	p.id.note(req)
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return p.requestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return p.requestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		p.responded = true
		return p.responseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		p.responded = true
		return p.responseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return p.requestTrailers()
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		p.responded = true
		return p.responseTrailers()
	}
	return continueAny(req)
}

// wholeBody reports whether Envoy sends a body of this mode in one message.
// It then sends end_of_stream false when trailers follow (with trailers
// SKIP, nothing follows at all): the one message is the whole body, or all
// of it Envoy will show, and must be read as such. Waiting for an end that
// never comes would let a request with trailers skip every body check.
func wholeBody(m filterv3.ProcessingMode_BodySendMode) bool {
	return m == filterv3.ProcessingMode_BUFFERED || m == filterv3.ProcessingMode_BUFFERED_PARTIAL
}

// requestHeaders finds the API, the policy and the key, and refuses at once
// when the window is already spent (APIM's check).
func (p *processor) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if p.stage != stageNew {
		// One stream is one HTTP request: a second set of request headers
		// is a confused client, and must not reserve a second time.
		p.s.log.Debug("second request_headers on one stream ignored")
		return continueRequestHeaders()
	}
	p.stage = stageOpen
	hm := headers(h.GetHeaders().GetHeaders())
	p.id.headers = hm
	p.path = llm.NormalizePath(hm.get(":path"))
	// The request's body is decoded to be read, and forwarded as it came.
	p.reqEncoding = hm.get("content-encoding")
	p.route = llm.Detect(p.path)
	if method := hm.get(":method"); method != "" && !strings.EqualFold(method, "POST") {
		// Inference is a POST; anything else on these paths is not a
		// generation and is not counted.
		p.route = llm.Route{}
	}
	if p.route.API == llm.Unknown {
		p.s.metrics.passed()
		p.logDecision(decisionPassthrough)
		return continueRequestHeaders()
	}
	p.model = p.route.Model
	p.policy = p.s.match(p.path, p.model)
	if p.policy == nil && p.model == "" && p.s.modelPolicy(p.path) != nil {
		// The model, in the body, decides whether a policy applies.
		p.deferred = true
		return continueRequestHeaders()
	}
	if p.policy == nil {
		p.s.metrics.passed()
		p.logDecision(decisionPassthrough)
		return continueRequestHeaders()
	}
	if !p.identify(p.policy) {
		return p.rejectMissingKey()
	}
	// The headers check every limit; the request is held in its request
	// limits with its tokens, once the body is read. A request without a
	// body is held now: nothing else will hold it.
	if resp := p.admit(need{request: h.GetEndOfStream()}); resp != nil {
		return resp
	}
	return continueRequestHeaders()
}

// identify reads the request's key (hashed at once) and tier under pol;
// false when the key is missing and the policy refuses such requests.
func (p *processor) identify(pol *policy.Policy) bool {
	key, ok := p.key(pol)
	if !ok {
		if pol.RejectsMissingKey() {
			return false
		}
		key = "anonymous"
	}
	p.keyHash, p.tier = p.s.HashKey(key), p.tierOf(pol)
	return true
}

// counterKey names the budget the request draws on.
func (p *processor) counterKey() string { return p.policy.CounterKey(p.keyHash, p.model) }

// requestBody reads the request's model and prompt and, when the policy
// estimates, reserves the prompt before the upstream sees it.
func (p *processor) requestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if p.stage != stageAdmitted && !p.deferred {
		// Once the body is read, more body is a confused client: it must
		// not reserve again, least of all after settlement.
		return continueRequestBody()
	}
	body := p.collect(b, p.wholeRequestBody)
	if body == nil {
		return continueRequestBody()
	}
	if resp, rewritten := p.readRequestBody(body); resp != nil {
		return resp
	} else if rewritten != nil {
		return rewriteRequestBody(rewritten)
	}
	return continueRequestBody()
}

// requestTrailers ends a request body that came in several messages
// (a streamed body mode) without an end_of_stream: the body phase's checks
// run now. The body can no longer be rewritten, so a stream is not asked
// for usage; its text is counted instead.
func (p *processor) requestTrailers() *extprocv3.ProcessingResponse {
	if p.stage != stageAdmitted && !p.deferred || p.body == nil {
		// No body begun: trailers out of order are a confused client,
		// and the body, if it comes, is read as usual.
		return continueRequestTrailers()
	}
	if resp, _ := p.readRequestBody(p.takeBody()); resp != nil {
		return resp
	}
	return continueRequestTrailers()
}

// readRequestBody runs the body phase on the whole request body: a refusal
// to send instead of the request, or the body rewritten to ask a stream
// for its usage (nil: unchanged).
func (p *processor) readRequestBody(raw []byte) (*extprocv3.ProcessingResponse, []byte) {
	if !p.deferred {
		p.stage = stageBodyRead
	}
	body, release, err := p.s.decoding.Bytes(p.reqEncoding, raw)
	if err != nil {
		reason := unreadableEncoding
		if errors.Is(err, decode.ErrTooLarge) {
			reason = unreadableTooLarge
		}
		if resp, done := p.undefer(false); done {
			return resp, nil
		}
		return p.unreadable(reason, raw, err), nil
	}
	defer release()
	req, err := llm.ParseRequest(p.route.API, body)
	if err != nil {
		if resp, done := p.undefer(false); done {
			return resp, nil
		}
		return p.unreadable(unreadableJSON, body, err), nil
	}
	req.Stream = req.Stream || p.route.Stream // streamGenerateContent, converse-stream…
	p.req = req
	if req.Model != "" && p.route.Model == "" {
		// A path that names the model (an Azure deployment, a Gemini,
		// Vertex or Bedrock model) is what the upstream serves, whatever
		// the body says: a body's model there would pick another budget,
		// or another price, for the same work.
		p.model = req.Model
	}
	if resp, done := p.undefer(true); done {
		return resp, nil
	}
	next := p.s.match(p.path, p.model)
	if next == nil {
		next = p.policy
	}
	if next != p.policy || (next.PerModel() && p.counter != p.counterKeyFor(next)) {
		// Now the model is known, a policy restricted to it, or the
		// model's own budget, applies: the headers-phase check is redone.
		p.releaseHold()
		p.policy = next
		// The new policy may read the key from elsewhere.
		if !p.identify(next) {
			p.release()
			return p.rejectMissingKey(), nil
		}
		if resp := p.admit(need{}); resp != nil {
			return resp, nil
		}
	}
	if !p.priceModel() {
		return p.rejectUnpriced(), nil
	}
	strict, _ := p.policy.Strict()
	if p.policy.EstimatesPrompt() || req.Stream || strict {
		p.estimatePrompt()
		if err := req.PromptErr(); err != nil && (p.policy.EstimatesPrompt() || strict) {
			p.req = nil
			return p.unreadable(unreadablePrompt, body, err), nil
		}
	}
	if resp := p.reserve(p.reservation(req.MaxOutput, req.Choices)); resp != nil {
		return resp, nil
	}
	// An encoded body is forwarded as it came: rewriting it would mean
	// encoding it again, so such a stream is counted from its deltas.
	if req.Stream && !req.IncludeUsage && p.policy.InjectsStreamUsage() && p.route.API != llm.Responses && decode.IsIdentity(p.reqEncoding) {
		if rewritten, err := llm.InjectIncludeUsage(body); err == nil {
			return nil, rewritten
		}
	}
	return nil, nil
}

// undefer gives a deferred request its policy once its body is read:
// the one its model picks, or, when the body could not be read (read
// false), the path's first policy restricted to models, whose
// unreadable_body then decides it (not knowing the model must not make a
// request free). The request is checked under it as the headers phase
// would have. done reports a request that needs nothing more: a model no
// policy lists (passed uncounted), or a refusal (resp). A request not
// deferred is left as it is.
func (p *processor) undefer(read bool) (resp *extprocv3.ProcessingResponse, done bool) {
	if !p.deferred {
		return nil, false
	}
	p.deferred = false
	pol := p.s.modelPolicy(p.path)
	if read {
		pol = p.s.match(p.path, p.model)
	}
	if pol == nil {
		p.s.metrics.passed()
		p.logDecision(decisionPassthrough)
		return nil, true
	}
	p.policy = pol
	if !p.identify(pol) {
		p.stage = stageDone
		return p.rejectMissingKey(), true
	}
	if resp := p.admit(need{}); resp != nil {
		return resp, true
	}
	p.stage = stageBodyRead
	return nil, false
}

// Why a request body could not be read, in metrics and logs.
const (
	unreadableEncoding = "encoding"  // a content-encoding tokengate cannot decode, or a corrupt one
	unreadableTooLarge = "too_large" // compressed, it inflates past what the bodies decoded at once may
	unreadableJSON     = "json"      // not the JSON object of its API
	unreadablePrompt   = "prompt"    // the prompt is not of a shape tokengate reads
)

// unreadable decides a body tokengate cannot read. What the upstream may
// read, tokengate must read or refuse: under a policy that needs the body
// it is refused, or its length in bytes stands for its prompt (held like
// an estimate, and charged unless the upstream reports usage), as
// unreadable_body says. A policy that does not read the body lets it
// through as before. It returns the refusal to send, if any.
func (p *processor) unreadable(reason string, body []byte, err error) *extprocv3.ProcessingResponse {
	action := p.policy.UnreadableAction()
	if !p.needsBody() {
		action = config.UnreadablePass
	}
	p.s.metrics.unreadableBody(p.policy.Name(), reason, action)
	p.s.log.Debug("request body not readable", zap.String("key", p.keyHash[:8]), zap.String("api", p.route.API.String()),
		zap.String("reason", reason), zap.String("action", action), zap.Error(err))
	switch action {
	case config.UnreadableRefuse:
		p.release()
		p.s.metrics.request(p.policy.Name(), decisionUnreadable)
		p.logDecision(decisionUnreadable, zap.String("reason", reason))
		msg := fmt.Sprintf("The request body could not be read (%s), and this API's token limit needs it.", reason)
		return p.refuse(llm.Unreadable, &headerSet{}, msg,
			"tokengate_unreadable_body", newMeta(decisionUnreadable).str("reason", reason))
	case config.UnreadableChargeBytes:
		// The bytes stand for the prompt; a strict policy adds its own
		// completion budget, the body's max_tokens being unknown.
		p.estimate, p.prompted = int64(len(body)), true
		if !p.priceModel() {
			return p.rejectUnpriced()
		}
		return p.reserve(p.reservation(0, 1))
	}
	return nil
}

// needsBody reports whether the request's limits depend on its body: the
// policy estimates or reserves from it, or the model in it picks a budget.
func (p *processor) needsBody() bool {
	if strict, _ := p.policy.Strict(); strict || p.policy.EstimatesPrompt() || p.policy.PerModel() {
		return true
	}
	for _, pol := range p.s.Policies() {
		if pol.HasModels() {
			return true
		}
	}
	return false
}

// estimatePrompt counts the request's prompt, once, within the estimate
// budget. A policy that does not estimate still gets here when a request
// ends without usage (abandoned, or an answer that reports none): the
// upstream read the prompt, and bills it.
func (p *processor) estimatePrompt() {
	if p.prompted || p.req == nil {
		return
	}
	p.prompted = true
	var bounded bool
	p.estimate, bounded = p.req.PromptTokensWithin(p.model, p.s.budget)
	if bounded {
		p.s.metrics.bounded()
	}
	if err := p.req.PromptErr(); err != nil {
		p.s.log.Debug("request prompt is not the JSON expected; estimated at 0",
			zap.String("key", p.keyHash[:8]), zap.Error(err))
	}
}

// reservation is what the request holds until it settles: itself, the
// prompt estimate, plus in strict mode the completion budget (the
// request's own max, else the policy's) for each of the choices the
// upstream generates; and what they cost.
func (p *processor) reservation(maxOutput, choices int64) need {
	nd := need{prompt: p.estimate, request: true}
	if strict, _ := p.policy.Strict(); strict {
		if p.route.API.Provider() != llm.OpenAI {
			// Claude's and Gemini's tokenizers are not public: their
			// prompts are estimated with o200k_base, and strict mode
			// holds the margin on top.
			nd.prompt = p.policy.WithMargin(nd.prompt)
		}
		nd.completion, nd.capped = p.completionBudget(maxOutput, choices), true
	}
	if p.policy.HasCost() {
		nd.costIn, nd.costOut = cost.Reservation(p.priceFor(), nd.prompt, nd.completion)
	}
	return nd
}

func (p *processor) counterKeyFor(pol *policy.Policy) string {
	return pol.CounterKey(p.keyHash, p.model)
}

// reserve holds what the body phase found the request needs, when it
// needs anything: with one hold per request, what the headers held (a
// request that said it had no body, then sent one) is given back first.
func (p *processor) reserve(nd need) *extprocv3.ProcessingResponse {
	p.target()
	n := p.amounts(nd)
	if nothing(n) {
		return nil
	}
	if p.holds.ID != "" || len(p.holds.Amounts) > 0 {
		p.releaseHold()
	}
	return p.decide(n)
}

// admit checks (a need of nothing) or reserves what the request needs
// of every limit; it returns the 429 or 403 to send when a limit has no
// room.
func (p *processor) admit(nd need) *extprocv3.ProcessingResponse {
	p.target()
	return p.decide(p.amounts(nd))
}

// target sets the counter key and the budget the request draws on, for
// the policy and key it has now.
func (p *processor) target() {
	p.counter = p.counterKey()
	p.budget = p.policy.BudgetFor(p.keyHash, p.tier)
}

// decide asks the store for n of each limit of the request's budget.
func (p *processor) decide(n []int64) *extprocv3.ProcessingResponse {
	now := p.s.clock.Now()
	// The hold made here is in room.amounts: reserve released the one
	// before it.
	p.room.answer = limiter.Decisions{Limits: p.room.reserve[:0], Hold: limiter.Holds{Amounts: p.room.amounts[:0]}}
	err := limiter.ReserveManyInto(p.ctx, p.s.store, p.counter, p.budget, n, now, &p.room.answer)
	d := p.room.answer
	if err != nil && p.ctx.Err() != nil {
		// Envoy gave up on the stream (its message timeout, a reset)
		// while the store was deciding: nobody reads a refusal now, and
		// with failure_mode_allow the request even goes on. The request
		// stays admitted, with nothing held, so that finish settles it
		// like any request that ended unanswered.
		p.admitted()
		return nil
	}
	if err != nil {
		// Stores apply their own on_error policy; an error that reaches
		// here is fail_closed's: the request is refused, not let through
		// unlimited.
		if !errors.Is(err, limiter.ErrUnavailable) { // the store counted its own failure
			p.s.storeError("reserve", err)
		}
		p.s.log.Warn("limiter store unavailable; refusing", zap.String("key", p.keyHash[:8]), zap.Error(err))
		p.release()
		return p.unavailable()
	}
	if !d.Allowed && p.policy.Shadow() {
		// Shadow mode: say what would have happened, then let it through
		// without a reservation; it is charged when it settles.
		p.shadow = p.decisionFor(d)
		p.s.metrics.request(p.policy.Name(), decisionWouldReject)
		p.logDecision(decisionWouldReject, zap.String("would", p.shadow), zap.String("limit", p.budget[d.Refused].Name),
			zap.Duration("retry_after", d.RetryAfter()))
		p.admitted()
		return nil
	}
	if !d.Allowed {
		// The request never reaches the upstream: what it held so far is
		// released and nothing is charged.
		p.release()
		return p.reject(d)
	}
	p.admitted()
	if d.Hold.ID != "" || len(d.Hold.Amounts) > 0 {
		p.holds = d.Hold
	}
	p.reserved, p.reservedAt = d, now
	return nil
}

// roomLimits is how many limits a processor has room for in the store's
// answers: the four of a policy of requests, input and output tokens, and
// cost; more are answered into what the store allocates.
const roomLimits = 4

// admitted moves an open request to admitted; one that is further on
// (its body read) stays where it is.
func (p *processor) admitted() {
	if p.stage < stageAdmitted {
		p.stage = stageAdmitted
	}
}

// release ends a refused request: its reservation is given back without
// charging anything.
func (p *processor) release() {
	p.releaseHold()
	p.stage = stageDone
}

// releaseHold gives back what the request holds under its current
// counter, before it reserves under another.
func (p *processor) releaseHold() {
	if p.stage.holding() {
		// Its own zeros: the amounts buffer may hold what is about to be
		// reserved (reserve).
		_, _ = p.s.store.SettleMany(p.ctx, p.counter, p.budget, p.holds, make([]int64, len(p.budget)), p.s.clock.Now())
	}
	p.holds = limiter.Holds{}
}

// collect gathers a body that arrives in several messages (Envoy sends one
// when buffering, but a streamed body is chunked) and returns it once
// complete (at end_of_stream, or at once when whole); nil until then. A
// body that arrives in one message is not copied.
func (p *processor) collect(b *extprocv3.HttpBody, whole bool) []byte {
	if !b.GetEndOfStream() && !whole {
		p.body = append(p.body, b.GetBody()...)
		return nil
	}
	body := b.GetBody()
	if p.body != nil {
		body = append(p.body, body...)
		p.body = nil
	}
	if body == nil {
		body = []byte{}
	}
	return body
}

// takeBody hands over the body collected so far, for a phase that ends it
// without an end_of_stream (trailers).
func (p *processor) takeBody() []byte {
	body := p.body
	p.body = nil
	return body
}

// saturatingMul is a*b for non-negative a and b, capped at MaxInt64: a
// max_tokens of 2^62 times n must not wrap into a small reservation.
func saturatingMul(a, b int64) int64 {
	if a > 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}
