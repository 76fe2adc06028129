package front

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tokengate/tokengate/envoy"
	"github.com/tokengate/tokengate/internal/proc"
)

var b64 = base64.RawURLEncoding.EncodeToString

// signJWT makes a compact JWS of claims signed with key (RS256 or ES256).
func signJWT(t *testing.T, key crypto.Signer, claims map[string]any) string {
	t.Helper()
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	hdr, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	pl, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	in := b64(hdr) + "." + b64(pl)
	sum := sha256.Sum256([]byte(in))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64(sig)
}

// jwks is the JSON Web Key Set of the public keys of rsaKey and ecKey.
func jwks(t *testing.T, rsaKey *rsa.PrivateKey, ecKey *ecdsa.PrivateKey) string {
	t.Helper()
	pt, err := ecKey.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
		{"kty": "EC", "crv": "P-256", "kid": "e1", "x": b64(pt[1:33]), "y": b64(pt[33:])},
	}})
	return string(set)
}

// jwtConfig is a jwt_authn filter whose provider idp verifies with keys:
// required on /v1/, optional on /open/, nothing on other paths.
func jwtConfig(t *testing.T, keys string) *jwtauthnv3.JwtAuthentication {
	t.Helper()
	c := &jwtauthnv3.JwtAuthentication{}
	err := protojson.Unmarshal([]byte(`{
		"providers": {"idp": {
			"issuer": "https://idp.example", "audiences": ["api"],
			"local_jwks": {"inline_string": `+string(mustJSON(keys))+`},
			"payload_in_metadata": "jwt_payload"}},
		"rules": [
			{"match": {"prefix": "/v1/"}, "requires": {"provider_name": "idp"}},
			{"match": {"prefix": "/open/"}, "requires": {"requires_any": {"requirements": [{"provider_name": "idp"}, {"allow_missing": {}}]}}}
		]}`), c)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// The front imitates a jwt_authn filter before ext_proc: a valid token's
// claims reach the processor in the jwt_authn namespace and the token
// does not (forward: false); a bad or missing one gets jwt_authn's answer
// and no ext_proc stream at all.
func TestJWTAuthn(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	claims := func(change func(map[string]any)) map[string]any {
		c := map[string]any{"iss": "https://idp.example", "sub": "user-42", "aud": []string{"api"}, "tenant": "t1", "exp": now + 600}
		if change != nil {
			change(c)
		}
		return c
	}
	s := newStand(t, forwarding(), passAll, nil, func(c *Config) { c.JWTAuthn = jwtConfig(t, jwks(t, rsaKey, ecKey)) })
	host := strings.TrimPrefix(s.url, "http://")
	tests := []struct {
		name, path, token string
		status            int
		body, challenge   string // jwt_authn's answer; "" when the request went on
		tenant            string // the claim the processor sees
	}{
		{"RS256", "/v1/chat/completions", signJWT(t, rsaKey, claims(nil)), 200, "", "", "t1"},
		{"ES256", "/v1/chat/completions", signJWT(t, ecKey, claims(nil)), 200, "", "", "t1"},
		{"signed by another key", "/v1/chat/completions", signJWT(t, other, claims(nil)), 401,
			"Jwt verification fails", `Bearer realm="http://` + host + `/v1/chat/completions", error="invalid_token"`, ""},
		{"missing", "/v1/chat/completions", "", 401, "Jwt is missing", `Bearer realm="http://` + host + `/v1/chat/completions"`, ""},
		{"expired", "/v1/chat/completions", signJWT(t, rsaKey, claims(func(c map[string]any) { c["exp"] = now - 3600 })), 401,
			"Jwt is expired", `Bearer realm="http://` + host + `/v1/chat/completions", error="invalid_token"`, ""},
		{"other issuer", "/v1/chat/completions", signJWT(t, rsaKey, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), 401,
			"Jwt issuer is not configured", `Bearer realm="http://` + host + `/v1/chat/completions", error="invalid_token"`, ""},
		{"other audience", "/v1/chat/completions", signJWT(t, rsaKey, claims(func(c map[string]any) { c["aud"] = "web" })), 403,
			"Audiences in Jwt are not allowed", `Bearer realm="http://` + host + `/v1/chat/completions", error="invalid_token"`, ""},
		{"not a JWT", "/v1/chat/completions", "abc", 401,
			"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections", `Bearer realm="http://` + host + `/v1/chat/completions", error="invalid_token"`, ""},
		{"optional, missing", "/open/x", "", 200, "", "", ""},
		{"optional, valid", "/open/x", signJWT(t, ecKey, claims(nil)), 200, "", "", "t1"},
		{"optional, invalid", "/open/x", signJWT(t, other, claims(nil)), 401, "Jwt verification fails",
			`Bearer realm="http://` + host + `/open/x", error="invalid_token"`, ""},
		{"no rule", "/other", signJWT(t, other, claims(nil)), 200, "", "", ""},
	}
	streams := 0
	for i, tt := range tests {
		var header []string
		if tt.token != "" {
			header = []string{"Authorization", "Bearer " + tt.token}
		}
		resp, body := s.do(t, "POST", tt.path, `{}`, header...)
		st := s.last(t, i+1)
		if resp.StatusCode != tt.status {
			t.Errorf("step %d (%s): status %d %q, want %d", i, tt.name, resp.StatusCode, body, tt.status)
		}
		if tt.body != "" {
			if string(body) != tt.body || resp.Header.Get("Www-Authenticate") != tt.challenge || resp.Header.Get("Content-Type") != "text/plain" {
				t.Errorf("step %d (%s): answer %q %q, want %q %q in text/plain", i, tt.name, body, resp.Header.Get("Www-Authenticate"), tt.body, tt.challenge)
			}
			if want := "jwt_authn_access_denied{" + strings.ReplaceAll(tt.body, " ", "_") + "}"; st.Details != want || len(st.Sent) > 0 {
				t.Errorf("step %d (%s): details %q, messages %q; want %q and no ext_proc stream", i, tt.name, st.Details, st.Sent, want)
			}
			continue
		}
		msgs := s.proc.messages(streams)
		streams++
		rh := msgs[0].GetRequestHeaders().GetHeaders()
		payload := msgs[0].GetMetadataContext().GetFilterMetadata()[jwtNamespace].GetFields()["jwt_payload"].GetStructValue().GetFields()
		if got := payload["tenant"].GetStringValue(); got != tt.tenant {
			t.Errorf("step %d (%s): jwt_payload %v, want tenant %q", i, tt.name, payload, tt.tenant)
		}
		if tt.tenant != "" && (payload["sub"].GetStringValue() != "user-42" || payload["exp"].GetNumberValue() != float64(now+600) ||
			len(payload["aud"].GetListValue().GetValues()) != 1) {
			t.Errorf("step %d (%s): jwt_payload %v, want the token's claims as JSON types", i, tt.name, payload)
		}
		_, kept := headerOf(rh, "authorization")
		if wantKept := tt.token != "" && tt.tenant == ""; kept != wantKept {
			t.Errorf("step %d (%s): authorization seen by the processor: %v, want %v (forward: false drops a verified token)", i, tt.name, kept, wantKept)
		}
	}
}

// A provider with a remote JWKS: the front does not fetch it and takes
// the token's payload as it is.
func TestJWTAuthnRemoteJWKSIsTrusted(t *testing.T) {
	c := &jwtauthnv3.JwtAuthentication{}
	if err := protojson.Unmarshal([]byte(`{"providers": {"idp": {
			"remote_jwks": {"http_uri": {"uri": "https://idp.example/jwks", "cluster": "idp", "timeout": "1s"}},
			"payload_in_metadata": "jwt_payload"}},
		"rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]}`), c); err != nil {
		t.Fatal(err)
	}
	s := newStand(t, forwarding(), passAll, nil, func(c2 *Config) { c2.JWTAuthn = c })
	tok := b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"sub":"u1"}`)) + "." + b64([]byte("not a signature"))
	if resp, body := s.do(t, "GET", "/v1/models", "", "Authorization", "Bearer "+tok); resp.StatusCode != 200 {
		t.Fatalf("status %d %q, want 200", resp.StatusCode, body)
	}
	s.last(t, 1)
	md := s.proc.messages(0)[0].GetMetadataContext().GetFilterMetadata()[jwtNamespace]
	if got := md.GetFields()["jwt_payload"].GetStructValue().GetFields()["sub"].GetStringValue(); got != "u1" {
		t.Errorf("jwt_authn metadata %v, want the payload", md)
	}
}

func TestJWTAuthnRefusesWhatItCannotImitate(t *testing.T) {
	for name, js := range map[string]string{
		"from_params":  `{"providers": {"idp": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}"}, "from_params": ["token"]}}}`,
		"requires_all": `{"providers": {"idp": {"remote_jwks": {"http_uri": {"uri": "https://x/", "cluster": "x", "timeout": "1s"}}}}, "rules": [{"match": {"prefix": "/"}, "requires": {"requires_all": {"requirements": [{"provider_name": "idp"}]}}}]}`,
		"regex match":  `{"providers": {"idp": {"remote_jwks": {"http_uri": {"uri": "https://x/", "cluster": "x", "timeout": "1s"}}}}, "rules": [{"match": {"safe_regex": {"regex": ".*"}}, "requires": {"provider_name": "idp"}}]}`,
		"HMAC key":     `{"providers": {"idp": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AQAB\"}]}"}}}}`,
	} {
		c := &jwtauthnv3.JwtAuthentication{}
		if err := protojson.Unmarshal([]byte(js), c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err := New(Config{Filter: filterConfig(), ExtProcAddr: "127.0.0.1:1", Upstream: "http://127.0.0.1:1", JWTAuthn: c})
		if err == nil {
			t.Errorf("%s: New accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// shippedHCM reads envoy.yaml, edited by replacing old with new, and
// returns its connection manager.
func shippedHCM(t *testing.T, old, new string) *hcmv3.HttpConnectionManager {
	t.Helper()
	root, err := proc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("envoy.yaml no longer contains %q", old)
	}
	b, err := envoy.ParseBootstrap([]byte(strings.Replace(string(data), old, new, 1)))
	if err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm
}

// FromConnectionManager takes envoy.yaml's client address settings and a
// jwt_authn filter before ext_proc; one after it is refused.
func TestFromConnectionManager(t *testing.T) {
	const extProc, router = "          - name: envoy.filters.http.ext_proc\n", "          - name: envoy.filters.http.router\n"
	jwt := `          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  remote_jwks: {http_uri: {uri: "https://idp.example/jwks", cluster: tokengate, timeout: 1s}}
                  payload_in_metadata: jwt_payload
              rules:
              - match: {prefix: /}
                requires: {provider_name: idp}
`
	var c Config
	if err := c.FromConnectionManager(shippedHCM(t, extProc, jwt+extProc)); err != nil {
		t.Fatal(err)
	}
	if !c.UseRemoteAddress || c.XFFNumTrustedHops != 0 || c.SkipXFFAppend || c.JWTAuthn.GetProviders()["idp"].GetPayloadInMetadata() != "jwt_payload" {
		t.Errorf("config %+v, want envoy.yaml's use_remote_address: true, no trusted hop, and the jwt_authn filter", c)
	}
	if err := c.FromConnectionManager(shippedHCM(t, router, jwt+router)); err == nil {
		t.Error("a jwt_authn filter after ext_proc was taken")
	}
	hcm := shippedHCM(t, "          xff_num_trusted_hops: 0\n", "          xff_num_trusted_hops: 2\n")
	hcm.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{{Name: "envoy.extensions.http.original_ip_detection.xff"}}
	if err := c.FromConnectionManager(hcm); err == nil {
		t.Error("original_ip_detection_extensions were taken")
	}
	if err := c.FromConnectionManager(shippedHCM(t, "          xff_num_trusted_hops: 0\n", "          xff_num_trusted_hops: 2\n")); err != nil || c.XFFNumTrustedHops != 2 {
		t.Errorf("xff_num_trusted_hops %d (%v), want 2", c.XFFNumTrustedHops, err)
	}
	// The shipped filter and connection manager make a front that sends
	// source.address.
	ep := shippedExtProc(t)
	if _, err := New(Config{Filter: ep, ExtProcAddr: "127.0.0.1:1", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Errorf("New refused envoy.yaml's filter: %v", err)
	}
}

func shippedExtProc(t *testing.T) *extprocv3.ExternalProcessor {
	t.Helper()
	b, err := envoy.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := envoy.ExtProcFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}
