package extproc

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/policy"
)

// headers is Envoy's header list. Lookups scan it: a request has a few
// dozen headers and tokengate reads three or four, which costs less than
// building a map for every message.
type headers []*corev3.HeaderValue

// get returns the first value of name (lower case, as Envoy sends names).
// Envoy sends values in raw_value (bytes) today and in value before.
func (hs headers) get(name string) string {
	for _, v := range hs {
		if len(v.GetKey()) == len(name) && strings.EqualFold(v.GetKey(), name) {
			if raw := v.GetRawValue(); len(raw) > 0 {
				return string(raw)
			}
			return v.GetValue()
		}
	}
	return ""
}

// keySourcesFor are the headers the request's key is read from under pol:
// the policy's, or when the policy names no source, its API's own
// (llm.KeySources).
func (p *processor) keySourcesFor(pol *policy.Policy) []string {
	if pol.DefaultKeys() {
		if s := llm.KeySources(p.route.API.Provider()); s != nil {
			return s
		}
	}
	return pol.KeyHeaders()
}

// subscriptionKey returns the first present key among the sources: header
// names, or llm.QueryKey for the query's key parameter (Gemini's). For
// authorization, a Bearer token is the key, and a SigV4 signature's
// access key ID (Bedrock's callers); other schemes carry no key.
func subscriptionKey(hs headers, sources []string) (string, bool) {
	for _, name := range sources {
		var v string
		switch name {
		case llm.QueryKey:
			v = queryParam(hs.get(":path"), "key")
		case "authorization":
			v = authorizationKey(hs.get(name))
		default:
			v = strings.TrimSpace(hs.get(name))
		}
		if v != "" {
			return v, true
		}
	}
	return "", false
}

// authorizationKey reads the key of an authorization header: a Bearer
// token, or the access key ID of an AWS SigV4 signature
// (Credential=AKID/date/region/service/aws4_request).
func authorizationKey(v string) string {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	switch {
	case !ok:
		return ""
	case strings.EqualFold(scheme, "bearer"):
		return strings.TrimSpace(rest)
	case scheme == "AWS4-HMAC-SHA256":
		for _, part := range strings.Split(rest, ",") {
			if cred, ok := strings.CutPrefix(strings.TrimSpace(part), "Credential="); ok {
				id, _, _ := strings.Cut(cred, "/")
				return id
			}
		}
	}
	return ""
}

// queryParam returns a query parameter of a raw request path, decoded.
func queryParam(path, name string) string {
	_, query, ok := strings.Cut(path, "?")
	if !ok {
		return ""
	}
	if i := strings.IndexByte(query, '#'); i >= 0 {
		query = query[:i]
	}
	values, _ := url.ParseQuery(query)
	vs := values[name]
	if len(vs) != 1 {
		// Servers differ on which of a repeated parameter they read. A
		// key tokengate read otherwise than the upstream would be a fresh
		// budget per made-up value: a repeated key is no key.
		return ""
	}
	return vs[0]
}

// HashKey is the only form in which a key is kept, logged or exported:
// the hex SHA-256 of its value, or with a salt the hex HMAC-SHA256 keyed by
// the salt, so that hashes of short keys cannot be reversed by running a
// dictionary through SHA-256.
func HashKey(salt []byte, key string) string {
	if len(salt) == 0 {
		sum := sha256.Sum256([]byte(key))
		return hex.EncodeToString(sum[:])
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil))
}
