package extproc

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerMap reads Envoy's header list; the first of repeated names wins.
// Envoy sends values in raw_value (bytes) today and in value before.
func headerMap(h *corev3.HeaderMap) map[string]string {
	hs := h.GetHeaders()
	m := make(map[string]string, len(hs))
	for _, v := range hs {
		k := strings.ToLower(v.GetKey())
		if _, seen := m[k]; seen {
			continue
		}
		if raw := v.GetRawValue(); len(raw) > 0 {
			m[k] = string(raw)
		} else {
			m[k] = v.GetValue()
		}
	}
	return m
}

// subscriptionKey returns the first present key among the policy's headers.
// For authorization only a Bearer token counts: other schemes carry no
// subscription key.
func subscriptionKey(hm map[string]string, names []string) (string, bool) {
	for _, name := range names {
		v := strings.TrimSpace(hm[name])
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

// hashKey is the only form in which a key is kept, logged or exported.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
