package front

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// jwtNamespace is where jwt_authn writes its dynamic metadata: a fixed
// name, whatever the filter is called (filter.cc setExtractedData).
const jwtNamespace = "envoy.filters.http.jwt_authn"

// jwtAuthn imitates what a jwt_authn filter before ext_proc does (see
// ENVOY.md): the requirement of the first rule matching the path, the
// token from the provider's headers, issuer, time, audience and (with a
// local_jwks) RS256 or ES256 signature checks, the payload in dynamic
// metadata on success, Envoy's 401 (403 for audiences) on failure.
type jwtAuthn struct {
	providers map[string]*jwtProvider
	rules     []jwtRule
}

type jwtProvider struct {
	cfg  *jwtauthnv3.JwtProvider
	keys []crypto.PublicKey // nil for a remote JWKS: not fetched, the signature is not checked
}

// jwtRule is a rule's prefix or path match and its requirement: any of
// providers; a missing token, or a failed one, allowed or not.
type jwtRule struct {
	prefix, path              string
	providers                 []string
	allowMissing, allowFailed bool
}

// unset lists the fields set in m but not supported.
func unset(m protoreflect.ProtoMessage, where string, supported ...string) (out []string) {
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(supported, string(fd.Name())) {
			out = append(out, where+string(fd.Name()))
		}
		return true
	})
	return out
}

func newJWTAuthn(c *jwtauthnv3.JwtAuthentication) (*jwtAuthn, error) {
	bad := unset(c, "", "providers", "rules", "stat_prefix")
	j := &jwtAuthn{providers: map[string]*jwtProvider{}}
	var all []string
	for name, p := range c.GetProviders() {
		bad = append(bad, unset(p, name+".", "issuer", "audiences", "forward", "from_headers",
			"payload_in_metadata", "clock_skew_seconds", "local_jwks", "remote_jwks")...)
		jp := &jwtProvider{cfg: p}
		if src := p.GetLocalJwks(); src != nil {
			if err := jp.parseJWKS(src.GetInlineString() + string(src.GetInlineBytes())); err != nil {
				return nil, fmt.Errorf("jwt_authn: %s.local_jwks (inline, RSA or EC P-256 keys): %w", name, err)
			}
		}
		j.providers[name] = jp
		all = append(all, name)
	}
	slices.Sort(all)
	for i, r := range c.GetRules() {
		bad = append(bad, unset(r.GetMatch(), fmt.Sprintf("rules[%d].match.", i), "prefix", "path")...)
		rule := jwtRule{prefix: r.GetMatch().GetPrefix(), path: r.GetMatch().GetPath()}
		items := []*jwtauthnv3.JwtRequirement{r.GetRequires()}
		if any := r.GetRequires().GetRequiresAny(); any != nil {
			items = any.GetRequirements()
		}
		for _, it := range items {
			switch {
			case j.providers[it.GetProviderName()] != nil:
				rule.providers = append(rule.providers, it.GetProviderName())
			case it.GetAllowMissing() != nil:
				rule.allowMissing = true
			case it.GetAllowMissingOrFailed() != nil:
				rule.allowFailed = true
			default:
				bad = append(bad, fmt.Sprintf("rules[%d] requirement %v (provider_name, allow_missing, allow_missing_or_failed, requires_any of them)", i, it))
			}
		}
		if len(rule.providers) == 0 {
			rule.providers = all // allow_missing(_or_failed) alone: every provider's tokens
		}
		j.rules = append(j.rules, rule)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("jwt_authn settings the front cannot imitate: %s", strings.Join(bad, ", "))
	}
	return j, nil
}

// parseJWKS reads a JSON Web Key Set of RSA and EC P-256 public keys.
func (p *jwtProvider) parseJWKS(data string) error {
	set := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(data), set); err != nil {
		return err
	}
	for _, v := range set.GetFields()["keys"].GetListValue().GetValues() {
		f := v.GetStructValue().GetFields()
		b64 := func(name string) []byte {
			b, _ := base64.RawURLEncoding.DecodeString(f[name].GetStringValue())
			return b
		}
		var key crypto.PublicKey
		var err error
		switch kty := f["kty"].GetStringValue(); {
		case kty == "RSA":
			key = &rsa.PublicKey{N: new(big.Int).SetBytes(b64("n")), E: int(new(big.Int).SetBytes(b64("e")).Int64())}
		case kty == "EC" && f["crv"].GetStringValue() == "P-256":
			key, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, b64("x")...), b64("y")...))
		default:
			err = fmt.Errorf("key of kty %q", kty)
		}
		if err != nil {
			return err
		}
		p.keys = append(p.keys, key)
	}
	if len(p.keys) == 0 {
		return errors.New("no keys")
	}
	return nil
}

// check runs the filter on the request headers h at now: the dynamic
// metadata it writes (nil: none), or its local reply.
func (j *jwtAuthn) check(h *headerMap, now time.Time) (*structpb.Struct, *localReply) {
	path, _ := h.get(":path")
	exact, _, _ := strings.Cut(path, "?")
	i := slices.IndexFunc(j.rules, func(r jwtRule) bool {
		return r.path != "" && exact == r.path || r.path == "" && strings.HasPrefix(path, r.prefix)
	})
	if i < 0 {
		return nil, nil // no requirement: the filter does nothing
	}
	rule, failure, missing := j.rules[i], "", true
	for _, name := range rule.providers {
		p := j.providers[name]
		tok, from, ok := p.extract(h)
		if !ok {
			continue
		}
		missing = false
		payload, err := p.verify(tok, now)
		if err != nil {
			if failure == "" {
				failure = err.Error()
			}
			continue
		}
		if !p.cfg.GetForward() {
			h.del(from)
		}
		if k := p.cfg.GetPayloadInMetadata(); k != "" {
			return &structpb.Struct{Fields: map[string]*structpb.Value{k: structpb.NewStructValue(payload)}}, nil
		}
		return nil, nil
	}
	switch {
	case rule.allowFailed, missing && rule.allowMissing:
		return nil, nil
	case missing:
		failure = "Jwt is missing"
	}
	// filter.cc onComplete: the status as body, a WWW-Authenticate header.
	proto, _ := h.get("x-forwarded-proto")
	host, _ := h.get(":authority")
	realm := `Bearer realm="` + proto + "://" + host + path[:min(len(path), 256)] + `"`
	if !missing {
		realm += `, error="invalid_token"`
	}
	code := 401
	if failure == "Audiences in Jwt are not allowed" {
		code = 403
	}
	return nil, &localReply{status: code, body: []byte(failure), plain: []header{{"www-authenticate", realm}},
		details: "jwt_authn_access_denied{" + strings.ReplaceAll(failure, " ", "_") + "}"}
}

// extract finds the provider's token in h: from_headers, else Envoy's
// default "Authorization: Bearer" (whose access_token query parameter the
// front does not read).
func (p *jwtProvider) extract(h *headerMap) (token, from string, ok bool) {
	locs := p.cfg.GetFromHeaders()
	if len(locs) == 0 {
		locs = []*jwtauthnv3.JwtHeader{{Name: "authorization", ValuePrefix: "Bearer "}}
	}
	for _, l := range locs {
		name := strings.ToLower(l.GetName())
		for _, v := range h.values(name) {
			pre := l.GetValuePrefix()
			i := strings.Index(v, pre)
			if i < 0 {
				continue
			}
			// extractJWT: from the first base64url character after the prefix.
			if k := strings.IndexAny(v[i+len(pre):], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."); pre != "" && k >= 0 {
				v = v[i+len(pre)+k:]
			}
			return v, name, true
		}
	}
	return "", "", false
}

// verify checks tok as Envoy does (jwt_verify_lib) and returns its
// payload; the error is Envoy's status text.
func (p *jwtProvider) verify(tok string, now time.Time) (*structpb.Struct, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	}
	var header, payload structpb.Struct
	for i, out := range []*structpb.Struct{&header, &payload} {
		what := [...]string{"header", "payload"}[i]
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[i], "="))
		if err != nil {
			return nil, fmt.Errorf("Jwt %s is an invalid Base64url encoded", what)
		}
		if protojson.Unmarshal(b, out) != nil {
			return nil, fmt.Errorf("Jwt %s is an invalid JSON", what)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil {
		return nil, errors.New("Jwt signature is an invalid Base64url encoded")
	}
	claims, t, skew := payload.GetFields(), float64(now.Unix()), float64(60)
	if s := p.cfg.GetClockSkewSeconds(); s > 0 {
		skew = float64(s)
	}
	aud := []string{claims["aud"].GetStringValue()}
	for _, v := range claims["aud"].GetListValue().GetValues() {
		aud = append(aud, v.GetStringValue())
	}
	switch {
	case p.cfg.GetIssuer() != "" && claims["iss"].GetStringValue() != p.cfg.GetIssuer():
		return nil, errors.New("Jwt issuer is not configured")
	case claims["exp"] != nil && t > claims["exp"].GetNumberValue()+skew:
		return nil, errors.New("Jwt is expired")
	case claims["nbf"] != nil && claims["nbf"].GetNumberValue() > t+skew:
		return nil, errors.New("Jwt not yet valid")
	case len(p.cfg.GetAudiences()) > 0 && !slices.ContainsFunc(aud, func(a string) bool { return a != "" && slices.Contains(p.cfg.GetAudiences(), a) }):
		return nil, errors.New("Audiences in Jwt are not allowed")
	case p.keys == nil:
		return &payload, nil
	}
	// Any key of the algorithm may verify it: kid is not read, and a
	// token no key fits fails as one no key verifies.
	alg, sum := header.GetFields()["alg"].GetStringValue(), sha256.Sum256([]byte(parts[0]+"."+parts[1]))
	for _, key := range p.keys {
		switch pub := key.(type) {
		case *rsa.PublicKey:
			if alg == "RS256" && rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil {
				return &payload, nil
			}
		case *ecdsa.PublicKey:
			if alg == "ES256" && len(sig) == 64 && ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				return &payload, nil
			}
		}
	}
	return nil, errors.New("Jwt verification fails")
}
