package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The ext_proc stream cut by its client mid-request: Envoy resets it when
// the downstream client goes away (TestStreamClientDisconnects drives
// that through the front on the memory store). Here a raw ext_proc client
// resets it at chosen points, on the bbolt and the Redis store, and the
// request must be settled exactly once with no reservation left behind.
const (
	cutMax      = 500 // max_tokens: what strict mode holds besides the prompt
	cutContent  = "Tell me a long story about a fox who cut the line."
	cutReply    = "Once upon a time, a quick brown fox"
	cutRetry    = time.Second // retry_interval: a tripped breaker stays open this long
	cutDialWait = 200 * time.Millisecond
	cutReplyIn  = 5 * time.Second // bounds one raw exchange
)

func cutConfig(store string) string {
	return store + `
policies:
- name: cut
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
`
}

func TestFaultClientCutsStream(t *testing.T) {
	needBinaries(t)
	t.Run("bbolt", func(t *testing.T) {
		s := harness.StartStack(t, harness.StackOptions{FakeClock: labClock,
			ConfigYAML: cutConfig(`store: {backend: bbolt, bbolt: {path: "{{DB}}", flush_interval: 100ms}}`)})
		runCuts(t, s, nil)
	})
	t.Run("redis", func(t *testing.T) {
		rds := harness.StartRedis(t)
		proxy := harness.StartLatencyProxy(t, rds.Addr())
		// Dial and read timeouts well above the proxy's delay in the
		// in-flight case: the connection's handshake is slow, never
		// failed.
		s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cutConfig(fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: 1s, read_timeout: 1s, write_timeout: 1s, on_error: fail_closed, retry_interval: %v}`, proxy.Addr(), cutRetry))})
		cutWhileReserving(t, s, proxy)
		runCuts(t, s, rds)
	})
}

// runCuts cuts one request after its request_body was answered (the
// upstream would be working on it) and one mid-stream, after a first
// chunk of its answer, and checks what each was charged.
func runCuts(t *testing.T, s *harness.Stack, rds *harness.Redis) {
	admin := s.Tokengate.Field("admin")
	raw := harness.DialRawProcess(t, s.Tokengate.Field("grpc"))
	estimate := int64(tokenize.Chat("gpt-4o", []tokenize.Message{{Role: "user", Content: cutContent}}))
	chunk := []byte(`data: {"id":"chatcmpl-cut","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"` +
		cutReply + `"}}]}` + "\n\n")
	cases := []struct {
		name   string
		stream bool
		// after are the messages sent, each answered, before the reset.
		after      []*extprocsvc.ProcessingRequest
		completion int64
		source     string
	}{
		// No response at all: charge_unanswered (prompt by default)
		// charges the estimate, as source unanswered.
		{"after request_body", false, nil, 0, "unanswered"},
		{"mid-stream", true, []*extprocsvc.ProcessingRequest{
			harness.RawResponseHeaders(http.StatusOK, "text/event-stream"),
			harness.RawResponseBody(chunk, false),
		}, int64(tokenize.Text("gpt-4o", cutReply)), "counted"},
	}
	for _, tc := range cases {
		key := "cut-" + tc.name
		decided := faultDecisions(t, admin, "cut")
		prompt0, completion0 := faultTokens(t, admin, "cut")
		source0 := faultMetric(t, admin, "tokengate_tokens_total", "policy", "cut", "kind", "prompt", "source", tc.source)
		st := raw.Open(t)
		msgs := append([]*extprocsvc.ProcessingRequest{
			harness.RawRequestHeaders("/v1/chat/completions", "api-key", key),
			harness.RawRequestBody(faultChatBody(t, cutContent, cutMax, tc.stream), true),
		}, tc.after...)
		sent := playAnswered(t, tc.name, st, msgs)
		st.Reset()
		waitDecisions(t, tc.name, admin, "cut", decided+1)
		prompt, completion := faultTokens(t, admin, "cut")
		prompt, completion = prompt-prompt0, completion-completion0
		bySource := faultMetric(t, admin, "tokengate_tokens_total", "policy", "cut", "kind", "prompt", "source", tc.source) - source0
		u := faultUsage(t, admin, "cut", key)
		var holds []string
		left := "n/a (bbolt)"
		if rds != nil {
			holds = waitNoHolds(t, rds.Addr())
			left = fmt.Sprint(holds)
		}
		t.Logf("cut %s (after %v): tokengate charged %d prompt + %d completion (source %s), the window holds %d (the %d max_tokens not held), holds left in redis: %s",
			tc.name, sent, prompt, completion, tc.source, u.GetUsedTokens(), cutMax, left)
		if prompt != estimate || completion != tc.completion || bySource != float64(estimate) {
			t.Errorf("cut %s: charged %d + %d (%v of it %s), want the estimate %d + the %d completion tokens let through, %s",
				tc.name, prompt, completion, bySource, tc.source, estimate, tc.completion, tc.source)
		}
		if u.GetUsedTokens() != estimate+tc.completion {
			t.Errorf("cut %s: the window holds %d, want the %d charged once and no reservation", tc.name, u.GetUsedTokens(), estimate+tc.completion)
		}
		if holds != nil {
			t.Errorf("cut %s: reservations left in redis: %v", tc.name, holds)
		}
		// Settled once: a full request afterwards adds exactly its own
		// charge and its own settlement.
		r := faultSend(context.Background(), directClient, s.URL, key, faultChatBody(t, cutContent, 10, false), "x-mock-completion-tokens", "10")
		if r.status != http.StatusOK {
			t.Fatalf("cut %s: the next request on the key: %d %s", tc.name, r.status, r.err)
		}
		waitDecisions(t, tc.name+", then a full request", admin, "cut", decided+2)
		if got := faultUsage(t, admin, "cut", key).GetUsedTokens(); got != estimate+tc.completion+r.total {
			t.Errorf("cut %s: after one more request of %d tokens the window holds %d, want %d", tc.name, r.total, got, estimate+tc.completion+r.total)
		}
	}
}

// cutWhileReserving resets a stream while its first store call waits for
// a connection to Redis, whose handshake the proxy slows: a client that
// hangs up while its request is being decided. Redis is healthy
// throughout; the cut is the client's. The store must not be taken for
// down, or (under fail_closed) the next client is refused for it.
func cutWhileReserving(t *testing.T, s *harness.Stack, proxy *harness.LatencyProxy) {
	t.Helper()
	admin := s.Tokengate.Field("admin")
	raw := harness.DialRawProcess(t, s.Tokengate.Field("grpc"))
	decided := faultDecisions(t, admin, "cut")
	dialed := proxy.Accepted()
	proxy.SetDelay(cutDialWait)
	logMark := len(s.Tokengate.Stderr())
	st := raw.Open(t)
	// Sent without waiting for the reply: the reply is what never comes.
	if _, err := st.Exchange(harness.RawRequestHeaders("/v1/chat/completions", "api-key", "cut-in-flight"), time.Nanosecond); err == nil {
		t.Fatal("request_headers answered at once: tokengate did not wait for redis")
	}
	if _, err := harness.PollAll(1, cutReplyIn, func(int) (bool, string) { return proxy.Accepted() > dialed, "" }); err != nil {
		t.Fatalf("tokengate did not dial redis for the request: %v", err)
	}
	st.Reset()
	waitDecisions(t, "cut while reserving", admin, "cut", decided+1)
	proxy.SetDelay(0)
	storeErrs := faultMetric(t, admin, "tokengate_store_errors_total")
	gauge := faultMetric(t, admin, "tokengate_store_fallback")
	next := faultSend(context.Background(), directClient, s.URL, "cut-next-client", faultChatBody(t, cutContent, 10, false), "x-mock-completion-tokens", "10")
	t.Logf("cut while its reserve waited for a redis connection: store errors %v, fallback gauge %v; the next client (another key) got %d %s",
		storeErrs, gauge, next.status, next.err)
	down := unavailableLines(s.Tokengate.Stderr()[logMark:])
	if gauge != 0 || next.status != http.StatusOK || len(down) > 0 {
		t.Errorf("regression (limiter/fallback/fallback.go Store.result, fed by extproc/processor.go admit): a client cut its stream while its reserve waited for a connection to a healthy Redis; "+
			"tokengate counted %v store errors, set the fallback gauge to %v and, under on_error: fail_closed, answered the next client (another key) %d %q; log: %q. "+
			"The store is called with the stream's context; go-redis returns \"context canceled\" once it is cancelled, and Fallback.result takes any error for Redis failing: one client hanging up takes the replica out (503, NOT_SERVING) for retry_interval (%v). "+
			"Want: an error caused by the caller's own context does not count as Redis failing.",
			storeErrs, gauge, next.status, next.err, down, cutRetry)
	}
	waitBreakerClosed(t, admin)
}

// playAnswered sends msgs on st one at a time, each answered in kind
// before the next (as Envoy does in buffered modes), and returns the kinds
// sent.
func playAnswered(t *testing.T, name string, st *harness.RawStream, msgs []*extprocsvc.ProcessingRequest) []string {
	t.Helper()
	var sent []string
	for _, m := range msgs {
		reply, err := st.Exchange(m, cutReplyIn)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, harness.RawRequestKind(m), err)
		}
		if got, want := harness.RawReplyKind(reply), harness.RawRequestKind(m); got != want {
			t.Fatalf("%s: %s answered with %s", name, want, got)
		}
		sent = append(sent, harness.RawRequestKind(m))
	}
	return sent
}
