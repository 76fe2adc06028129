package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// idConfig keys callers by the JWT's sub claim, as jwt_authn verified it
// and Envoy forwarded it; a gold tier from the same token gets more.
const idConfig = `store: {backend: memory}
policies:
- name: lab
  counter_key:
    metadata: {namespace: envoy.filters.http.jwt_authn, path: [jwt_payload, sub]}
  tokens_per_minute: 100
  tiers:
    metadata: {namespace: envoy.filters.http.jwt_authn, path: [jwt_payload, tier]}
    levels:
      gold: {tokens_per_minute: 1000}
`

// idIssuer signs tokens for one test with a fresh RSA key, and configures
// the front's jwt_authn, as envoy.yaml's would be, to verify them.
type idIssuer struct{ key *rsa.PrivateKey }

func newIDIssuer(t *testing.T) *idIssuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &idIssuer{key: k}
}

func (is *idIssuer) jwtAuthn(t *testing.T) *jwtauthnv3.JwtAuthentication {
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
		"n": b64(is.key.N.Bytes()), "e": b64(big.NewInt(int64(is.key.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return &jwtauthnv3.JwtAuthentication{
		Providers: map[string]*jwtauthnv3.JwtProvider{"idp": {
			Issuer:              "https://idp.test",
			JwksSourceSpecifier: &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(jwks)}}},
			PayloadInMetadata:   "jwt_payload",
		}},
		Rules: []*jwtauthnv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: "idp"}}},
		}},
	}
}

// token signs claims (with the issuer's iss).
func (is *idIssuer) token(t *testing.T, claims map[string]any) string {
	b64 := base64.RawURLEncoding.EncodeToString
	claims["iss"] = "https://idp.test"
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "k1"})
	pl, _ := json.Marshal(claims)
	in := b64(hdr) + "." + b64(pl)
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, is.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64(sig)
}

// idChat sends one chat as the bearer of token (none: "") from address
// xff, and returns tokengate's (or jwt_authn's) status.
func idChat(t *testing.T, s *harness.Stack, token, xff string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": labMessages})
	req := s.Request("POST", "/v1/chat/completions", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-mock-completion-tokens", "20")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, _ := s.Do(req)
	return resp.StatusCode
}

// TestKeysAndTiersFromVerifiedIdentity: through the real binaries and the
// front's jwt_authn, each subject of a verified token gets a budget of its
// own whatever else it sends, a gold tier from the token gets its larger
// budget, and a request without a valid token never reaches tokengate.
func TestKeysAndTiersFromVerifiedIdentity(t *testing.T) {
	needBinaries(t)
	is := newIDIssuer(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: idConfig, FakeClock: labClock,
		Front: func(c *front.Config) { c.JWTAuthn = is.jwtAuthn(t) }})
	alice, bob := is.token(t, map[string]any{"sub": "alice"}), is.token(t, map[string]any{"sub": "bob", "tier": "gold"})
	// A chat costs the prompt + 20: alice's 100 are spent after a few.
	var aliceOK int
	for i := 0; i < 10; i++ {
		code := idChat(t, s, alice, "")
		if code == http.StatusTooManyRequests {
			break
		}
		if code != http.StatusOK {
			t.Fatalf("alice's request %d: %d", i+1, code)
		}
		aliceOK++
	}
	if aliceOK == 0 || aliceOK >= 10 {
		t.Fatalf("alice got %d answers before a 429, want a few: 100 tokens a minute", aliceOK)
	}
	// A second token for the same subject is the same budget.
	if code := idChat(t, s, is.token(t, map[string]any{"sub": "alice", "jti": "another"}), ""); code != http.StatusTooManyRequests {
		t.Errorf("alice with another token: %d, want 429: the key is the subject", code)
	}
	// Bob is gold: more than ten times alice's answers fit.
	for i := 0; i < 3*aliceOK+1; i++ {
		if code := idChat(t, s, bob, ""); code != http.StatusOK {
			t.Fatalf("bob (gold) request %d: %d, want 200 within his 1000 tokens", i+1, code)
		}
	}
	if code := idChat(t, s, "", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want jwt_authn's 401", code)
	}
	if code := idChat(t, s, alice[:len(alice)-4]+"AAAA", ""); code != http.StatusUnauthorized {
		t.Errorf("a forged signature: %d, want jwt_authn's 401", code)
	}
}

// TestKeyPerClientAddress: behind one trusted proxy (xff_num_trusted_hops:
// 1), the client address Envoy computes from X-Forwarded-For is the key:
// two clients, two budgets.
func TestKeyPerClientAddress(t *testing.T) {
	needBinaries(t)
	cfg := "store: {backend: memory}\npolicies:\n- name: lab\n  counter_key: {attribute: source.address}\n  tokens_per_minute: 100\n"
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: labClock,
		Front: func(c *front.Config) { c.UseRemoteAddress, c.XFFNumTrustedHops = true, 1 }})
	spent := 0
	for i := 0; i < 10; i++ {
		if code := idChat(t, s, "", "203.0.113.5"); code == http.StatusTooManyRequests {
			break
		}
		spent++
	}
	if spent == 0 || spent >= 10 {
		t.Fatalf("203.0.113.5 got %d answers before a 429, want a few", spent)
	}
	if code := idChat(t, s, "", "203.0.113.6"); code != http.StatusOK {
		t.Errorf("another client address: %d, want 200: a budget of its own", code)
	}
}
