package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// TestQueryKeyAppearsNowhere: Gemini's callers may put their key in the
// path's query (?key=…). tokengate keys by it, under a policy that names no
// header, and the raw value appears nowhere it writes: not in its debug
// log (which logs decisions, the API and unreadable bodies), not in
// /metrics, not in the admin API's answers.
func TestQueryKeyAppearsNowhere(t *testing.T) {
	needBinaries(t)
	const secret = "AIzaSy-secret-query-9191"
	cfg := `store: {backend: memory}
policies:
- name: lab
  tokens_per_minute: 100000
`
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: labClock})
	for _, body := range []string{
		`{"contents":[{"role":"user","parts":[{"text":"What time is it in Lisbon?"}]}]}`,
		`{"contents":[],"generationConfig":{"maxOutputTokens":"many"}}`, // an unreadable body: a debug line of its own
	} {
		req := s.Request("POST", "/v1beta/models/gemini-2.5-flash:generateContent?alt=json&key="+secret, []byte(body))
		if resp, got := s.Do(req); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("gemini request: %d %s", resp.StatusCode, got)
		}
	}
	// Keyed by it: the admin API finds the key's window, which holds the
	// first request's charge.
	admin := s.Tokengate.Field("admin")
	usage := adminCLI(t, admin, "usage", "--key", secret)
	if !strings.Contains(usage, "usedTokens") {
		t.Fatalf("tokengate admin usage --key: %q, want the key's window in use", usage)
	}
	// Both requests' lines reach the log (a pipe) before the scan.
	harness.Eventually(t, 10*time.Second, func() error {
		log := s.Tokengate.Stderr()
		if strings.Count(log, `"api": "gemini_generate_content"`) < 2 || !strings.Contains(log, "request body not readable") {
			return fmt.Errorf("the debug log has not both requests' lines yet:\n%s", log)
		}
		return nil
	})
	seen := s.Tokengate.Stderr() + scrapeAll(t, admin) + usage + adminCLI(t, admin, "list")
	if strings.Contains(seen, secret) || strings.Contains(seen, "secret-query") {
		t.Fatalf("the raw query key appears in what tokengate wrote:\n%s", seen)
	}
}
