package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

func load(t *testing.T, file string) []*Policy {
	t.Helper()
	c, err := config.Load(filepath.Join("..", "..", "internal", "config", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := CompileAll(c.Policies, c.Prices)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestTiers(t *testing.T) {
	ps := load(t, "tiers.yaml")
	p := ps[0]
	sha := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	tests := []struct {
		key  string
		want limiter.Limits
	}{
		{"test", limiter.Limits{TokensPerMinute: 20000, Quota: 10000, Period: limiter.Monthly}}, // upper-case hash in the file
		{"tier2", limiter.Limits{TokensPerMinute: 500, Quota: 50, Period: limiter.Monthly}},
		{"other", limiter.Limits{TokensPerMinute: 500, Quota: 10000, Period: limiter.Monthly}},
	}
	for _, tt := range tests {
		if got := p.BudgetFor(sha(tt.key), ""); !slices.Equal(got, tt.want.Budget()) {
			t.Errorf("BudgetFor(%s) = %+v, want %+v", tt.key, got, tt.want.Budget())
		}
	}
	if strict, budget := p.Strict(); !strict || budget != 2048 {
		t.Errorf("Strict() = %v, %d, want true, 2048", strict, budget)
	}
	if strict, budget := ps[1].Strict(); !strict || budget != config.DefaultCompletionBudget {
		t.Errorf("max_tokens: Strict() = %v, %d", strict, budget)
	}
	if !p.Shadow() || !p.PerModel() || p.Count() != config.CountCompletion || p.UnreadableAction() != config.UnreadableRefuse {
		t.Errorf("policy %+v", p)
	}
}

// The bug this package exists to prevent: a policy built in code with a
// quota used to be handed to the server without validation, which is
// where the quota's period was derived, so the quota silently did
// nothing. A schema built in code now goes through Compile, which checks
// and derives exactly as for the file.
func TestHandBuiltSpecKeepsItsQuota(t *testing.T) {
	p, err := Compile(config.Policy{Name: "team", TokenQuota: 1000, TokenQuotaPeriod: "monthly"}, config.Prices{})
	if err != nil {
		t.Fatal(err)
	}
	want := limiter.Limits{Quota: 1000, Period: limiter.Monthly}
	if got := p.BudgetFor("any", ""); !slices.Equal(got, want.Budget()) {
		t.Errorf("BudgetFor = %+v, want %+v", got, want.Budget())
	}
	if !p.RejectsMissingKey() || !p.MatchesPath("/v1/chat/completions") || p.Count() != config.CountTotal || !p.InjectsStreamUsage() || !p.ChargesUnanswered() {
		t.Errorf("defaults not applied: %+v", p)
	}
}

// A hand-built schema gets the file's checks, every problem named.
func TestCompileRefusesBadSpecs(t *testing.T) {
	tests := []struct {
		spec config.Policy
		want []string
	}{
		{config.Policy{TokensPerMinute: 10}, []string{"policy.name: is required"}},
		{config.Policy{Name: "a:b", TokensPerMinute: 10}, []string{`policy "a:b".name: must not contain ':'`}},
		{config.Policy{Name: "q", TokenQuotaPeriod: "daily", TokensPerMinute: 10}, []string{`policy "q".token_quota: token_quota_period is set but token_quota is not`}},
		{config.Policy{Name: "z"}, []string{`policy "z".tokens_per_minute: a policy needs tokens_per_minute, token_quota or limits`}},
		{config.Policy{Name: "r", TokensPerMinute: 1, ReserveCompletion: "lots", Count: "all"}, []string{
			`policy "r".count: must be total, prompt or completion, got "all"`,
			`policy "r".reserve_completion: must be none, max_tokens or a positive number of tokens, got "lots"`}},
	}
	for _, tt := range tests {
		p, err := Compile(tt.spec, config.Prices{})
		if err == nil || p != nil {
			t.Errorf("Compile(%+v) = %v, %v; want an error", tt.spec, p, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Compile(%+v): %q does not say %q", tt.spec, err, w)
			}
		}
	}
	if _, err := CompileAll([]config.Policy{{Name: "a", TokensPerMinute: 1}, {Name: "a", TokensPerMinute: 2}}, config.Prices{}); err == nil ||
		!strings.Contains(err.Error(), `policies[1].name: "a" is used by an earlier policy`) {
		t.Errorf("CompileAll with a duplicate name: %v", err)
	}
}

// Compile copies what it keeps: changing the spec afterwards changes
// nothing in the compiled policy.
func TestCompiledPolicyIsItsOwn(t *testing.T) {
	spec := config.Policy{Name: "c", TokensPerMinute: 10, CounterKey: config.CounterKey{Header: []string{"X-Key"}}, Match: config.Match{Models: []string{"gpt-4o"}}}
	p, err := Compile(spec, config.Prices{})
	if err != nil {
		t.Fatal(err)
	}
	spec.CounterKey.Header[0], spec.Match.Models[0], spec.TokensPerMinute = "other", "o1", 99
	if p.KeyHeaders()[0] != "x-key" || !p.MatchesModel("GPT-4O") || p.MatchesModel("o1") || p.BudgetFor("", "")[0].Max != 10 {
		t.Errorf("the compiled policy changed with its spec: %+v", p)
	}
}

// The old failure cannot even be written: outside this package, a Policy
// literal with budgets does not compile, because every field is
// unexported. The test type-checks such a program with the Go compiler's
// own checker.
func TestPolicyCannotBeBuiltByHand(t *testing.T) {
	const src = `package handbuilt

import "github.com/tokengate/tokengate/extproc/policy"

var P = &policy.Policy{name: "team", budget: nil}
var Q = policy.Policy{}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "handbuilt.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil), Error: func(err error) { errs = append(errs, err.Error()) }}
	_, _ = conf.Check("handbuilt", fset, []*ast.File{f}, nil)
	joined := strings.Join(errs, "\n")
	for _, want := range []string{"unexported field name in struct literal", "unexported field budget in struct literal"} {
		if !strings.Contains(joined, want) {
			t.Errorf("type-checking a hand-built policy:\n%s\nwant an error %q", joined, want)
		}
	}
	// The zero value is writable, but useless: it has no name and no
	// limits, and the server is handed compiled policies only.
	if len(errs) != 2 {
		t.Errorf("errors %q, want exactly the two unexported fields", errs)
	}
}

func TestCounterKeyRoundTrip(t *testing.T) {
	mk := func(spec config.Policy) *Policy {
		p, err := Compile(spec, config.Prices{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := mk(config.Policy{Name: "a", TokensPerMinute: 10})
	perModel := mk(config.Policy{Name: "a", TokensPerMinute: 10, CounterKey: config.CounterKey{PerModel: true}})
	for _, tc := range []struct {
		p     *Policy
		model string
	}{{plain, ""}, {perModel, "gpt-4o"}} {
		k := tc.p.CounterKey("abc", tc.model)
		hash, model, ok := tc.p.ParseCounterKey(k)
		if !ok || hash != "abc" || model != tc.model {
			t.Errorf("%s: read back %q %q %v", k, hash, model, ok)
		}
	}
	other := mk(config.Policy{Name: "ab", TokensPerMinute: 10})
	if _, _, ok := plain.ParseCounterKey(other.CounterKey("abc", "")); ok {
		t.Error("policy a read policy ab's key")
	}
}
