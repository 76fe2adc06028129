package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tokengate/tokengate/limiter"
)

// Policy is one budget rule as the file states it; the first policy that
// matches a request wins. It holds only what YAML decodes into (with
// defaults filled and names lower-cased): the hot path reads the compiled
// form, extproc/policy.Policy, which only policy.Compile makes.
type Policy struct {
	Name            string     `yaml:"name"`
	Match           Match      `yaml:"match"`
	CounterKey      CounterKey `yaml:"counter_key"`
	TokensPerMinute int64      `yaml:"tokens_per_minute"`
	// TokenQuota is a budget per calendar period (TokenQuotaPeriod), beside
	// or instead of the window, as APIM's token-quota.
	TokenQuota       int64  `yaml:"token_quota"`
	TokenQuotaPeriod string `yaml:"token_quota_period"`
	// Limits are budgets besides the shorthands above: tokens, requests
	// or cost, total, input or output, over any window or period.
	Limits               []Limit `yaml:"limits"`
	EstimatePromptTokens bool    `yaml:"estimate_prompt_tokens"`
	// Count says which tokens are charged: total, prompt or completion.
	Count string `yaml:"count"`
	// ReserveCompletion turns on strict mode: none, max_tokens, or a
	// number of tokens (see Reserve).
	ReserveCompletion string `yaml:"reserve_completion"`
	// Shadow decides and reports but never refuses.
	Shadow    bool       `yaml:"shadow"`
	Overrides []Override `yaml:"overrides"`
	// Tiers choose the policy's budgets by a value of the caller's
	// identity (a claim Envoy verified, or a header the mesh sets), beside
	// the per-key overrides, which win over them.
	Tiers *Tiers `yaml:"tiers"`
	// InjectStreamUsage asks streamed requests for a final usage chunk
	// (stream_options.include_usage) when they don't ask themselves, so
	// streams are charged what the upstream reports. Default on.
	InjectStreamUsage *bool   `yaml:"inject_stream_usage"`
	Headers           Headers `yaml:"headers"`
	// ChargeUnanswered is what a request costs whose stream ends after
	// its body with no response at all: a client that walked away, an
	// Envoy reset, or (Envoy 1.34–1.36) a local reply tokengate never sees.
	// prompt (the default: the upstream may have read it) or none.
	ChargeUnanswered string `yaml:"charge_unanswered"`
	// UnreadableBody is what happens to a request whose body tokengate
	// cannot read (an unknown content-encoding, not the JSON of its API)
	// when the policy needs the body: refuse (400), charge_bytes (the
	// body's length stands for its prompt) or pass. Empty: refuse in
	// strict mode, charge_bytes otherwise.
	UnreadableBody string `yaml:"unreadable_body"`
	// EstimateMargin is what strict mode adds to the prompt estimate of
	// an API whose models have no public tokenizer (Anthropic, Gemini,
	// Bedrock), as a fraction of it: the estimate is o200k_base's count.
	// Unset: DefaultEstimateMargin.
	EstimateMargin *float64 `yaml:"estimate_margin"`
}

// DefaultEstimateMargin is estimate_margin's default. Two real vocabularies
// (cl100k_base against o200k_base) disagree by 45 % on the committed
// multilingual prompt set (extproc/llm TestEstimateDivergenceOnMultilingualPrompts:
// 0 % in English and code, up to +196 % in Hindi), so half again covers
// the set's mean; a mesh whose traffic is mostly Arabic or Hindi raises it
// (README, "APIs and usage").
const DefaultEstimateMargin = 0.5

// Override gives one key its own budgets (a tier). The key is named by the
// SHA-256 of its value, in hex, so the config holds no secret.
type Override struct {
	KeySHA256       string `yaml:"key_sha256"`
	TokensPerMinute int64  `yaml:"tokens_per_minute"`
	TokenQuota      int64  `yaml:"token_quota"`
	// Limits give the policy's limits, by name, other budgets.
	Limits map[string]Decimal `yaml:"limits"`
}

// What happens to a body tokengate cannot read (unreadable_body).
const (
	UnreadableRefuse      = "refuse"
	UnreadableChargeBytes = "charge_bytes"
	UnreadablePass        = "pass"
)

// What an unanswered request is charged (charge_unanswered).
const (
	ChargePrompt = "prompt"
	ChargeNone   = "none"
)

// Count modes.
const (
	CountTotal      = "total"
	CountPrompt     = "prompt"
	CountCompletion = "completion"
)

// Match selects the requests a policy applies to.
type Match struct {
	PathPrefix string `yaml:"path_prefix"`
	// Models, when set, restricts the policy to these models: the body's
	// model, or the deployment name of an Azure path.
	Models []string `yaml:"models"`
}

// Missing-key behaviours.
const (
	MissingReject    = "reject"
	MissingAnonymous = "anonymous"
)

// CounterKey says where the subscription key comes from. The sources
// given (header, metadata, attribute) are all part of the key, in that
// order, and must all be present: "tenant from the JWT, per client
// address" is metadata plus attribute. None given: the default headers.
type CounterKey struct {
	// Header lists the headers that may carry the key, first present
	// wins; empty (with no other source) means DefaultKeyHeaders.
	Header []string `yaml:"header"`
	// Metadata is a value Envoy forwards from its dynamic metadata
	// (metadata_options.forwarding_namespaces): jwt_authn's claims,
	// what an ext_authz server set.
	Metadata *MetadataValue `yaml:"metadata"`
	// Attribute is a request attribute Envoy sends (request_attributes):
	// source.address keys by client address (its port left out), as the
	// connection manager computes it (use_remote_address,
	// xff_num_trusted_hops).
	Attribute string `yaml:"attribute"`
	Missing   string `yaml:"missing"`
	// PerModel gives each model its own budget under the key.
	PerModel bool `yaml:"per_model"`
	// PerRoute gives each request path its own budget under the key.
	PerRoute bool `yaml:"per_route"`
}

// MetadataValue names a value in Envoy's dynamic metadata: the namespace
// (a filter's, such as envoy.filters.http.jwt_authn) and the path of
// fields inside it (jwt_payload, sub).
type MetadataValue struct {
	Namespace string   `yaml:"namespace"`
	Path      []string `yaml:"path"`
}

// Tiers choose a policy's budgets by a value of the caller's identity.
type Tiers struct {
	// Metadata or Header says where the tier's name is: a value Envoy
	// verified, or a header the mesh sets and strips from clients (a
	// header a client can set picks its own tier).
	Metadata *MetadataValue `yaml:"metadata"`
	Header   string         `yaml:"header"`
	// Levels are the budgets by tier name; a request with no tier, or one
	// not listed, gets the policy's own.
	Levels map[string]TierBudgets `yaml:"levels"`
}

// TierBudgets are a tier's budgets; zero keeps the policy's.
type TierBudgets struct {
	TokensPerMinute int64 `yaml:"tokens_per_minute"`
	TokenQuota      int64 `yaml:"token_quota"`
	// Limits give the policy's limits, by name, other budgets.
	Limits map[string]Decimal `yaml:"limits"`
}

// Attributes tokengate can key by.
var keyAttributes = []string{"source.address", "request.path", "request.host", "connection.requested_server_name"}

// DefaultKeyHeaders are the counter key headers of a policy that names
// none: APIM's and Azure OpenAI's, first present wins. Being several, they
// draw a warning (see Warnings).
var DefaultKeyHeaders = []string{"api-key", "ocp-apim-subscription-key", "authorization"}

// KeyHeaders returns the headers the key is read from, in order: the
// default list when the policy names no source at all.
func (p *Policy) KeyHeaders() []string {
	if len(p.CounterKey.Header) == 0 && !p.CounterKey.HasIdentity() {
		return DefaultKeyHeaders
	}
	return p.CounterKey.Header
}

// HasIdentity reports a key read (also) from what Envoy verified or
// observed: metadata or a request attribute.
func (k *CounterKey) HasIdentity() bool { return k.Metadata != nil || k.Attribute != "" }

// Headers are the policy's custom response header names, sent in addition
// to the standard ones (APIM's retry-after-header-name and friends). Empty
// means not sent.
type Headers struct {
	RetryAfter           string `yaml:"retry_after"`
	RemainingTokens      string `yaml:"remaining_tokens"`
	RemainingQuotaTokens string `yaml:"remaining_quota_tokens"`
	TokensConsumed       string `yaml:"tokens_consumed"`
}

// DefaultCompletionBudget is what strict mode reserves for a request that
// names no max_tokens when the policy says only "max_tokens".
const DefaultCompletionBudget = 4096

// Checked returns the policy with its defaults filled, or every problem
// with it, each naming its field. It is how a policy that did not come
// from Parse (one built in code) gets the same checks as the file's; the
// name has no default here and is required.
func (p Policy) Checked() (Policy, error) {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, a...)...))
	}
	p.CounterKey.Header = append([]string(nil), p.CounterKey.Header...)
	p.Overrides = append([]Override(nil), p.Overrides...)
	p.Limits = append([]Limit(nil), p.Limits...)
	p.fillDefaults()
	f := fmt.Sprintf("policy %q", p.Name)
	if p.Name == "" {
		bad("policy.name", "is required")
	}
	p.check(f, bad)
	return p, errors.Join(errs...)
}

// fillDefaults fills what the file may leave out, but the name, whose
// default depends on the policy's place in the file.
func (p *Policy) fillDefaults() {
	p.Match.PathPrefix = cmp.Or(p.Match.PathPrefix, "/")
	for j, h := range p.CounterKey.Header {
		p.CounterKey.Header[j] = strings.ToLower(h)
	}
	p.CounterKey.Missing = cmp.Or(p.CounterKey.Missing, MissingReject)
	p.Count = cmp.Or(p.Count, CountTotal)
	p.ChargeUnanswered = cmp.Or(p.ChargeUnanswered, ChargePrompt)
	p.ReserveCompletion = cmp.Or(p.ReserveCompletion, "none")
	for j := range p.Limits {
		p.Limits[j].fillDefaults()
	}
	for j := range p.Overrides {
		p.Overrides[j].KeySHA256 = strings.ToLower(p.Overrides[j].KeySHA256)
	}
	h := &p.Headers
	for _, s := range []*string{&h.RetryAfter, &h.RemainingTokens, &h.RemainingQuotaTokens, &h.TokensConsumed} {
		*s = strings.ToLower(*s)
	}
	if p.Tiers != nil {
		t := *p.Tiers // a copy: Checked must not change its caller's
		t.Header = strings.ToLower(t.Header)
		p.Tiers = &t
	}
}

// check reports every problem of a defaulted policy under field prefix f.
func (p *Policy) check(f string, bad func(field, format string, a ...any)) {
	if strings.Contains(p.Name, ":") {
		// Counter keys are policy:hash[:model]: a policy a:b would
		// share the prefix of policy a in the store and the admin API.
		bad(f+".name", "must not contain ':', got %q", p.Name)
	}
	if !strings.HasPrefix(p.Match.PathPrefix, "/") {
		bad(f+".match.path_prefix", "must start with /, got %q", p.Match.PathPrefix)
	}
	p.checkBudgets(f, bad)
	if p.CounterKey.Missing != MissingReject && p.CounterKey.Missing != MissingAnonymous {
		bad(f+".counter_key.missing", "must be reject or anonymous, got %q", p.CounterKey.Missing)
	}
	for j, h := range p.CounterKey.Header {
		if h == "" || strings.HasPrefix(h, ":") {
			bad(fmt.Sprintf("%s.counter_key.header[%d]", f, j), "must be a header name, got %q", h)
		}
	}
	checkMetadata(f+".counter_key.metadata", p.CounterKey.Metadata, bad)
	if a := p.CounterKey.Attribute; a != "" && !slices.Contains(keyAttributes, a) {
		bad(f+".counter_key.attribute", "must be one of %s, got %q", strings.Join(keyAttributes, ", "), a)
	}
	p.checkTiers(f+".tiers", bad)
}

func checkMetadata(f string, m *MetadataValue, bad func(field, format string, a ...any)) {
	if m == nil {
		return
	}
	if m.Namespace == "" {
		bad(f+".namespace", "is required (a filter's namespace, such as envoy.filters.http.jwt_authn)")
	}
	if len(m.Path) == 0 {
		bad(f+".path", "is required (the fields down to the value, such as [jwt_payload, sub])")
	}
	for j, s := range m.Path {
		if s == "" {
			bad(fmt.Sprintf("%s.path[%d]", f, j), "must be a field name")
		}
	}
}

func (p *Policy) checkTiers(f string, bad func(field, format string, a ...any)) {
	t := p.Tiers
	if t == nil {
		return
	}
	switch {
	case (t.Metadata == nil) == (t.Header == ""):
		bad(f, "needs exactly one of metadata and header: where the tier's name is")
	case t.Header != "" && (strings.HasPrefix(t.Header, ":") || t.Header != strings.ToLower(t.Header)):
		bad(f+".header", "must be a lower-case header name, got %q", t.Header)
	}
	checkMetadata(f+".metadata", t.Metadata, bad)
	if len(t.Levels) == 0 {
		bad(f+".levels", "at least one tier is required")
	}
	for name, l := range t.Levels {
		lf := fmt.Sprintf("%s.levels[%q]", f, name)
		if l.TokensPerMinute < 0 || l.TokenQuota < 0 {
			bad(lf, "budgets must be positive")
		}
		if l.TokenQuota > 0 && p.TokenQuota == 0 {
			bad(lf+".token_quota", "the policy has no token_quota for it to change")
		}
		if l.TokensPerMinute > 0 && p.TokensPerMinute == 0 {
			bad(lf+".tokens_per_minute", "the policy has no tokens_per_minute for it to change")
		}
		p.checkLimitMaxes(lf, l.Limits, bad)
	}
}

// checkBudgets checks the limits, strict mode and tiers.
func (p *Policy) checkBudgets(f string, bad func(field, format string, a ...any)) {
	switch {
	case p.TokensPerMinute < 0:
		bad(f+".tokens_per_minute", "must be a positive number of tokens, got %d", p.TokensPerMinute)
	case p.TokenQuota < 0:
		bad(f+".token_quota", "must be a positive number of tokens, got %d", p.TokenQuota)
	case p.TokensPerMinute == 0 && p.TokenQuota == 0 && len(p.Limits) == 0:
		bad(f+".tokens_per_minute", "a policy needs tokens_per_minute, token_quota or limits")
	}
	p.checkLimits(f, bad)
	if _, err := p.Period(); err != nil {
		bad(f+".token_quota_period", "%v", err)
	}
	if p.TokenQuotaPeriod != "" && p.TokenQuota == 0 {
		bad(f+".token_quota", "token_quota_period is set but token_quota is not")
	}
	switch p.Count {
	case CountTotal, CountPrompt, CountCompletion:
	default:
		bad(f+".count", "must be total, prompt or completion, got %q", p.Count)
	}
	switch p.UnreadableBody {
	case "", UnreadableRefuse, UnreadableChargeBytes, UnreadablePass:
	default:
		bad(f+".unreadable_body", "must be refuse, charge_bytes or pass, got %q", p.UnreadableBody)
	}
	if p.ChargeUnanswered != ChargePrompt && p.ChargeUnanswered != ChargeNone {
		bad(f+".charge_unanswered", "must be prompt or none, got %q", p.ChargeUnanswered)
	}
	if m := p.EstimateMargin; m != nil && (*m < 0 || *m > 10) {
		bad(f+".estimate_margin", "must be between 0 and 10 (a fraction of the estimate), got %v", *m)
	}
	if _, _, err := p.Reserve(); err != nil {
		bad(f+".reserve_completion", "%v", err)
	}
	seen := make(map[string]bool, len(p.Overrides))
	for j, o := range p.Overrides {
		of := fmt.Sprintf("%s.overrides[%d]", f, j)
		if len(o.KeySHA256) != 64 || strings.Trim(o.KeySHA256, "0123456789abcdef") != "" {
			// Not quoted back: what was pasted here may be the raw key.
			bad(of+".key_sha256", "must be 64 lowercase hex digits (the SHA-256 of the key), got %d characters that are not", len(o.KeySHA256))
		}
		if seen[o.KeySHA256] {
			bad(of+".key_sha256", "the key has an earlier override")
		}
		seen[o.KeySHA256] = true
		if o.TokensPerMinute < 0 || o.TokenQuota < 0 {
			bad(of, "budgets must be positive")
		}
		if o.TokenQuota > 0 && p.TokenQuota == 0 {
			bad(of+".token_quota", "the policy has no token_quota for it to override")
		}
		if o.TokensPerMinute > 0 && p.TokensPerMinute == 0 && p.TokenQuota == 0 {
			bad(of+".tokens_per_minute", "the policy has neither tokens_per_minute nor token_quota for it to override")
		}
		p.checkLimitMaxes(of, o.Limits, bad)
	}
}

// Period parses token_quota_period; a policy without a quota has none.
func (p *Policy) Period() (limiter.Period, error) {
	if p.TokenQuota <= 0 && p.TokenQuotaPeriod == "" {
		return 0, nil
	}
	return limiter.ParsePeriod(p.TokenQuotaPeriod)
}

// Reserve parses reserve_completion: whether the policy reserves
// completions (strict mode), and the budget for a request that names none.
func (p *Policy) Reserve() (strict bool, budget int64, err error) {
	switch p.ReserveCompletion {
	case "", "none":
		return false, 0, nil
	case "max_tokens":
		return true, DefaultCompletionBudget, nil
	}
	n, err := strconv.ParseInt(p.ReserveCompletion, 10, 64)
	if err != nil || n <= 0 {
		return false, 0, fmt.Errorf("must be none, max_tokens or a positive number of tokens, got %q", p.ReserveCompletion)
	}
	return true, n, nil
}
