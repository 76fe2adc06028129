package extproc

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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

// subscriptionKey returns the first present key among the policy's headers.
// For authorization only a Bearer token counts: other schemes carry no
// subscription key.
func subscriptionKey(hs headers, names []string) (string, bool) {
	for _, name := range names {
		v := strings.TrimSpace(hs.get(name))
		if name == "authorization" {
			scheme, token, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, "bearer") {
				continue
			}
			v = strings.TrimSpace(token)
		}
		if v != "" {
			return v, true
		}
	}
	return "", false
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
