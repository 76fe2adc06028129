package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestBadInputHeaders sends hostile or odd request headers: each gets a
// clear answer (counted, or 401 when there is no key), and the key that
// is counted is the one SPEC §4 names: the first present header of
// counter_key.header, the first value of a repeated one, and for
// authorization only a Bearer token.
func TestBadInputHeaders(t *testing.T) {
	r := startBadInput(t)
	huge := strings.Repeat("v", 60<<10)
	hugeKey := "bi-huge-key-" + strings.Repeat("k", 60<<10)
	many := []string{"api-key", "bi-many-headers"}
	for i := range 5000 {
		many = append(many, fmt.Sprintf("x-bi-filler-%04d", i), "v")
	}
	missing := biMove{name: "tokengate_requests_total", labels: []string{"policy", "bad", "decision", "missing_key"}, by: 1}
	counted := func(name, key string, headers ...string) biRow {
		return biRow{
			name: name, headers: headers, body: biChat(t, nil), status: http.StatusOK, upstream: true,
			charged: map[string]int64{key: biReported}, moves: []biMove{biAllowedOnce("bad")},
		}
	}
	unauthorized := func(name string, headers ...string) biRow {
		return biRow{
			name: name, headers: headers, body: biChat(t, nil),
			status: http.StatusUnauthorized, code: "missing_subscription_key", moves: []biMove{missing},
		}
	}
	rows := []biRow{
		counted("60 KiB header value", "bi-huge-value", "api-key", "bi-huge-value", "x-bi-huge", huge),
		counted("60 KiB key", hugeKey, "api-key", hugeKey),
		counted("5000 headers", "bi-many-headers", many...),
		counted("non-ASCII key", "ключ-🔑-clé", "api-key", "ключ-🔑-clé"),
		counted("non-ASCII value in another header", "bi-non-ascii-other", "api-key", "bi-non-ascii-other", "x-bi-note", "naïve — 日本語 ✓"),
		counted("key with invalid UTF-8 bytes", "bi-\xff\xfe-key", "api-key", "bi-\xff\xfe-key"),
		counted("authorization Bearer token", "bi-bearer-token", "authorization", "Bearer bi-bearer-token"),
		counted("authorization bearer, lower case and spaces", "bi-bearer-lower", "authorization", "bearer   bi-bearer-lower  "),
		counted("empty api-key falls through to authorization", "bi-after-empty", "api-key", "", "authorization", "Bearer bi-after-empty"),
		unauthorized("authorization Basic", "authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
		unauthorized("authorization without a scheme", "authorization", "sk-bi-raw-token-without-bearer"),
		unauthorized("authorization Bearer without a token", "authorization", "Bearer"),
		unauthorized("authorization Bearer and blanks", "authorization", "Bearer    "),
		unauthorized("empty api-key alone", "api-key", ""),
	}
	// Duplicate api-key headers: the first wins, the second is charged
	// nothing.
	dup := counted("duplicate api-key headers", "bi-dup-first", "api-key", "bi-dup-first", "api-key", "bi-dup-second")
	dup.charged["bi-dup-second"] = 0
	rows = append(rows, dup)

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) { r.run(t, r.Front, r.URL, row) })
	}
}
