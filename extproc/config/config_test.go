package config

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

func TestDefault(t *testing.T) {
	c := Default()
	if c.Listen != "0.0.0.0:50051" || c.AdminListen != "127.0.0.1:9090" {
		t.Errorf("listen = %q, %q", c.Listen, c.AdminListen)
	}
	if c.Store.Backend != "bbolt" || c.Store.Bbolt.Path != "./data/tokengate.db" || c.Store.Bbolt.FlushInterval != time.Second {
		t.Errorf("store = %+v", c.Store)
	}
	if len(c.Policies) != 1 || c.Policies[0].TokensPerMinute != 10000 || !reflect.DeepEqual(c.Policies[0].CounterKey.Header, []string{"api-key"}) {
		t.Errorf("policies = %+v", c.Policies)
	}
	if c.MaxReceiveBytes != 64<<20 {
		t.Errorf("max_receive_bytes = %d", c.MaxReceiveBytes)
	}
}

func TestLoadFull(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policies[0]
	want := Policy{
		Name:                 "gpt4o",
		Match:                Match{PathPrefix: "/openai/", Models: []string{"gpt-4o"}},
		CounterKey:           CounterKey{Header: []string{"ocp-apim-subscription-key", "authorization"}, Missing: MissingAnonymous},
		TokensPerMinute:      500,
		EstimatePromptTokens: true,
		Headers:              Headers{RetryAfter: "x-retry", RemainingTokens: "x-remaining", TokensConsumed: "x-consumed"},
		Count:                CountTotal,
		ReserveCompletion:    "none",
		Overrides:            nil,
	}
	p.overrides, p.period, p.strict, p.completionBudget = nil, 0, false, 0 // derived; checked in TestTiers
	if !reflect.DeepEqual(p, want) {
		t.Errorf("policy 0:\n got %+v\nwant %+v", p, want)
	}
	rest := c.Policies[1]
	if rest.Match.PathPrefix != "/" || rest.CounterKey.Missing != MissingReject || len(rest.CounterKey.Header) != 3 {
		t.Errorf("defaults not filled: %+v", rest)
	}
	if c.Store.Bbolt.FlushInterval != 250*time.Millisecond || c.MaxReceiveBytes != 1<<20 {
		t.Errorf("store = %+v, max = %d", c.Store, c.MaxReceiveBytes)
	}
}

// One fixture per failure mode, with the exact message an operator sees.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown_field.yaml", "line 3: unknown field tokens_per_minut"},
		{"no_policies.yaml", "policies: at least one policy is required"},
		{"bad_limit.yaml", "policies[0].tokens_per_minute: a policy needs tokens_per_minute, token_quota or both"},
		{"bad_budgets.yaml", `policies[0].token_quota_period: must be hourly, daily, weekly, monthly or yearly, got "fortnightly"` + "\n" +
			`policies[0].count: must be total, prompt or completion, got "everything"` + "\n" +
			`policies[0].reserve_completion: must be none, max_tokens or a positive number of tokens, got "lots"` + "\n" +
			`policies[0].overrides[0].key_sha256: must be 64 hex digits (the SHA-256 of the key), got "abc"`},
		{"period_without_quota.yaml", "policies[0].token_quota: token_quota_period is set but token_quota is not"},
		{"bad_missing.yaml", `policies[0].counter_key.missing: must be reject or anonymous, got "allow"`},
		{"bad_backend.yaml", `store.backend: must be memory, bbolt or redis, got "etcd"`},
		{"bad_redis.yaml", `store.redis.on_error: must be fail_open, fail_closed or local, got "panic"` + "\n" + `store.redis.clock: must be server or client, got "sundial"`},
		{"duplicate_name.yaml", `policies[1].name: "lab" is used by an earlier policy`},
		{"bad_prefix.yaml", `policies[0].match.path_prefix: must start with /, got "v1"`},
		{"bad_duration.yaml", "line 1: cannot unmarshal !!str `soon` into time.Duration"},
		{"two_errors.yaml", "store.backend: must be memory, bbolt or redis, got \"etcd\"\npolicies[0].tokens_per_minute: must be a positive number of tokens, got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error %q", tt.file, tt.want)
			}
			want := "config " + path + ": " + tt.want
			if err.Error() != want {
				t.Errorf("error:\n got %q\nwant %q", err.Error(), want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("err = %v", err)
	}
}

func TestParseEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasSuffix(err.Error(), "the file is empty") {
		t.Errorf("err = %v", err)
	}
}

func TestTiers(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "tiers.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := &c.Policies[0]
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
		if got := p.LimitsFor(sha(tt.key)); got != tt.want {
			t.Errorf("LimitsFor(%s) = %+v, want %+v", tt.key, got, tt.want)
		}
	}
	if strict, budget := p.Strict(); !strict || budget != 2048 {
		t.Errorf("Strict() = %v, %d, want true, 2048", strict, budget)
	}
	if strict, budget := c.Policies[1].Strict(); !strict || budget != DefaultCompletionBudget {
		t.Errorf("max_tokens: Strict() = %v, %d", strict, budget)
	}
	if !p.Shadow || !p.CounterKey.PerModel || p.Count != CountCompletion {
		t.Errorf("policy %+v", p)
	}
}
