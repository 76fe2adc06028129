package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestSDKRetriesAfter429 spends the lab policy's window, moves tokengate's
// running fake clock to 1.5 s before the spent second leaves the window,
// and checks that the OpenAI SDK, refused with 429, waits what
// retry-after-ms says and then gets its answer, on its own.
func TestSDKRetriesAfter429(t *testing.T) {
	ctx := context.Background()
	s, err := startStack(ctx, stackOptions{
		tokensPerMinute: 500,
		fakeClock:       "2030-01-01T00:00:00Z", clockRuns: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Error(err)
		}
	})

	spend := mustOptions(t, "run", "--url", s.url, "--key", "sdk-test", "-n", "8")
	spent, err := runHTTPLab(ctx, spend, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if last := spent[len(spent)-1]; last.Status != 429 {
		t.Fatalf("spending the window: run %d answered %d, want 429", last.Run, last.Status)
	}
	// Every charge fell in the clock's current second or the one before;
	// the current one leaves the window 60 s after it began.
	now := advanceClock(t, s, 0)
	advanceClock(t, s, now.Truncate(time.Second).Add(58500*time.Millisecond).Sub(now))

	var out bytes.Buffer
	results, err := runSDKLab(ctx, mustOptions(t, "sdk", "--url", s.url, "--key", "sdk-test", "-n", "1"), &out)
	t.Logf("tokenlab sdk:\n%s", &out)
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	if r.Status != 200 || r.Total == 0 {
		t.Fatalf("final status %d with %d tokens, want 200 with usage", r.Status, r.Total)
	}
	if len(r.Attempts) < 2 {
		t.Fatalf("%d attempts, want a 429 and a retry", len(r.Attempts))
	}
	first, retry := r.Attempts[0], r.Attempts[1]
	ms := first.retryAfterMs()
	if first.Status != 429 || ms <= 0 || ms > 2000 {
		t.Fatalf("attempt 1: %d with retry-after-ms %q, want 429 asking for 0–2 s", first.Status, first.RetryAfterMs)
	}
	if first.RetryAfter != "1" && first.RetryAfter != "2" {
		t.Errorf("attempt 1: retry-after %q, want the ms rounded up to whole seconds", first.RetryAfter)
	}
	if want := time.Duration(ms) * time.Millisecond; retry.Waited < want {
		t.Errorf("attempt 2 was sent %v after the 429, before the %v asked for", retry.Waited, want)
	}
	if retry.Status != 200 {
		t.Errorf("attempt 2: %d, want 200 once the window moved on", retry.Status)
	}
	for _, want := range []string{"run 1, attempt 1: 429", "run 1, attempt 2: 200, sent after the SDK waited", "1 run retried by the SDK, 1 of them succeeded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func mustOptions(t *testing.T, command string, args ...string) options {
	t.Helper()
	var stderr bytes.Buffer
	o, err := parseFlags(command, args, &stderr)
	if err != nil {
		t.Fatalf("flags %q: %v\n%s", args, err, &stderr)
	}
	return o
}

// advanceClock moves tokengate's fake clock by d (0 reads it) and returns
// its new time.
func advanceClock(t *testing.T, s *stack, d time.Duration) time.Time {
	t.Helper()
	resp, err := http.Post("http://"+s.admin+"/debug/clock?advance="+url.QueryEscape(d.String()), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("advance clock by %v: %d %q %v", d, resp.StatusCode, body, err)
	}
	now, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	return now
}
