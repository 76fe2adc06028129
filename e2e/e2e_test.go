package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// labClock is where the lab's fake clock starts: a quarter second into a
// second, so retry-after has to round up a fraction.
const labClock = "2026-01-05T10:00:00.25Z"

// labLimit is the lab policy's tokens per minute.
const labLimit = 500

var labMessages = []harness.Message{
	{Role: "system", Content: "You are a sarcastic unhelpful assistant."},
	{Role: "user", Content: "Can you tell me the time, please?"},
}

func labConfig(limit int, estimate bool) string {
	return fmt.Sprintf(`store: {backend: bbolt, bbolt: {path: "{{DB}}", flush_interval: 100ms}}
policies:
- name: lab
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
  estimate_prompt_tokens: %v
`, limit, estimate)
}

func startLab(t *testing.T, limit int, estimate bool) *harness.Stack {
	t.Helper()
	needBinaries(t)
	return harness.StartStack(t, harness.StackOptions{ConfigYAML: labConfig(limit, estimate), FakeClock: labClock})
}

// chat200 sends the lab messages with key and fails unless it is let
// through; it returns the response and the tokens it used.
func chat200(t *testing.T, s *harness.Stack, step, key string) (*http.Response, int) {
	t.Helper()
	resp, body := s.Chat(key, labMessages...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, want 200; body %s", step, resp.StatusCode, body)
	}
	return resp, usageTotal(t, step, body)
}

func TestLab(t *testing.T) {
	s := startLab(t, labLimit, false)
	runLab(t, s, true)
}

// runLab is the lab scenario: ten identical chat completions against a
// 500 tokens/min budget, then the window sliding past the charges.
func runLab(t *testing.T, s *harness.Stack, viaFront bool) {
	charged, refused := 0, 0
	for i := 1; i <= 10; i++ {
		step := fmt.Sprintf("request %d (%d tokens charged)", i, charged)
		resp, body := s.Chat("lab-key", labMessages...)
		if charged >= labLimit {
			wantJSONError(t, step, resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
			// Every charge is in the bucket of 10:00:00 (the clock reads
			// 10:00:00.25) and leaves the window at 10:01:00.
			wantRetryAfter(t, step, resp.Header, 60, 59750)
			refused++
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d below the limit, want 200; body %s", step, resp.StatusCode, body)
		}
		charged += usageTotal(t, step, body)
		wantRateHeaders(t, step, resp.Header, labLimit, charged)
	}
	if refused == 0 {
		t.Fatalf("ten requests charged %d tokens and none was refused", charged)
	}
	t.Logf("lab: %d requests let through charged %d tokens, %d refused", 10-refused, charged, refused)
	if viaFront {
		checkRecords(t, s.Front, 10)
	}

	s.Advance(59700 * time.Millisecond) // 10:00:59.95
	resp, body := s.Chat("lab-key", labMessages...)
	wantJSONError(t, "at 10:00:59.95", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	wantRetryAfter(t, "at 10:00:59.95", resp.Header, 1, 50)

	s.Advance(50 * time.Millisecond) // 10:01:00: the charges have left
	chat200(t, s, "at 10:01:00", "lab-key")
}

// checkRecords checks what only the front can see: tokengate spoke the
// protocol as current Envoy expects, and refusals happened before the
// upstream was called.
func checkRecords(t *testing.T, f *front.Front, n int) {
	t.Helper()
	recs, err := f.WaitCompleted(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		step := fmt.Sprintf("record %d (%s %s → %d)", i+1, r.Method, r.Path, r.Status)
		if r.ValueFieldHeaders > 0 {
			t.Errorf("%s: %d header mutations use value, not raw_value: current Envoy would send them empty", step, r.ValueFieldHeaders)
		}
		if r.RejectedMutations > 0 || r.Spurious > 0 || r.TimedOut || r.GRPCError != "" || r.StreamLeftOpen {
			t.Errorf("%s: protocol trouble: %+v", step, r)
		}
		switch r.Status {
		case http.StatusTooManyRequests:
			if !r.Immediate || r.ImmediatePhase != "request_headers" || r.UpstreamCalled {
				t.Errorf("%s: want an immediate response at request headers, before the upstream: %+v", step, r)
			}
		case http.StatusOK:
			if tg := r.Metadata.GetFields()["tokengate"].GetStructValue(); tg.GetFields()["decision"] == nil {
				t.Errorf("%s: dynamic metadata %v has no tokengate.decision", step, r.Metadata)
			}
		}
	}
}

func TestKeysAreIndependentAndRequired(t *testing.T) {
	s := startLab(t, labLimit, false)
	for i := 1; ; i++ {
		resp, body := s.Chat("key-a", labMessages...)
		if resp.StatusCode == http.StatusTooManyRequests {
			break
		}
		if resp.StatusCode != http.StatusOK || i > 20 {
			t.Fatalf("key-a request %d: status %d; body %s", i, resp.StatusCode, body)
		}
	}
	resp, used := chat200(t, s, "key-b after key-a is spent", "key-b")
	wantRateHeaders(t, "key-b", resp.Header, labLimit, used)

	resp, body := s.Chat("", labMessages...)
	wantJSONError(t, "no api-key", resp, body, http.StatusUnauthorized, "missing_subscription_key")
}

func TestUnknownPathPassesUncounted(t *testing.T) {
	s := startLab(t, labLimit, false)
	chat200(t, s, "key-x first chat", "key-x")
	req := s.Request("GET", "/v1/models", nil)
	req.Header.Set("api-key", "key-x")
	resp, body := s.Do(req)
	// openai-mock answers paths it does not serve with its own JSON 404,
	// so this shows the call went through to the upstream.
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "Invalid URL") {
		t.Fatalf("GET /v1/models: %d %s, want openai-mock's 404", resp.StatusCode, body)
	}
	resp, _ = chat200(t, s, "key-x second chat", "key-x")
	afterModels := remaining(t, "key-x", resp.Header)

	// The same two chats on a key that never listed models.
	chat200(t, s, "key-y first chat", "key-y")
	resp, _ = chat200(t, s, "key-y second chat", "key-y")
	if control := remaining(t, "key-y", resp.Header); afterModels != control {
		t.Errorf("remaining after GET /v1/models %d, without it %d: the unknown path was counted", afterModels, control)
	}
	recs, err := s.Front.WaitCompleted(5, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[1]; r.Immediate || !r.UpstreamCalled {
		t.Errorf("GET /v1/models record %+v, want passed to the upstream", r)
	}
}

func TestEstimateRefusesBeforeUpstream(t *testing.T) {
	s := startLab(t, 100, true)
	before, _ := s.MockCalls()
	long := strings.Repeat("hello ", 1000) // about 1000 tokens
	resp, body := s.Chat("key-e", harness.Message{Role: "user", Content: long})
	wantJSONError(t, "1000-token prompt on a 100-token budget", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	if after, _ := s.MockCalls(); after != before {
		t.Errorf("openai-mock calls went from %d to %d: the refused prompt reached the upstream", before, after)
	}
	recs, err := s.Front.WaitCompleted(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[0]; r.ImmediatePhase != "request_body" || r.UpstreamCalled {
		t.Errorf("record %+v, want an immediate response at the request body", r)
	}
}

// secondTokengateExit bounds the run of a tokengate that cannot take the
// bbolt file: a hang, not a slow start, is what it catches.
const secondTokengateExit = 15 * time.Second

func TestRestartKeepsUsage(t *testing.T) {
	s := startLab(t, labLimit, false)
	charged := 0
	for i := 1; i <= 2; i++ {
		_, used := chat200(t, s, fmt.Sprintf("chat %d before restart", i), "key-r")
		charged += used
	}
	if code := s.StopTokengate(); code != 0 {
		t.Fatalf("tokengate exited %d on SIGTERM, want 0", code)
	}
	s.StartTokengate()
	resp, used := chat200(t, s, "chat after restart", "key-r")
	wantRemaining(t, "after restart", resp.Header, labLimit, charged+used)

	// The second process waits boltstore.DefaultOpenTimeout (1 s) for the
	// file lock and exits. What is checked is that it exits rather than
	// hangs: the bound leaves a loaded machine room to start a process,
	// and the time it took is a figure for the log.
	second := s.LaunchTokengate()
	launched := time.Now()
	code, err := second.Wait(secondTokengateExit)
	if err != nil {
		t.Fatalf("a second tokengate on the same bbolt file: %v (want an exit, after its 1 s wait for the lock, within %v)", err, secondTokengateExit)
	}
	t.Logf("a second tokengate on the same bbolt file exited %d after %v", code, time.Since(launched).Round(time.Millisecond))
	if code == 0 || !strings.Contains(second.Stderr(), "in use by another process") {
		t.Errorf("second tokengate exited %d with stderr %q, want non-zero and \"in use by another process\"", code, second.Stderr())
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	needBinaries(t)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	cfg := strings.Replace(labConfig(labLimit, false), "tokens_per_minute:", "tokens_per_minut:", 1)
	cfg = strings.ReplaceAll(cfg, "{{DB}}", filepath.Join(t.TempDir(), "tokengate.db"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := harness.Launch(t, bins["tokengate"], harness.TokengateArgs(path, "")...)
	code, err := p.Wait(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 2 || !strings.Contains(p.Stderr(), "tokens_per_minut") {
		t.Errorf("exit %d, stderr %q: want 2 and the misspelt field named", code, p.Stderr())
	}
}

func TestRealEnvoy(t *testing.T) {
	bin := os.Getenv("ENVOY_BIN")
	if bin == "" {
		t.Skip("ENVOY_BIN not set: real-Envoy test skipped")
	}
	s := startLab(t, labLimit, false)
	s.StartEnvoy(bin)
	runLab(t, s, false)
}
