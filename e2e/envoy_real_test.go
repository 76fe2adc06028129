package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// TestRealEnvoy's companions for issue 20's three gaps, run against the
// Envoy binary in ENVOY_BIN (its version picks the expectations, as the
// front's EnvoyVersion does): local replies, bodies ending in HTTP/2
// trailers, STREAMED chunks. Skipped, saying so, without ENVOY_BIN.

func realEnvoy(t *testing.T) (bin string, v front.EnvoyVersion, release string) {
	t.Helper()
	bin = os.Getenv("ENVOY_BIN")
	if bin == "" {
		t.Skip("ENVOY_BIN not set: real-Envoy test skipped")
	}
	needBinaries(t)
	v, release, err := harness.EnvoyBinaryVersion(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Envoy %s: the front's line %v", release, v)
	return bin, v, release
}

func TestRealEnvoyLocalReplies(t *testing.T) {
	bin, v, release := realEnvoy(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evLocalReplyConfig, FakeClock: labClock, RouteTimeout: 300 * time.Millisecond})
	s.StartEnvoy(bin)
	body := evLocalReplyBody(t)
	source, charge := "none", 0.0
	if !v.LocalRepliesReachProcessor() {
		source, charge = "unanswered", float64(evLocalReplyWords+7)
	}
	check := func(step string, status int, headers ...string) {
		t.Helper()
		before, beforeSettled := evReadCharges(t, s, "unanswered-prompt"), evSettled(t, s, "unanswered-prompt")
		resp, got := evPost(t, evPlainClient, s.URL, "/v1/chat/completions", body, headers...)
		if resp.StatusCode != status {
			t.Errorf("%s: client got %d %q, want the router's %d", step, resp.StatusCode, got, status)
		}
		evWaitSettled(t, s, "unanswered-prompt", beforeSettled+1)
		d := evReadCharges(t, s, "unanswered-prompt").delta(before)
		if d[source] != charge {
			t.Errorf("%s under Envoy %s: charged %v, want %g under source %q", step, release, d, charge, source)
		}
	}
	check("route timeout", http.StatusGatewayTimeout, "api-key", "real-timeout", "x-mock-latency", "5s")
	if err := s.Mock.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mock.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	check("upstream unreachable", http.StatusServiceUnavailable, "api-key", "real-unreachable")
}

func TestRealEnvoyTrailers(t *testing.T) {
	bin, _, _ := realEnvoy(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evTrailersConfig, FakeClock: labClock})
	s.StartEnvoy(bin)
	chat := func(model string, extra map[string]any) []byte {
		return chatJSON(t, model, []harness.Message{{Role: "user", Content: evOneTokenWords(100)}}, extra)
	}
	// No hook into a real Envoy: the body follows its headers 300 ms
	// later, well after tokengate's reply, so Envoy sends it without
	// end_of_stream (a body in time would go with it, and must be
	// charged the same anyway).
	clients := map[string]*http.Client{
		"h2 without trailers": harness.H2CClient(30 * time.Second),
		"h2 trailers":         {Transport: &evTrailerTransport{h2: harness.H2CClient(0).Transport, wait: 300 * time.Millisecond}, Timeout: 30 * time.Second},
	}
	for name, client := range clients {
		t.Run(name, func(t *testing.T) {
			key := func(row string) string { return "real-" + strings.ReplaceAll(name, " ", "-") + "-" + row }
			resp, b := evPost(t, client, s.URL, "/openai/v1/chat/completions", chat("gpt-4o", map[string]any{"max_tokens": 500}),
				"api-key", key("strict"), "x-mock-completion-tokens", "400")
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
				t.Fatalf("strict, first request: %s %d %s", resp.Proto, resp.StatusCode, b)
			}
			resp, b = evPost(t, client, s.URL, "/openai/v1/chat/completions", chat("gpt-4o", map[string]any{"max_tokens": 800}), "api-key", key("strict"))
			wantJSONError(t, "strict reservation", resp, b, http.StatusTooManyRequests, "rate_limit_exceeded")
			resp, b = evPost(t, client, s.URL, "/v1/chat/completions", chat("gpt-4o-mini", nil), "api-key", key("mini"))
			wantJSONError(t, "model policy", resp, b, http.StatusTooManyRequests, "rate_limit_exceeded")
			before, beforeSettled := evReadCharges(t, s, "open"), evSettled(t, s, "open")
			resp, b = evPost(t, client, s.URL, "/v1/chat/completions", chat("gpt-4o", map[string]any{"stream": true}),
				"api-key", key("stream"), "x-mock-completion-tokens", "9")
			u := evStreamUsage(t, b)
			if resp.StatusCode != http.StatusOK || u == nil {
				t.Fatalf("stream: %d, usage %v: stream_options.include_usage was not injected", resp.StatusCode, u)
			}
			evWaitSettled(t, s, "open", beforeSettled+1)
			if d := evReadCharges(t, s, "open").delta(before); d["reported"] != float64(u.Total) || len(d) != 1 {
				t.Errorf("stream: charged %v, want the reported %+v", d, u)
			}
		})
	}
}

func TestRealEnvoyStreamed(t *testing.T) {
	bin, _, _ := realEnvoy(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evStreamedE2EConfig, FakeClock: labClock})
	s.StartEnvoy(bin)
	body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Tell me about the fox."}]}`)
	for i, headers := range [][]string{
		{"x-mock-completion-tokens", "40", "x-mock-chunk-delay", "5ms"}, // events apart: pipelined chunks
		{"x-mock-completion-tokens", "40"},                              // events at once: coalesced, or the whole stream in one message
	} {
		t.Run(fmt.Sprint(headers), func(t *testing.T) {
			before, beforeSettled := evReadCharges(t, s, "streamed"), evSettled(t, s, "streamed")
			resp, got := evPost(t, evPlainClient, s.URL, "/v1/chat/completions", body, append([]string{"api-key", fmt.Sprintf("real-streamed-%d", i)}, headers...)...)
			u := evStreamUsage(t, got)
			if resp.StatusCode != http.StatusOK || u == nil || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
				t.Fatalf("client got %d, usage %v, stream %q", resp.StatusCode, u, got)
			}
			evWaitSettled(t, s, "streamed", beforeSettled+1)
			if d := evReadCharges(t, s, "streamed").delta(before); d["reported"] != float64(u.Total) || len(d) != 1 {
				t.Errorf("charged %v, want exactly the reported %+v", d, u)
			}
		})
	}
}
