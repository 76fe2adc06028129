package extproc

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

const jwtNS = "envoy.filters.http.jwt_authn"

// withIdentity adds what Envoy forwards of the request's identity to a
// request-headers message: jwt_authn's payload as dynamic metadata, and
// the client's address as a request attribute.
func withIdentity(m *extprocv3.ProcessingRequest, claims map[string]any, addr string) *extprocv3.ProcessingRequest {
	if claims != nil {
		payload, err := structpb.NewStruct(map[string]any{"jwt_payload": claims})
		if err != nil {
			panic(err)
		}
		m.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{jwtNS: payload}}
	}
	if addr != "" {
		m.Attributes = map[string]*structpb.Struct{attributesKey: {Fields: map[string]*structpb.Value{"source.address": structpb.NewStringValue(addr)}}}
	}
	return m
}

// sendAs plays one answered chat request from the identity given and
// returns the status of tokengate's answer at the headers (0: let
// through).
func (e *env) sendAs(t *testing.T, claims map[string]any, addr string, headerKV ...string) int {
	t.Helper()
	kv := append([]string{":method", "POST", ":path", "/v1/chat/completions"}, headerKV...)
	out := e.run(t, withIdentity(reqHeaders(false, kv...), claims, addr), reqBody(labBody),
		respHeaders("200", false, "content-type", "application/json"), respBody(chatUsage(40, 10)))
	if imm := out[0].GetImmediateResponse(); imm != nil {
		return int(imm.GetStatus().GetCode())
	}
	return 0
}

// usedBy reads the window of a raw key as tokengate stores it.
func (e *env) usedBy(t *testing.T, rawKey string) int64 {
	t.Helper()
	d, err := e.store.Status(context.Background(), "lab:"+hashKey(rawKey), limiter.Limits{TokensPerMinute: 1 << 40}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return d.Used
}

// A key read from a claim Envoy verified: each subject its own budget, a
// request without the claim refused as one without a key.
func TestKeyFromJWTClaim(t *testing.T) {
	p := config.Policy{Name: "lab", TokensPerMinute: 100, CounterKey: config.CounterKey{
		Metadata: &config.MetadataValue{Namespace: jwtNS, Path: []string{"jwt_payload", "sub"}}}}
	e := newEnv(t, p)
	if got := e.sendAs(t, map[string]any{"sub": "alice"}, "", "api-key", "made-up-1"); got != 0 {
		t.Fatalf("alice refused %d", got)
	}
	// A made-up api-key changes nothing: the key is the claim.
	if got := e.sendAs(t, map[string]any{"sub": "alice"}, "", "api-key", "made-up-2"); got != 0 {
		t.Fatalf("alice's second request refused %d", got)
	}
	if got := e.sendAs(t, map[string]any{"sub": "alice"}, ""); got != 429 {
		t.Errorf("alice's third request (100 tokens spent): %d, want 429", got)
	}
	if got := e.sendAs(t, map[string]any{"sub": "bob"}, ""); got != 0 {
		t.Errorf("bob, a budget of his own: %d", got)
	}
	want := `metadata="alice"`
	if used := e.usedBy(t, want); used != 100 {
		t.Errorf("alice's window holds %d, want 100", used)
	}
	if got := e.sendAs(t, nil, "", "api-key", "k"); got != 401 {
		t.Errorf("no claim: %d, want 401", got)
	}
	if got := e.sendAs(t, map[string]any{"sub": map[string]any{"nested": 1}}, ""); got != 401 {
		t.Errorf("a claim that is an object: %d, want 401 (a key names one value)", got)
	}
}

// A key per client address, its port left out, an IPv6 client by its
// /64 (one client holds a whole /64); with a tenant claim, the key is
// both.
func TestKeyFromClientAddress(t *testing.T) {
	p := config.Policy{Name: "lab", TokensPerMinute: 1000, CounterKey: config.CounterKey{Attribute: "source.address"}}
	e := newEnv(t, p)
	e.sendAs(t, nil, "203.0.113.7:40001")
	e.sendAs(t, nil, "203.0.113.7:40002")
	e.sendAs(t, nil, "[2001:db8::1]:443")
	e.sendAs(t, nil, "[2001:db8::ffff:1:2:3]:443")
	e.sendAs(t, nil, "[2001:db8:0:1::1]:443")
	if used := e.usedBy(t, `attribute="203.0.113.7"`); used != 100 {
		t.Errorf("203.0.113.7 from two ports holds %d, want 100 in one window", used)
	}
	if used := e.usedBy(t, `attribute="2001:db8::/64"`); used != 100 {
		t.Errorf("2001:db8::/64 from two addresses holds %d, want 100", used)
	}
	if used := e.usedBy(t, `attribute="2001:db8:0:1::/64"`); used != 50 {
		t.Errorf("2001:db8:0:1::/64 holds %d, want 50", used)
	}
	if got := e.sendAs(t, nil, ""); got != 401 {
		t.Errorf("no address forwarded: %d, want 401", got)
	}

	both := config.Policy{Name: "lab", TokensPerMinute: 1000, CounterKey: config.CounterKey{
		Metadata: &config.MetadataValue{Namespace: jwtNS, Path: []string{"jwt_payload", "tenant"}}, Attribute: "source.address"}}
	e = newEnv(t, both)
	e.sendAs(t, map[string]any{"tenant": "acme"}, "198.51.100.2:1")
	if used := e.usedBy(t, `metadata="acme";attribute="198.51.100.2"`); used != 50 {
		t.Errorf("tenant + address holds %d, want 50", used)
	}
	if got := e.sendAs(t, map[string]any{"tenant": "acme"}, ""); got != 401 {
		t.Errorf("a composite key needs every part: %d, want 401", got)
	}
}

// A tier from the identity picks the budgets; a key's own override wins
// over its tier, and an unknown tier gets the policy's.
func TestTiersFromIdentity(t *testing.T) {
	p := config.Policy{Name: "lab", TokensPerMinute: 60,
		CounterKey: config.CounterKey{Metadata: &config.MetadataValue{Namespace: jwtNS, Path: []string{"jwt_payload", "sub"}}},
		Tiers: &config.Tiers{Metadata: &config.MetadataValue{Namespace: jwtNS, Path: []string{"jwt_payload", "tier"}},
			Levels: map[string]config.TierBudgets{"gold": {TokensPerMinute: 200}}}}
	e := newEnv(t, p)
	gold := map[string]any{"sub": "g", "tier": "gold"}
	plain := map[string]any{"sub": "p", "tier": "bronze"}
	for i := range 4 {
		if got := e.sendAs(t, gold, ""); got != 0 {
			t.Fatalf("gold request %d refused %d: its tier allows 200", i+1, got)
		}
	}
	if got := e.sendAs(t, gold, ""); got != 429 {
		t.Errorf("gold past 200: %d, want 429", got)
	}
	e.sendAs(t, plain, "")
	e.sendAs(t, plain, "") // 50 < 60: let through, as APIM does until the window is spent
	if got := e.sendAs(t, plain, ""); got != 429 {
		t.Errorf("an unknown tier past the policy's 60: %d, want 429", got)
	}

	h := config.Policy{Name: "lab", TokensPerMinute: 60, CounterKey: config.CounterKey{Header: []string{"api-key"}},
		Tiers: &config.Tiers{Header: "x-tier", Levels: map[string]config.TierBudgets{"gold": {TokensPerMinute: 1000}}}}
	e = newEnv(t, h)
	for range 3 {
		if got := e.sendAs(t, nil, "", "api-key", "k", "x-tier", "gold"); got != 0 {
			t.Fatalf("gold by header refused %d", got)
		}
	}
}

// The IETF draft's fields, one item per limit, named as the limit, in
// the budget's order: the calendar quota (its w the month's length,
// January's here) and the sliding minute.
func TestDraftRateLimitHeaders(t *testing.T) {
	p := labPolicy()
	p.TokenQuota, p.TokenQuotaPeriod = 10000, "monthly"
	e := newEnv(t, p)
	out := e.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", chatUsage(30, 64))...)
	var m *extprocv3.HeaderMutation
	for _, r := range out {
		if hm := r.GetResponseBody().GetResponse().GetHeaderMutation(); hm != nil {
			m = hm
		}
	}
	policy, _ := headerOf(m, "ratelimit-policy")
	if want := `"token_quota";q=10000;qu="tokens";w=2678400, "tokens_per_minute";q=500;qu="tokens";w=60`; policy != want {
		t.Errorf("ratelimit-policy %q, want %q", policy, want)
	}
	state, _ := headerOf(m, "ratelimit")
	if want := `"token_quota";r=9906;t=`; !strings.HasPrefix(state, want) || !strings.HasSuffix(state, `, "tokens_per_minute";r=406;t=60`) {
		t.Errorf("ratelimit %q, want %q…, \"tokens_per_minute\";r=406;t=60", state, want)
	}
}
