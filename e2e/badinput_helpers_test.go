package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
	"github.com/tokengate/tokengate/internal/proc"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// The bad-input suite (issue 9, SPEC §10): every malformed, oversized,
// out-of-order or hostile input gets a clear answer, moves a metric, and
// never panics tokengate. Each top-level TestBadInput* starts its own
// stack from badInputConfig; its cleanup fails the test if tokengate
// recovered a panic or logged one.

// badInputConfig has three policies, chosen by path:
//   - anon (/models/...): a missing key is counted under "anonymous";
//   - strict (/openai/v1/...): strict mode reserving 300 completion tokens
//     when the request names no usable max_tokens, on a small window, so a
//     reservation that is not released shows;
//   - bad (everything else): a big window, keys from api-key or an
//     authorization Bearer token, prompts estimated so a request holds
//     tokens between its body and its settlement.
//
// The gRPC receive limit is lowered to 256 KiB so an oversized body is
// cheap to send, while the 200 KB deeply nested body still fits.
const badInputConfig = `max_receive_bytes: 262144
store: {backend: memory}
policies:
- name: anon
  match: {path_prefix: /models/}
  counter_key: {header: [api-key], missing: anonymous}
  tokens_per_minute: 1000000
- name: strict
  match: {path_prefix: /openai/v1/}
  counter_key: {header: [api-key]}
  tokens_per_minute: 5000
  reserve_completion: "300"
- name: bad
  counter_key: {header: [api-key, authorization]}
  tokens_per_minute: 1000000
  estimate_prompt_tokens: true
`

// Limits and paths of badInputConfig.
const (
	biStrictLimit   = 5000
	biStrictReserve = 300
	biBadLimit      = 1_000_000
	biReceiveLimit  = 256 << 10
	biChatPath      = "/v1/chat/completions"
	biStrictPath    = "/openai/v1/chat/completions"
	biAnonPath      = "/models/chat/completions"
)

// biMessages is the prompt of the suite's well-formed chats.
var biMessages = []harness.Message{
	{Role: "system", Content: "You answer in one short sentence."},
	{Role: "user", Content: "What is the capital of France?"},
}

// biPrompt is tokengate's estimate of biMessages for gpt-4o, which is
// also what openai-mock reports (same tokenizer calls).
func biPrompt() int64 {
	msgs := make([]tokenize.Message, len(biMessages))
	for i, m := range biMessages {
		msgs[i] = tokenize.Message{Role: m.Role, Content: m.Content}
	}
	return int64(tokenize.Chat("gpt-4o", msgs))
}

// biChat is a gpt-4o chat body on biMessages with extra fields.
func biChat(t *testing.T, extra map[string]any) []byte {
	t.Helper()
	return chatJSON(t, "gpt-4o", biMessages, extra)
}

// biRig is a stack on badInputConfig with a second front before an
// upstream the test controls (biUpstream), for answers openai-mock will
// not give: usage with exponents, negative or absurd counts, SSE split
// inside a character.
type biRig struct {
	*harness.Stack
	admin     adminv1.AdminServiceClient
	up        *biUpstream
	custom    *front.Front
	customURL string
}

// startBadInput starts the rig. Its cleanup, which runs before the
// processes are stopped, checks that tokengate is still up and never
// panicked.
func startBadInput(t *testing.T) *biRig {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: badInputConfig, FakeClock: labClock})
	r := &biRig{Stack: s, up: newBIUpstream()}

	conn, err := grpc.NewClient(s.Tokengate.Field("admin"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.admin = adminv1.NewAdminServiceClient(conn)

	r.custom, r.customURL = startCustomFront(t, s, r.up)

	t.Cleanup(func() { r.checkNoPanic(t) })
	return r
}

// checkNoPanic fails the test if tokengate exited, counted a recovered
// panic (tokengate_panics_total, absent counting as 0), or wrote a line
// about a panic.
func (r *biRig) checkNoPanic(t *testing.T) {
	t.Helper()
	if r.Tokengate.Exited() {
		t.Errorf("tokengate exited during the bad-input suite; stderr tail:\n%s", biTail(r.Tokengate.Stderr(), 4096))
		return
	}
	if n, err := harness.ScrapeMetric(rawClient, r.Tokengate.Field("admin"), "tokengate_panics_total"); err != nil {
		t.Errorf("metrics after the suite: %v", err)
	} else if n != 0 {
		t.Errorf("tokengate_panics_total = %v after the suite, want 0: a handler panicked and was recovered", n)
	}
	for line := range strings.Lines(r.Tokengate.Stderr()) {
		if strings.Contains(strings.ToLower(line), "panic") {
			t.Errorf("tokengate logged a panic: %s", strings.TrimSpace(biTail(line, 2048)))
		}
	}
}

func biTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// request builds a request to base+path with the headers given as pairs,
// added in order so that a name may repeat.
func (r *biRig) request(t *testing.T, base, method, path string, body []byte, headers ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header[http.CanonicalHeaderKey(headers[i])] = append(req.Header[http.CanonicalHeaderKey(headers[i])], headers[i+1])
	}
	return req
}

// exchange sends req through the front f and returns the response, its
// whole body and the front's record of the request. Requests of a rig go
// one at a time, so the record is the one finished after the others.
func (r *biRig) exchange(t *testing.T, f *front.Front, req *http.Request) (*http.Response, []byte, front.RequestStats) {
	t.Helper()
	n := len(f.Completed())
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return resp, body, r.record(t, f, n)
}

// record waits for the front's n-th record (0-based).
func (r *biRig) record(t *testing.T, f *front.Front, n int) front.RequestStats {
	t.Helper()
	recs, err := f.WaitCompleted(n+1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return recs[n]
}

// biWantProtocol checks that tokengate spoke ext_proc as Envoy expects:
// every reply in time and of the right kind, no stream left open.
func biWantProtocol(t *testing.T, rec front.RequestStats) {
	t.Helper()
	if rec.TimedOut || rec.Spurious > 0 || rec.StreamLeftOpen || rec.RejectedMutations > 0 || rec.IgnoredModeOverrides > 0 {
		t.Errorf("protocol trouble on %s %s: %+v", rec.Method, biTail(rec.Path, 80), rec)
	}
}

// used is what key's window holds under policy (charged plus held by
// requests in flight), read through the admin API. The key goes by its
// hash: a raw key must be valid UTF-8 in protobuf, and the suite sends
// keys that are not.
func (r *biRig) used(t *testing.T, policy, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.admin.GetUsage(ctx, &adminv1.GetUsageRequest{
		Key: &adminv1.Key{Key: &adminv1.Key_Sha256{Sha256: keySHA256(key)}}, Policy: policy,
	})
	if err != nil || len(resp.GetUsage()) != 1 {
		t.Fatalf("admin GetUsage(policy %s): %v %v", policy, resp, err)
	}
	return resp.GetUsage()[0].GetUsedTokens()
}

// waitUsed waits until key's window under policy holds exactly want, for
// settlements that follow a hang-up; it fails after 5 s with what it saw.
func (r *biRig) waitUsed(t *testing.T, policy, key string, want int64) {
	t.Helper()
	harness.Eventually(t, 5*time.Second, func() error {
		if got := r.used(t, policy, key); got != want {
			return fmt.Errorf("key %.24q under %s holds %d, want %d", key, policy, got, want)
		}
		return nil
	})
}

// metric sums the tokengate series of name whose labels include the
// given pairs (0 when none exists yet).
func (r *biRig) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, err := harness.ScrapeMetric(rawClient, r.Tokengate.Field("admin"), name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMetric waits until the tokengate series of name (as metric sums
// it) reads at least least, and returns the last reading: a stream that
// failed is settled when tokengate notices, which may come after the
// client's answer. It gives up after 5 s; the caller checks the value.
func (r *biRig) waitMetric(t *testing.T, least float64, name string, labels ...string) float64 {
	t.Helper()
	var v float64
	_ = proc.Poll(context.Background(), 5*time.Second, 10*time.Millisecond, func() error {
		if v = r.metric(t, name, labels...); v < least {
			return errors.New("not yet")
		}
		return nil
	})
	return v
}

// biMove is a metric a case must move, and by how much.
type biMove struct {
	name   string
	labels []string
	by     float64
}

func (m biMove) String() string { return fmt.Sprintf("%s%v", m.name, m.labels) }

// waitDebugLine waits for a DEBUG line of tokengate's log that names the
// key's hash prefix and contains word, written after the first skip bytes
// of stderr.
func (r *biRig) waitDebugLine(t *testing.T, skip int, key, word string) {
	t.Helper()
	prefix := keySHA256(key)[:8]
	harness.Eventually(t, 5*time.Second, func() error {
		all := r.Tokengate.Stderr()
		for line := range strings.Lines(all[min(skip, len(all)):]) {
			if strings.Contains(line, "DEBUG") && strings.Contains(line, prefix) && strings.Contains(strings.ToLower(line), word) {
				return nil
			}
		}
		return fmt.Errorf("no DEBUG line with key %s and %q in tokengate's log", prefix, word)
	})
}

// biUpstream is an OpenAI-shaped upstream that answers what the test
// asks for: x-bi-usage makes a buffered chat completion whose usage is
// that raw JSON, x-bi-sse names a canned event stream written piece by
// piece, each piece flushed on its own.
type biUpstream struct {
	mu      sync.Mutex
	scripts map[string][][]byte
}

func newBIUpstream() *biUpstream { return &biUpstream{scripts: map[string][][]byte{}} }

// script registers a stream before the test sends the request naming it.
func (u *biUpstream) script(name string, pieces ...[]byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.scripts[name] = pieces
}

func (u *biUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if name := r.Header.Get("x-bi-sse"); name != "" {
		u.mu.Lock()
		pieces, ok := u.scripts[name]
		u.mu.Unlock()
		if !ok {
			http.Error(w, "no such script", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for _, p := range pieces {
			if _, err := w.Write(p); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		return
	}
	usage := r.Header.Get("x-bi-usage")
	if usage == "" {
		http.Error(w, "x-bi-usage or x-bi-sse is required", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-bi","object":"chat.completion","created":0,"model":"gpt-4o",`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":%s}`, usage)
}

// biSSE renders chat completion chunks with the given delta contents as
// SSE bytes, then [DONE]. Contents are raw JSON string bodies, so a test
// can put invalid UTF-8 in them.
func biSSE(contents ...string) []byte {
	var b bytes.Buffer
	for _, c := range contents {
		fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-bi\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\","+
			"\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n", c)
	}
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// biSSEText is the completion text a client (and tokengate) decodes from
// biSSE's contents: encoding/json turns invalid UTF-8 into U+FFFD.
func biSSEText(t *testing.T, contents ...string) string {
	t.Helper()
	var out strings.Builder
	for _, c := range contents {
		var s string
		if err := json.Unmarshal([]byte(`"`+c+`"`), &s); err != nil {
			t.Fatalf("content %q: %v", c, err)
		}
		out.WriteString(s)
	}
	return out.String()
}

// biSplit cuts b into pieces of n bytes, so multi-byte characters and
// events straddle pieces.
func biSplit(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// startCustomFront starts a second front on the stack's tokengate and
// filter, in front of an upstream of the test's own, and returns it with
// its base URL.
func startCustomFront(t *testing.T, s *harness.Stack, up http.Handler) (*front.Front, string) {
	t.Helper()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	return harness.StartFront(t, front.Config{
		Filter:      s.Filter,
		ExtProcAddr: s.Tokengate.Field("grpc"),
		Upstream:    srv.URL,
		BufferLimit: harness.BufferLimit(s.Bootstrap),
	})
}
