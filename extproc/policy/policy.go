// Package policy is a budget rule compiled for the hot path: made once by
// Compile from the configuration's schema, never changed afterwards, and
// the owner of the counter-key format.
//
// Every field is unexported, so a Policy cannot be built by hand: the
// limits it enforces are the ones Compile derived from a checked schema,
// never a half-filled literal whose quota silently does nothing.
package policy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tokengate/tokengate/extproc/cost"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// Policy is a compiled policy; its methods are safe for concurrent use.
type Policy struct {
	name           string
	pathPrefix     string
	models         []string
	keyHeaders     []string
	defaultKeys    bool // counter_key names no source at all
	keyMetadata    *config.MetadataValue
	keyAttribute   string
	perRoute       bool
	tierMetadata   *config.MetadataValue
	tierHeader     string
	tiers          map[string]limiter.Budget // by tier name: the policy's limits with the tier's budgets
	rejectMissing  bool
	perModel       bool
	budget         limiter.Budget
	meters         []Meter                   // what each limit of budget counts, in its order
	overrides      map[string]limiter.Budget // by key hash, the policy's limits with the override applied
	prices         cost.Table
	hasCost        bool
	estimatePrompt bool
	count          string
	strict         bool
	reserve        int64
	shadow         bool
	injectUsage    bool
	headers        config.Headers
	chargePrompt   bool // charge_unanswered: prompt
	unreadable     string
	marginPermille int64 // estimate_margin, in thousandths
}

// Meter says what one limit of a policy's Budget counts.
type Meter struct {
	// Unit is config.UnitTokens, UnitRequests or UnitCost.
	Unit string
	// Kind is config.KindTotal, KindInput or KindOutput; "" for requests.
	Kind string
	// Shorthand marks tokens_per_minute and token_quota, whose refusals
	// keep APIM's words.
	Shorthand bool
}

// Compile checks spec (with config.Policy.Checked, so a policy built in
// code meets the file's rules) and derives what requests need from it;
// prices price its cost limits.
func Compile(spec config.Policy, prices config.Prices) (*Policy, error) {
	spec, err := spec.Checked()
	if err != nil {
		return nil, err
	}
	if spec.HasCost() && prices.Empty() {
		return nil, fmt.Errorf("policy %q: a cost limit needs prices", spec.Name)
	}
	period, _ := spec.Period()           // checked
	strict, reserve, _ := spec.Reserve() // checked
	p := &Policy{
		name:           spec.Name,
		pathPrefix:     spec.Match.PathPrefix,
		models:         append([]string(nil), spec.Match.Models...),
		keyHeaders:     append([]string(nil), spec.KeyHeaders()...),
		defaultKeys:    len(spec.CounterKey.Header) == 0 && !spec.CounterKey.HasIdentity(),
		keyMetadata:    cloneMetadata(spec.CounterKey.Metadata),
		keyAttribute:   spec.CounterKey.Attribute,
		perRoute:       spec.CounterKey.PerRoute,
		rejectMissing:  spec.CounterKey.Missing == config.MissingReject,
		perModel:       spec.CounterKey.PerModel,
		estimatePrompt: spec.EstimatePromptTokens,
		count:          spec.Count,
		strict:         strict,
		reserve:        reserve,
		shadow:         spec.Shadow,
		injectUsage:    spec.InjectStreamUsage == nil || *spec.InjectStreamUsage,
		headers:        spec.Headers,
		chargePrompt:   spec.ChargeUnanswered == config.ChargePrompt,
		unreadable:     spec.UnreadableBody,
	}
	margin := config.DefaultEstimateMargin
	if spec.EstimateMargin != nil {
		margin = *spec.EstimateMargin
	}
	p.marginPermille = int64(math.Round(margin * 1000))
	if p.unreadable == "" {
		// A strict policy refuses what it cannot bound; any other charges
		// the body's bytes.
		p.unreadable = config.UnreadableChargeBytes
		if strict {
			p.unreadable = config.UnreadableRefuse
		}
	}
	base := limiter.Limits{TokensPerMinute: spec.TokensPerMinute, Quota: spec.TokenQuota, Period: period}
	p.budget, p.meters = compileBudget(&spec, base)
	p.overrides = make(map[string]limiter.Budget, len(spec.Overrides))
	for _, o := range spec.Overrides {
		p.overrides[o.KeySHA256] = withBudgets(p.budget, base, o.TokensPerMinute, o.TokenQuota, o.Limits, &spec)
	}
	if t := spec.Tiers; t != nil {
		p.tierMetadata, p.tierHeader = cloneMetadata(t.Metadata), t.Header
		p.tiers = make(map[string]limiter.Budget, len(t.Levels))
		for name, l := range t.Levels {
			p.tiers[name] = withBudgets(p.budget, base, l.TokensPerMinute, l.TokenQuota, l.Limits, &spec)
		}
	}
	if p.hasCost = spec.HasCost(); p.hasCost {
		p.prices = compilePrices(prices)
	}
	return p, nil
}

// compileBudget is the policy's Budget and what each of its limits
// counts: the shorthands first, as Limits.Budget makes them (so a policy
// that only has them keeps its keys' counts), then its limits in order.
// The shorthands count what count says.
func compileBudget(spec *config.Policy, base limiter.Limits) (limiter.Budget, []Meter) {
	var b limiter.Budget
	var meters []Meter
	if base.TokensPerMinute > 0 || base.Quota > 0 {
		b = base.Budget()
		kind := map[string]string{config.CountTotal: config.KindTotal, config.CountPrompt: config.KindInput,
			config.CountCompletion: config.KindOutput}[spec.Count]
		for range b {
			meters = append(meters, Meter{Unit: config.UnitTokens, Kind: kind, Shorthand: true})
		}
	}
	for _, l := range spec.Limits {
		n, _ := l.Amount()    // checked
		w, per, _ := l.Span() // checked
		b = append(b, limiter.Limit{Name: l.Name, Max: n, Window: w, Period: per})
		meters = append(meters, Meter{Unit: l.Unit, Kind: l.Kind})
	}
	return b, meters
}

func compilePrices(prices config.Prices) cost.Table {
	price := func(p config.Price) cost.Price {
		in, cached, write, out, reasoning, _ := p.Micros() // checked by config
		return cost.Price{Input: in, CachedInput: cached, CacheWrite: write, Output: out, Reasoning: reasoning}
	}
	byModel := make(map[string]cost.Price, len(prices.Models))
	for m, p := range prices.Models {
		byModel[m] = price(p)
	}
	var fallback *cost.Price
	if prices.Default != nil {
		f := price(*prices.Default)
		fallback = &f
	}
	return cost.NewTable(byModel, fallback)
}

// CompileAll compiles the policies of a configuration, in order; the
// errors name the policy by its place in the list.
func CompileAll(specs []config.Policy, prices config.Prices) ([]*Policy, error) {
	out := make([]*Policy, 0, len(specs))
	var errs []error
	names := map[string]bool{}
	for i, spec := range specs {
		p, err := Compile(spec, prices)
		if err != nil {
			errs = append(errs, fmt.Errorf("policies[%d]: %w", i, err))
			continue
		}
		if names[p.name] {
			errs = append(errs, fmt.Errorf("policies[%d].name: %q is used by an earlier policy", i, p.name))
		}
		names[p.name] = true
		out = append(out, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// MustCompileAll is CompileAll for configurations config.Parse accepted,
// which compile by construction.
func MustCompileAll(specs []config.Policy, prices config.Prices) []*Policy {
	ps, err := CompileAll(specs, prices)
	if err != nil {
		panic("policy: a parsed configuration does not compile: " + err.Error())
	}
	return ps
}

// Name is the policy's name, the first part of its counter keys.
func (p *Policy) Name() string { return p.name }

// MatchesPath reports whether the policy applies to requests on path.
func (p *Policy) MatchesPath(path string) bool { return strings.HasPrefix(path, p.pathPrefix) }

// HasModels reports whether the policy is restricted to some models.
func (p *Policy) HasModels() bool { return len(p.models) > 0 }

// MatchesModel reports whether the policy applies to model (any model
// when it lists none); names compare without regard to case.
func (p *Policy) MatchesModel(model string) bool {
	if len(p.models) == 0 {
		return true
	}
	for _, m := range p.models {
		if strings.EqualFold(m, model) {
			return true
		}
	}
	return false
}

// KeyHeaders are the headers the subscription key is read from, first
// present wins. The slice is shared: do not change it.
func (p *Policy) KeyHeaders() []string { return p.keyHeaders }

// DefaultKeys reports a policy that names no key source: each API's
// callers are then keyed where they send their key.
func (p *Policy) DefaultKeys() bool { return p.defaultKeys }

// RejectsMissingKey reports counter_key.missing: reject.
func (p *Policy) RejectsMissingKey() bool { return p.rejectMissing }

// PerModel reports whether each model has its own budget under a key.
func (p *Policy) PerModel() bool { return p.perModel }

// EstimatesPrompt reports estimate_prompt_tokens.
func (p *Policy) EstimatesPrompt() bool { return p.estimatePrompt }

// Count is which tokens are charged: config.CountTotal, CountPrompt or
// CountCompletion.
func (p *Policy) Count() string { return p.count }

// Strict reports whether the policy reserves completions (strict mode),
// and the budget for a request that names none.
func (p *Policy) Strict() (bool, int64) { return p.strict, p.reserve }

// Shadow reports a policy that decides and reports but never refuses.
func (p *Policy) Shadow() bool { return p.shadow }

// InjectsStreamUsage reports the effective inject_stream_usage.
func (p *Policy) InjectsStreamUsage() bool { return p.injectUsage }

// Headers are the policy's custom response header names.
func (p *Policy) Headers() config.Headers { return p.headers }

// ChargesUnanswered reports charge_unanswered: prompt.
func (p *Policy) ChargesUnanswered() bool { return p.chargePrompt }

// UnreadableAction is the effective unreadable_body.
func (p *Policy) UnreadableAction() string { return p.unreadable }

// WithMargin is a prompt estimate with the policy's estimate_margin on
// top, rounded up, for APIs without a public tokenizer.
func (p *Policy) WithMargin(estimate int64) int64 {
	if estimate <= 0 || estimate > math.MaxInt64/2000 {
		return estimate
	}
	return (estimate*(1000+p.marginPermille) + 999) / 1000
}

// BudgetFor returns the limits of a key, by its hash, in a tier (""
// for none): the key's override when it has one, else the tier's budgets
// when the policy lists the tier, else the policy's. Every one has the
// same limits in the same order, Meters' order: only their Max differ.
// The slice is shared: do not change it.
func (p *Policy) BudgetFor(keyHash, tier string) limiter.Budget {
	if b, ok := p.overrides[keyHash]; ok {
		return b
	}
	if b, ok := p.tiers[tier]; ok && tier != "" {
		return b
	}
	return p.budget
}

// Meters say what each limit of the policy's budgets counts. The slice
// is shared: do not change it.
func (p *Policy) Meters() []Meter { return p.meters }

// HasCost reports a policy with a cost limit.
func (p *Policy) HasCost() bool { return p.hasCost }

// Price is a model's price for the policy's cost limits; false when the
// price list has none for it (nor a default).
func (p *Policy) Price(model string) (cost.Price, bool) { return p.prices.For(model) }

// withBudgets is b with the non-zero shorthand budgets and the named
// limits' maxes replacing its own.
func withBudgets(b limiter.Budget, base limiter.Limits, tokensPerMinute, quota int64, maxes map[string]config.Decimal, spec *config.Policy) limiter.Budget {
	out := slices.Clone(b)
	for i := range out {
		l := &out[i]
		switch {
		case l.Name == limiter.WindowLimitName && tokensPerMinute > 0 && (base.TokensPerMinute > 0 || base.Quota > 0):
			l.Max = tokensPerMinute
		case l.Name == limiter.QuotaLimitName && quota > 0 && base.Quota > 0:
			l.Max = quota
		}
		if d, ok := maxes[l.Name]; ok {
			for _, sl := range spec.Limits {
				if sl.Name == l.Name {
					sl.Max = d
					l.Max, _ = sl.Amount() // checked
				}
			}
		}
	}
	return out
}

// KeyMetadata is the dynamic metadata value the key includes, nil when
// none.
func (p *Policy) KeyMetadata() *config.MetadataValue { return p.keyMetadata }

// KeyAttribute is the request attribute the key includes, "" when none.
func (p *Policy) KeyAttribute() string { return p.keyAttribute }

// PerRoute reports a key that includes the request path.
func (p *Policy) PerRoute() bool { return p.perRoute }

// TierSource says where the tier's name is: a metadata value or a
// header; both empty when the policy has no tiers.
func (p *Policy) TierSource() (*config.MetadataValue, string) { return p.tierMetadata, p.tierHeader }

func cloneMetadata(m *config.MetadataValue) *config.MetadataValue {
	if m == nil {
		return nil
	}
	return &config.MetadataValue{Namespace: m.Namespace, Path: append([]string(nil), m.Path...)}
}
