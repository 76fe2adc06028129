package config

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Limit is one budget of a policy besides the shorthands
// (tokens_per_minute, token_quota): Max units of a kind in a sliding
// Window or a calendar Period. A request is admitted only when every limit
// of its policy admits it.
type Limit struct {
	// Name identifies the limit in headers, refusals, metrics and the
	// admin API, and keeps its count across reloads; empty: derived from
	// the rest (requests_per_1m, input_tokens_per_1m, cost_daily).
	Name string `yaml:"name"`
	// Unit is tokens (the default), requests or cost.
	Unit string `yaml:"unit"`
	// Kind is which tokens count, for tokens and cost: total (the
	// default), input (the prompt, cached or not) or output (the
	// completion, reasoning included).
	Kind string `yaml:"kind"`
	// Max is the budget: a whole number of tokens or requests, or an
	// amount of money in the prices' currency with at most six decimals.
	Max Decimal `yaml:"max"`
	// Window is a sliding window's length, a Go duration of 1s to 24h;
	// Period a UTC calendar period (hourly … yearly). Exactly one is set.
	Window string `yaml:"window"`
	Period string `yaml:"period"`
}

// Units and kinds of a limit.
const (
	UnitTokens   = "tokens"
	UnitRequests = "requests"
	UnitCost     = "cost"

	KindTotal  = "total"
	KindInput  = "input"
	KindOutput = "output"
)

// Decimal is a number as the file writes it (2, 2.5, "0.000150"), kept as
// text so that money is read exactly, never through a float.
type Decimal string

// Whole reads d as a whole number.
func (d Decimal) Whole() (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(d)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number, got %q", string(d))
	}
	return n, nil
}

// Micros reads d as an amount with at most six decimals, in millionths:
// 2.5 is 2,500,000.
func (d Decimal) Micros() (int64, error) {
	s := strings.TrimSpace(string(d))
	bad := fmt.Errorf("must be a number with at most six decimals, got %q", string(d))
	neg := strings.HasPrefix(s, "-")
	whole, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	if whole == "" && frac == "" || len(frac) > 6 || !digits(whole) || !digits(frac) {
		return 0, bad
	}
	w, f := int64(0), int64(0)
	var err error
	if whole != "" {
		if w, err = strconv.ParseInt(whole, 10, 64); err != nil || w > math.MaxInt64/1_000_000 {
			return 0, bad
		}
	}
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64) // six digits at most
	}
	if w*1_000_000 > math.MaxInt64-f {
		return 0, bad
	}
	n := w*1_000_000 + f
	if neg {
		n = -n
	}
	return n, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Amount reads Max in the limit's unit: micro-units for cost.
func (l *Limit) Amount() (int64, error) { return amountIn(l.Unit, l.Max) }

func amountIn(unit string, d Decimal) (int64, error) {
	if unit == UnitCost {
		return d.Micros()
	}
	return d.Whole()
}

// Span reads the limit's window or period: one of them is set.
func (l *Limit) Span() (time.Duration, limiter.Period, error) {
	switch {
	case (l.Window == "") == (l.Period == ""):
		return 0, 0, fmt.Errorf("needs exactly one of window (sliding, 1s to 24h) and period (hourly, daily, weekly, monthly or yearly)")
	case l.Period != "":
		p, err := limiter.ParsePeriod(l.Period)
		return 0, p, err
	}
	w, err := time.ParseDuration(l.Window)
	if err != nil || w < limiter.MinWindow || w > limiter.MaxWindow || w%time.Millisecond != 0 {
		return 0, 0, fmt.Errorf("window must be a duration of %v to %v in whole milliseconds, got %q", limiter.MinWindow, limiter.MaxWindow, l.Window)
	}
	return w, limiter.NoPeriod, nil
}

// fillDefaults fills the unit, the kind and the name.
func (l *Limit) fillDefaults() {
	l.Unit = cmp.Or(strings.ToLower(l.Unit), UnitTokens)
	if l.Unit != UnitRequests {
		l.Kind = cmp.Or(strings.ToLower(l.Kind), KindTotal)
	}
	if l.Name == "" {
		l.Name = l.defaultName()
	}
}

// defaultName names a limit by what it counts and over what:
// requests_per_1m, input_tokens_per_1m, cost_daily.
func (l *Limit) defaultName() string {
	name := l.Unit
	if l.Kind != "" && l.Kind != KindTotal {
		name = l.Kind + "_" + name
	}
	if l.Period != "" {
		return name + "_" + l.Period
	}
	w, err := time.ParseDuration(l.Window)
	if err != nil {
		return name
	}
	return name + "_per_" + ShortDuration(w)
}

// FormatMicros writes an amount in micro-units as the currency's units
// with six decimals: 2500000 is 2.500000.
func FormatMicros(n int64) string {
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	return fmt.Sprintf("%s%d.%06d", sign, n/1_000_000, n%1_000_000)
}

// ShortDuration writes a window as its largest whole unit: 1m, 90s, 24h,
// 1500ms.
func ShortDuration(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

// checkLimits checks the policy's limits under field prefix f.
func (p *Policy) checkLimits(f string, bad func(field, format string, a ...any)) {
	if len(p.Limits)+2 > limiter.MaxLimits {
		bad(f+".limits", "at most %d limits, got %d", limiter.MaxLimits-2, len(p.Limits))
	}
	names := map[string]bool{limiter.WindowLimitName: p.TokensPerMinute > 0 || p.TokenQuota > 0,
		limiter.QuotaLimitName: p.TokenQuota > 0}
	for j := range p.Limits {
		l := &p.Limits[j]
		lf := fmt.Sprintf("%s.limits[%d]", f, j)
		if names[l.Name] {
			bad(lf+".name", "%q is used by another limit of the policy (tokens_per_minute and token_quota take their own names)", l.Name)
		}
		names[l.Name] = true
		if err := (limiter.Budget{{Name: l.Name, Window: time.Second}}).Validate(); err != nil {
			bad(lf+".name", "%v", err)
		}
		switch l.Unit {
		case UnitTokens, UnitCost:
			if l.Kind != KindTotal && l.Kind != KindInput && l.Kind != KindOutput {
				bad(lf+".kind", "must be total, input or output, got %q", l.Kind)
			}
		case UnitRequests:
			if l.Kind != "" {
				bad(lf+".kind", "requests have no kind, got %q", l.Kind)
			}
		default:
			bad(lf+".unit", "must be tokens, requests or cost, got %q", l.Unit)
		}
		if n, err := l.Amount(); err != nil {
			bad(lf+".max", "%v", err)
		} else if n < 0 {
			bad(lf+".max", "must not be negative, got %s", l.Max)
		}
		if _, _, err := l.Span(); err != nil {
			bad(lf, "%v", err)
		}
	}
}

// HasCost reports a policy with a cost limit: its requests must be priced.
func (p *Policy) HasCost() bool {
	for _, l := range p.Limits {
		if l.Unit == UnitCost {
			return true
		}
	}
	return false
}

// limitUnit is the unit of the limit of that name, "" when the policy has
// none; the shorthands are token limits.
func (p *Policy) limitUnit(name string) string {
	for _, l := range p.Limits {
		if l.Name == name {
			return l.Unit
		}
	}
	return ""
}

// checkLimitMaxes checks a tier's or an override's limits: each names a
// limit of the policy and gives it a budget in its unit.
func (p *Policy) checkLimitMaxes(f string, maxes map[string]Decimal, bad func(field, format string, a ...any)) {
	for name, d := range maxes {
		lf := fmt.Sprintf("%s.limits[%q]", f, name)
		unit := p.limitUnit(name)
		if unit == "" {
			bad(lf, "the policy has no limit of that name for it to change")
			continue
		}
		if n, err := amountIn(unit, d); err != nil {
			bad(lf, "%v", err)
		} else if n < 0 {
			bad(lf, "must not be negative, got %s", d)
		}
	}
}

// Prices are what models cost, for cost limits: per million tokens, in
// the currency the cost limits are written in.
type Prices struct {
	Models map[string]Price `yaml:"models"`
	// Default prices a model Models does not list. Unset, a request for
	// such a model under a cost limit is refused (400): a budget cannot
	// count what it cannot price.
	Default *Price `yaml:"default"`
}

// Price is a model's price per million tokens of each kind. Unset
// cached_input and cache_write cost as input, unset reasoning as output.
type Price struct {
	Input       Decimal `yaml:"input"`
	CachedInput Decimal `yaml:"cached_input"`
	CacheWrite  Decimal `yaml:"cache_write"`
	Output      Decimal `yaml:"output"`
	Reasoning   Decimal `yaml:"reasoning"`
}

// Micros reads the price's fields in micro-units, unset ones as 0.
func (p *Price) Micros() (input, cachedInput, cacheWrite, output, reasoning int64, err error) {
	var out [5]int64
	for i, d := range []Decimal{p.Input, p.CachedInput, p.CacheWrite, p.Output, p.Reasoning} {
		if d == "" {
			continue
		}
		n, e := d.Micros()
		if e == nil && n < 0 {
			e = fmt.Errorf("must not be negative, got %s", d)
		}
		if e != nil {
			return 0, 0, 0, 0, 0, e
		}
		out[i] = n
	}
	return out[0], out[1], out[2], out[3], out[4], nil
}

// Empty reports prices that price nothing.
func (p *Prices) Empty() bool { return len(p.Models) == 0 && p.Default == nil }

// check reports every problem of the price list.
func (p *Prices) check(bad func(field, format string, a ...any)) {
	for m, pr := range p.Models {
		if _, _, _, _, _, err := pr.Micros(); err != nil {
			bad(fmt.Sprintf("prices.models[%q]", m), "%v", err)
		}
	}
	if p.Default != nil {
		if _, _, _, _, _, err := p.Default.Micros(); err != nil {
			bad("prices.default", "%v", err)
		}
	}
}
