package config

import (
	"math"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// Money is read as the file writes it, never through a float.
func TestDecimalMicros(t *testing.T) {
	good := map[string]int64{"2": 2_000_000, "2.5": 2_500_000, "0.000001": 1, ".5": 500_000, "10.": 10_000_000,
		"0.1": 100_000, "-1.25": -1_250_000, "9223372036854": 9_223_372_036_854_000_000}
	for in, want := range good {
		if got, err := Decimal(in).Micros(); err != nil || got != want {
			t.Errorf("Micros(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "1.0000001", "1e3", "+1", "1.-5", "abc", "9223372036855", "1,5"} {
		if got, err := Decimal(in).Micros(); err == nil {
			t.Errorf("Micros(%q) = %d, want an error", in, got)
		}
	}
}

func TestLimitsParsedAndNamed(t *testing.T) {
	c, err := Parse([]byte(`prices: {default: {input: 1, output: 2.5}}
policies:
- name: team
  tokens_per_minute: 100
  limits:
  - {unit: requests, max: 50, window: 1m}
  - {unit: tokens, kind: input, max: 20000, window: 90s}
  - {unit: Cost, kind: output, max: "2.50", period: daily}
  - {name: spend, unit: cost, max: 100, period: monthly}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"requests_per_1m", "input_tokens_per_90s", "output_cost_daily", "spend"}
	for i, l := range c.Policies[0].Limits {
		if l.Name != want[i] {
			t.Errorf("limits[%d] named %q, want %q", i, l.Name, want[i])
		}
	}
	l := c.Policies[0].Limits[2]
	if n, err := l.Amount(); err != nil || n != 2_500_000 {
		t.Errorf("cost max %d, %v; want 2,500,000 micro-units", n, err)
	}
	if w, p, err := c.Policies[0].Limits[1].Span(); err != nil || w != 90*time.Second || p != limiter.NoPeriod {
		t.Errorf("span %v %v %v", w, p, err)
	}
}

func TestBadLimitsNamed(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{`{name: a, limits: [{unit: bytes, max: 1, window: 1m}]}`, "policies[0].limits[0].unit: must be tokens, requests or cost"},
		{`{name: a, limits: [{kind: middle, max: 1, window: 1m}]}`, "policies[0].limits[0].kind: must be total, input or output"},
		{`{name: a, limits: [{unit: requests, kind: input, max: 1, window: 1m}]}`, "policies[0].limits[0].kind: requests have no kind"},
		{`{name: a, limits: [{max: 1.5, window: 1m}]}`, "policies[0].limits[0].max: must be a whole number"},
		{`{name: a, limits: [{max: -1, window: 1m}]}`, "policies[0].limits[0].max: must not be negative"},
		{`{name: a, limits: [{max: 1}]}`, "policies[0].limits[0]: needs exactly one of window"},
		{`{name: a, limits: [{max: 1, window: 1m, period: daily}]}`, "policies[0].limits[0]: needs exactly one of window"},
		{`{name: a, limits: [{max: 1, window: 25h}]}`, "window must be a duration of 1s to 24h0m0s"},
		{`{name: a, limits: [{max: 1, window: 500ms}]}`, "window must be a duration of 1s"},
		{`{name: a, limits: [{max: 1, period: fortnightly}]}`, "must be hourly, daily, weekly, monthly or yearly"},
		{`{name: a, limits: [{max: 1, window: 1m}, {max: 2, window: 1m}]}`, `policies[0].limits[1].name: "tokens_per_1m" is used by another limit`},
		{`{name: a, tokens_per_minute: 5, limits: [{name: tokens_per_minute, max: 2, window: 1m}]}`, `"tokens_per_minute" is used by another limit`},
		{`{name: a, limits: [{name: "a b", max: 2, window: 1m}]}`, `policies[0].limits[0].name: `},
		{`{name: a, limits: [{unit: cost, max: 1, window: 1m}]}`, "policies[0].limits: a cost limit needs prices"},
		{`{name: a, limits: [{max: 1, window: 1m}], overrides: [{key_sha256: "` + strings.Repeat("a", 64) + `", limits: {nope: 3}}]}`,
			`policies[0].overrides[0].limits["nope"]: the policy has no limit of that name`},
		{`{name: a, limits: [{name: r, unit: requests, max: 1, window: 1m}], tiers: {header: x-tier, levels: {gold: {limits: {r: 1.5}}}}}`,
			`policies[0].tiers.levels["gold"].limits["r"]: must be a whole number`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte("policies:\n- " + tt.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s:\n got %v\nwant …%s…", tt.yaml, err, tt.want)
		}
	}
	if _, err := Parse([]byte("prices: {models: {m: {input: x}}}\npolicies: [{name: a, tokens_per_minute: 1}]\n")); err == nil ||
		!strings.Contains(err.Error(), `prices.models["m"]: must be a number`) {
		t.Errorf("bad price: %v", err)
	}
}

// Micros agrees with exact rational arithmetic: what it accepts is the
// decimal's value in millionths, and every plain decimal of at most six
// places that fits is accepted.
func FuzzDecimalMicros(f *testing.F) {
	for _, s := range []string{"2", "2.5", "0.000001", ".5", "10.", "-1.25", "1e3", "+1", "1.-5", "", ".", "9223372036854", "9223372036855", " 3.14 ", "--1", "-", "9223372036854.775807", "9223372036854.775808"} {
		f.Add(s)
	}
	plain := regexp.MustCompile(`^-?([0-9]+\.?[0-9]{0,6}|\.[0-9]{1,6})$`)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Decimal(s).Micros()
		trimmed := strings.TrimSpace(s)
		r, ok := new(big.Rat).SetString(trimmed)
		if err == nil {
			if !ok {
				t.Fatalf("Micros(%q) = %d, but it is no number", s, got)
			}
			want := new(big.Rat).Mul(r, big.NewRat(1_000_000, 1))
			if !want.IsInt() || want.Num().Cmp(big.NewInt(got)) != 0 {
				t.Fatalf("Micros(%q) = %d, want %s", s, got, want.RatString())
			}
			return
		}
		if plain.MatchString(trimmed) && ok {
			if v := new(big.Rat).Mul(r, big.NewRat(1_000_000, 1)); v.Num().IsInt64() && v.Num().Int64() > math.MinInt64 {
				t.Fatalf("Micros(%q) refused a plain decimal that fits: %v", s, err)
			}
		}
	})
}
