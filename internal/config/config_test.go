package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
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
		ChargeUnanswered:     ChargePrompt,
		Overrides:            nil,
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("policy 0:\n got %+v\nwant %+v", p, want)
	}
	rest := c.Policies[1]
	if rest.Match.PathPrefix != "/" || rest.CounterKey.Missing != MissingReject || len(rest.KeyHeaders()) != 3 {
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
		{"bad_limit.yaml", "policies[0].tokens_per_minute: a policy needs tokens_per_minute, token_quota or limits"},
		{"bad_budgets.yaml", `policies[0].token_quota_period: must be hourly, daily, weekly, monthly or yearly, got "fortnightly"` + "\n" +
			`policies[0].count: must be total, prompt or completion, got "everything"` + "\n" +
			`policies[0].reserve_completion: must be none, max_tokens or a positive number of tokens, got "lots"` + "\n" +
			`policies[0].overrides[0].key_sha256: must be 64 lowercase hex digits (the SHA-256 of the key), got 3 characters that are not`},
		{"period_without_quota.yaml", "policies[0].token_quota: token_quota_period is set but token_quota is not"},
		{"bad_missing.yaml", `policies[0].counter_key.missing: must be reject or anonymous, got "allow"`},
		{"colon_name.yaml", `policies[0].name: must not contain ':', got "team:a"`},
		{"bad_unanswered.yaml", `policies[0].charge_unanswered: must be prompt or none, got "half"`},
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

// A counter key read from several headers is one a client may be able to
// rotate: Warnings says so, naming the policy and the headers, and the
// default list (three headers) warns as much as an explicit one.
func TestWarningsSeveralKeyHeaders(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		want   []string // substrings of the one warning; nil: no warning
		reason string
	}{
		{"several", "policies:\n- {name: chat, tokens_per_minute: 10, counter_key: {header: [API-Key, authorization]}}\n",
			[]string{`policies[0] ("chat")`, "counter_key.header lists several headers (api-key, authorization)", "List exactly one header"}, ""},
		{"default", "policies:\n- {name: lab, tokens_per_minute: 10}\n",
			[]string{`policies[0] ("lab")`, "is not set, so the default list applies (" + strings.Join(DefaultKeyHeaders, ", ") + ")", "fresh budget per value", "List exactly one header"}, ""},
		{"one", "policies:\n- {name: p, tokens_per_minute: 10, counter_key: {header: [x-jwt-sub]}}\n", nil, ""},
		{"one twice", "policies:\n- {name: p, tokens_per_minute: 10, counter_key: {header: [api-key, Api-Key]}}\n", nil,
			"the same header twice is one header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			got := c.Warnings()
			if tt.want == nil {
				if len(got) != 0 {
					t.Errorf("Warnings() = %q, want none (%s)", got, tt.reason)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("Warnings() = %q, want one", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("warning %q\ndoes not contain %q", got[0], w)
				}
			}
		})
	}
}

// One warning per policy that needs one, in order; the embedded default
// (keyed by api-key alone) has none.
func TestWarningsPerPolicy(t *testing.T) {
	c, err := Parse([]byte("policies:\n" +
		"- {name: a, tokens_per_minute: 10, counter_key: {header: [api-key]}}\n" +
		"- {name: b, tokens_per_minute: 10}\n" +
		"- {name: c, tokens_per_minute: 10, counter_key: {header: [ocp-apim-subscription-key, api-key]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Warnings()
	if len(got) != 2 || !strings.HasPrefix(got[0], `policies[1] ("b")`) || !strings.HasPrefix(got[1], `policies[2] ("c")`) {
		t.Errorf("Warnings() = %q, want policies[1] and policies[2]", got)
	}
	if w := Default().Warnings(); len(w) != 0 {
		t.Errorf("embedded default: Warnings() = %q, want none", w)
	}
}

// Keys and tiers from what Envoy verified: every mistake named.
func TestIdentityKeysAndTiersChecked(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{`{name: a, tokens_per_minute: 1, counter_key: {metadata: {path: [sub]}}}`, "policies[0].counter_key.metadata.namespace: is required"},
		{`{name: a, tokens_per_minute: 1, counter_key: {metadata: {namespace: ns}}}`, "policies[0].counter_key.metadata.path: is required"},
		{`{name: a, tokens_per_minute: 1, counter_key: {attribute: source.ip}}`, `policies[0].counter_key.attribute: must be one of source.address`},
		{`{name: a, tokens_per_minute: 1, tiers: {levels: {gold: {tokens_per_minute: 5}}}}`, "policies[0].tiers: needs exactly one of metadata and header"},
		{`{name: a, tokens_per_minute: 1, tiers: {header: x-tier}}`, "policies[0].tiers.levels: at least one tier is required"},
		{`{name: a, tokens_per_minute: 1, tiers: {header: x-tier, levels: {gold: {token_quota: 5}}}}`, `policies[0].tiers.levels["gold"].token_quota: the policy has no token_quota`},
	} {
		_, err := Parse([]byte("policies:\n- " + c.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.yaml, err, c.want)
		}
	}
	c, err := Parse([]byte("policies:\n- {name: a, tokens_per_minute: 1, counter_key: {attribute: source.address}, tiers: {header: X-Tier, levels: {gold: {tokens_per_minute: 9}}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policies[0]; len(p.KeyHeaders()) != 0 || p.Tiers.Header != "x-tier" || len(c.Warnings()) != 0 {
		t.Errorf("an address-keyed policy reads no header (%v), its tier header lower-cased (%q), no warning (%v)", p.KeyHeaders(), p.Tiers.Header, c.Warnings())
	}
}

// TestHoldLease: a lease of 30 s by default; a config from before leases
// whose hold_ttl is shorter keeps it as the lease; a lease longer than
// the hold TTL is refused.
func TestHoldLease(t *testing.T) {
	const pol = "policies: [{name: p, tokens_per_minute: 10}]\n"
	for _, tc := range []struct {
		redis      string
		lease, ttl time.Duration
		err        string
	}{
		{"{}", 30 * time.Second, 10 * time.Minute, ""},
		{"{hold_ttl: 2s}", 2 * time.Second, 2 * time.Second, ""},
		{"{hold_ttl: 1h}", 30 * time.Second, time.Hour, ""},
		{"{hold_lease: 5s}", 5 * time.Second, 10 * time.Minute, ""},
		{"{hold_lease: 5m, hold_ttl: 1m}", 0, 0, "store.redis.hold_lease: must be at most hold_ttl (1m0s), got 5m0s"},
	} {
		c, err := Parse([]byte("store: {backend: redis, redis: " + tc.redis + "}\n" + pol))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.redis, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.redis, err)
			continue
		}
		if r := c.Store.Redis; r.HoldLease != tc.lease || r.HoldTTL != tc.ttl {
			t.Errorf("%s: hold_lease %v, hold_ttl %v; want %v, %v", tc.redis, r.HoldLease, r.HoldTTL, tc.lease, tc.ttl)
		}
	}
}
