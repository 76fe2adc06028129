package e2e

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Issue 21: what the upstream may read, tokengate reads, or refuses. A
// compressed request body, Python's NaN and Infinity literals and a path
// with an escaped slash were each a way around the prompt estimate; an
// unreadable body under a policy that needs it is refused or held by its
// bytes, never passed silently.

// readableConfig: "strict" for the Azure-style /openai/v1/ paths (strict
// mode, so an unreadable body is refused), "estimate" for the rest: 1,000
// tokens a minute with the prompt estimated, and unreadable_body left at
// its default (charge_bytes).
const readableConfig = `store: {backend: memory}
policies:
- name: strict
  match: {path_prefix: /openai/v1/}
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000
  reserve_completion: "300"
- name: estimate
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000
  estimate_prompt_tokens: true
`

const (
	rdLimit      = 1000
	rdChatPath   = "/v1/chat/completions"
	rdStrictPath = "/openai/v1/chat/completions"
)

// rdRig is a stack on readableConfig; requests go one at a time, so the
// front's n-th record is the n-th request sent.
type rdRig struct {
	*harness.Stack
	sent int
}

func startReadable(t *testing.T) *rdRig {
	t.Helper()
	needBinaries(t)
	r := &rdRig{Stack: harness.StartStack(t, harness.StackOptions{ConfigYAML: readableConfig, FakeClock: labClock})}
	// tokengate says ready before its vocabularies are loaded; a first
	// estimate that waits for them can miss the front's message_timeout
	// on a busy machine. One small chat warms it, and shows the rig
	// admits what fits.
	resp, body, _ := r.send(t, "warm-up", rdChatPath, rdChat(t, "Say hello.", false), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up chat: %d %s", resp.StatusCode, body)
	}
	return r
}

// rdClient is rawClient that follows no redirect: an upstream's redirect
// (Go's ServeMux answers 307 to an unclean path) is an answer to check,
// and a followed one would be a second request in the front's records.
var rdClient = &http.Client{
	Transport:     rawClient.Transport,
	Timeout:       rawClient.Timeout,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// send posts body to path with api-key key and, when encoding is set, that
// content-encoding, and returns the answer, its whole body and the front's
// record of the request.
func (r *rdRig) send(t *testing.T, key, path string, body []byte, encoding string, headers ...string) (*http.Response, []byte, front.RequestStats) {
	t.Helper()
	req := r.Request(http.MethodPost, path, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r.sent++
	resp, err := rdClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", path, err)
	}
	recs, err := r.Front.WaitCompleted(r.sent, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := recs[r.sent-1]
	if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" || rec.StreamLeftOpen || rec.RejectedMutations > 0 || rec.IgnoredModeOverrides > 0 {
		t.Errorf("protocol trouble on %s %s: %+v", rec.Method, rec.Path, rec)
	}
	return resp, got, rec
}

func (r *rdRig) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return faultMetric(t, r.Tokengate.Field("admin"), name, labels...)
}

func (r *rdRig) mockCalls(t *testing.T) int {
	t.Helper()
	n, _ := r.MockCalls()
	return n
}

// rdMetrics are the series a case looks at, read before and after it.
type rdMetrics struct {
	rateLimited, allowed, unreadableDecision, passthrough float64
	unreadable                                            map[string]float64 // by "policy/reason/action"
	mockCalls                                             int
}

var rdUnreadableSeries = []string{
	"estimate/encoding/charge_bytes", "estimate/json/charge_bytes", "estimate/prompt/charge_bytes",
	"strict/encoding/refuse", "strict/json/refuse", "strict/prompt/refuse",
}

func (r *rdRig) snapshot(t *testing.T, policy string) rdMetrics {
	t.Helper()
	m := rdMetrics{
		rateLimited:        r.metric(t, "tokengate_requests_total", "policy", policy, "decision", "rate_limited"),
		allowed:            r.metric(t, "tokengate_requests_total", "policy", policy, "decision", "allowed"),
		unreadableDecision: r.metric(t, "tokengate_requests_total", "policy", policy, "decision", "unreadable_body"),
		passthrough:        r.metric(t, "tokengate_passthrough_total"),
		unreadable:         map[string]float64{},
		mockCalls:          r.mockCalls(t),
	}
	// Every series of the family, whatever its labels: a case must move
	// exactly the one it names.
	m.unreadable["all"] = r.metric(t, "tokengate_unreadable_bodies_total")
	for _, s := range rdUnreadableSeries {
		p := strings.Split(s, "/")
		m.unreadable[s] = r.metric(t, "tokengate_unreadable_bodies_total", "policy", p[0], "reason", p[1], "action", p[2])
	}
	return m
}

// wantMoved checks what a case changed: each series by the amount
// given, every other one not at all.
func (m rdMetrics) wantMoved(t *testing.T, after rdMetrics, rateLimited, allowed, unreadableDecision float64, unreadable string, mockCalls int) {
	t.Helper()
	for _, c := range []struct {
		name        string
		before, now float64
		want        float64
	}{
		{`tokengate_requests_total{decision="rate_limited"}`, m.rateLimited, after.rateLimited, rateLimited},
		{`tokengate_requests_total{decision="allowed"}`, m.allowed, after.allowed, allowed},
		{`tokengate_requests_total{decision="unreadable_body"}`, m.unreadableDecision, after.unreadableDecision, unreadableDecision},
		{"tokengate_passthrough_total", m.passthrough, after.passthrough, 0},
	} {
		if got := c.now - c.before; got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, got, c.want)
		}
	}
	wantAll := 0.0
	if unreadable != "" {
		wantAll = 1
	}
	if got := after.unreadable["all"] - m.unreadable["all"]; got != wantAll {
		t.Errorf("tokengate_unreadable_bodies_total (all series) moved by %v, want %v", got, wantAll)
	}
	if unreadable != "" {
		if got := after.unreadable[unreadable] - m.unreadable[unreadable]; got != 1 {
			t.Errorf("tokengate_unreadable_bodies_total{policy/reason/action=%s} moved by %v, want 1", unreadable, got)
		}
	}
	if got := after.mockCalls - m.mockCalls; got != mockCalls {
		t.Errorf("openai-mock got %d calls, want %d", got, mockCalls)
	}
}

// rdParagraph is the long prompt's unit: repeated, it makes a prompt of
// thousands of tokens that compresses to a few hundred bytes, so a body
// charged by its compressed bytes would fit the 1,000-token window and
// only a prompt read through the compression is refused.
const rdParagraph = "The fox went over the hill at dawn and the dog slept on in the barn. " +
	"Nobody counted the sheep that morning, so the farmer counted them twice at noon. "

// rdLongPrompt is about 5,600 tokens of chat.
var rdLongPrompt = strings.Repeat(rdParagraph, 169)

// rdChat is a gpt-4o chat body whose user message is prompt; lenient adds
// the Python literals Go's encoding/json refuses and Python's json reads.
func rdChat(t *testing.T, prompt string, lenient bool) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"model": "gpt-4o", "max_tokens": 50, "messages": []harness.Message{
		{Role: "system", Content: "You summarise farm stories."},
		{Role: "user", Content: prompt},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if lenient {
		b = append(b[:len(b)-1], []byte(`,"temperature": NaN,"top_p": Infinity,"presence_penalty": -Infinity}`)...)
	}
	return b
}

// rdPrompt is tokengate's estimate of rdChat's messages for gpt-4o.
func rdPrompt(prompt string) int {
	return tokenize.Chat("gpt-4o", []tokenize.Message{
		{Role: "system", Content: "You summarise farm stories."},
		{Role: "user", Content: prompt},
	})
}

// rdEncode compresses b as a client would for content-encoding enc.
func rdEncode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "", "identity":
		return b
	case "gzip":
		w = gzip.NewWriter(&out)
	case "deflate":
		w = zlib.NewWriter(&out) // HTTP's deflate is the zlib format
	case "br":
		w = brotli.NewWriter(&out)
	case "zstd":
		zw, err := zstd.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		t.Fatalf("rdEncode: no encoder for %q", enc)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// refusal is what a client gets back from a 429, as far as the client can
// tell one refusal from another.
type refusal struct {
	status  int
	body    string
	headers map[string][]string
}

func refusalOf(resp *http.Response, body []byte) refusal {
	r := refusal{status: resp.StatusCode, body: string(body), headers: map[string][]string{}}
	for _, h := range []string{"Content-Type", "Retry-After", "Retry-After-Ms", "X-Ratelimit-Limit-Tokens",
		"X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens", "X-Should-Retry"} {
		r.headers[h] = resp.Header.Values(h)
	}
	return r
}

// TestReadableRequests sends the long prompt plain, then compressed
// (each encoding tokengate decodes), with Python's non-finite literals and
// to paths the upstream routes as chat completions: every one is refused
// 429 exactly as the plain one, before the upstream sees it, and the
// metrics say it was refused for its tokens, not passed or unread.
func TestReadableRequests(t *testing.T) {
	r := startReadable(t)
	prompt := rdPrompt(rdLongPrompt)
	if prompt < 5000 || prompt > 6500 {
		t.Fatalf("the long prompt is %d tokens, want about 5,600", prompt)
	}
	t.Logf("long prompt: %d tokens, %d bytes of JSON", prompt, len(rdChat(t, rdLongPrompt, false)))

	before := r.snapshot(t, "estimate")
	resp, body, rec := r.send(t, "readable-plain", rdChatPath, rdChat(t, rdLongPrompt, false), "")
	wantJSONError(t, "plain", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	if !rec.Immediate || rec.ImmediatePhase != "request_body" {
		t.Errorf("plain: immediate %v in %q, want a refusal in reply to the request body", rec.Immediate, rec.ImmediatePhase)
	}
	before.wantMoved(t, r.snapshot(t, "estimate"), 1, 0, 0, "", 0)
	plain := refusalOf(resp, body)

	cases := []struct {
		name, encoding, path string
		lenient              bool
	}{
		{"gzip", "gzip", rdChatPath, false},
		{"python literals", "", rdChatPath, true},
		{"escaped slash", "", "/v1/chat%2Fcompletions", false},
		{"dot segments and double slashes", "", "/v1//embeddings/..//chat%2fcompletions", false},
		{"gzip, literals, escaped slash", "gzip", "/v1/chat%2Fcompletions", true},
		{"deflate, literals, escaped slash", "deflate", "/v1/chat%2Fcompletions", true},
		{"br, literals, escaped slash", "br", "/v1/chat%2Fcompletions", true},
		{"zstd, literals, escaped slash", "zstd", "/v1/chat%2Fcompletions", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := rdChat(t, rdLongPrompt, tc.lenient)
			if tc.lenient && json.Valid(raw) {
				t.Fatal("the lenient body is valid JSON to Go: it tests nothing")
			}
			wire := rdEncode(t, tc.encoding, raw)
			// Were the body held by its bytes, as an unreadable one is, a
			// compressed one would fit the window: only reading through
			// the compression refuses it.
			if tc.encoding != "" && len(wire) >= rdLimit {
				t.Fatalf("%s body is %d bytes; the test needs it under %d", tc.encoding, len(wire), rdLimit)
			}
			before := r.snapshot(t, "estimate")
			resp, body, rec := r.send(t, fmt.Sprintf("readable-%d", i), tc.path, wire, tc.encoding)
			t.Logf("%d bytes on the wire (%d decoded) to %s: %d", len(wire), len(raw), tc.path, resp.StatusCode)
			if got := refusalOf(resp, body); !equalRefusals(got, plain) {
				t.Errorf("answer differs from the plain request's:\n got %+v\nwant %+v", got, plain)
			}
			// The front hands tokengate the path as the client sent it
			// (Envoy would have normalised it first, envoy.yaml): tokengate
			// reads the raw one here.
			if rec.Path != tc.path {
				t.Errorf("the front saw path %q, want %q as sent", rec.Path, tc.path)
			}
			if !rec.Immediate || rec.ImmediatePhase != "request_body" || rec.UpstreamCalled {
				t.Errorf("immediate %v in %q, upstream called %v: want a refusal of the read body, before the upstream",
					rec.Immediate, rec.ImmediatePhase, rec.UpstreamCalled)
			}
			if md := metadataOf(t, rec); md.decision != "rate_limited" {
				t.Errorf("metadata decision %q, want rate_limited", md.decision)
			}
			before.wantMoved(t, r.snapshot(t, "estimate"), 1, 0, 0, "", 0)
			if u := faultUsage(t, r.Tokengate.Field("admin"), "estimate", fmt.Sprintf("readable-%d", i)).GetUsedTokens(); u != 0 {
				t.Errorf("the refused request left %d tokens in its window, want 0", u)
			}
		})
	}
}

func equalRefusals(a, b refusal) bool {
	if a.status != b.status || a.body != b.body || len(a.headers) != len(b.headers) {
		return false
	}
	for k, v := range a.headers {
		if strings.Join(v, "\x00") != strings.Join(b.headers[k], "\x00") {
			return false
		}
	}
	return true
}

// rdXZ is n bytes of what an lzma (xz) body looks like to tokengate: its
// magic, then bytes no decoder tokengate has can read.
func rdXZ(n int) []byte {
	b := make([]byte, n)
	copy(b, "\xfd7zXZ\x00")
	for i := 6; i < n; i++ {
		b[i] = byte(i*131 + 7)
	}
	return b
}

// rdCut is a chat body of exactly n bytes cut short in its prompt: JSON
// that ends before its closing quote.
func rdCut(t *testing.T, n int) []byte {
	t.Helper()
	b := rdChat(t, rdLongPrompt, false)
	if len(b) < n {
		t.Fatalf("the chat body is %d bytes, shorter than %d", len(b), n)
	}
	b = b[:n]
	if json.Valid(b) {
		t.Fatal("the cut body is valid JSON")
	}
	return b
}

// TestUnreadableRequests sends bodies tokengate cannot read, of an
// encoding it does not know (lzma) or JSON cut short, to a strict policy
// (refused 400 unreadable_body) and to an estimating one (held by their
// bytes: refused 429 past the window, else sent on and charged what the
// upstream's answer says). openai-mock, like most upstreams, reads the
// body as JSON whatever its content-encoding: these answer 400, which
// costs nothing, and a real JSON body labelled lzma is served and charged
// its reported usage.
func TestUnreadableRequests(t *testing.T) {
	r := startReadable(t)
	admin := r.Tokengate.Field("admin")

	t.Run("strict policy refuses", func(t *testing.T) {
		for _, tc := range []struct {
			name, encoding, reason string
			body                   []byte
		}{
			{"lzma", "lzma", "encoding", rdXZ(600)},
			{"cut-short JSON", "", "json", rdCut(t, 600)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "unreadable-strict-" + tc.reason
				before := r.snapshot(t, "strict")
				resp, body, rec := r.send(t, key, rdStrictPath, tc.body, tc.encoding)
				wantJSONError(t, tc.name, resp, body, http.StatusBadRequest, "unreadable_body")
				if !rec.Immediate || rec.ImmediatePhase != "request_body" || rec.UpstreamCalled {
					t.Errorf("immediate %v in %q, upstream called %v: want a refusal of the body, before the upstream",
						rec.Immediate, rec.ImmediatePhase, rec.UpstreamCalled)
				}
				if md := metadataOf(t, rec); md.decision != "unreadable_body" {
					t.Errorf("metadata decision %q, want unreadable_body", md.decision)
				}
				before.wantMoved(t, r.snapshot(t, "strict"), 0, 0, 1, "strict/"+tc.reason+"/refuse", 0)
				if u := faultUsage(t, admin, "strict", key).GetUsedTokens(); u != 0 {
					t.Errorf("the refused request left %d tokens in its window, want 0", u)
				}
			})
		}
	})

	t.Run("estimating policy charges bytes", func(t *testing.T) {
		for _, tc := range []struct {
			name, encoding, reason string
			body                   func(n int) []byte
		}{
			{"lzma", "lzma", "encoding", rdXZ},
			{"cut-short JSON", "", "json", func(n int) []byte { return rdCut(t, n) }},
		} {
			series := "estimate/" + tc.reason + "/charge_bytes"
			// One byte more than the window holds: refused for its
			// bytes, before the upstream.
			t.Run(tc.name+" over the window", func(t *testing.T) {
				key := "unreadable-over-" + tc.reason
				before := r.snapshot(t, "estimate")
				resp, body, rec := r.send(t, key, rdChatPath, tc.body(rdLimit+1), tc.encoding)
				wantJSONError(t, tc.name, resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
				if rec.UpstreamCalled {
					t.Error("the upstream was called")
				}
				before.wantMoved(t, r.snapshot(t, "estimate"), 1, 0, 0, series, 0)
				if u := faultUsage(t, admin, "estimate", key).GetUsedTokens(); u != 0 {
					t.Errorf("the refused request left %d tokens in its window, want 0", u)
				}
			})
			// Exactly the window: held, and sent on. openai-mock cannot
			// parse it and answers 400, which tokengate charges nothing.
			t.Run(tc.name+" filling the window", func(t *testing.T) {
				key := "unreadable-fits-" + tc.reason
				before := r.snapshot(t, "estimate")
				resp, body, rec := r.send(t, key, rdChatPath, tc.body(rdLimit), tc.encoding)
				if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("could not parse the JSON body")) {
					t.Fatalf("status %d %s, want openai-mock's 400 for a body it cannot parse", resp.StatusCode, body)
				}
				if !rec.UpstreamCalled || rec.Immediate {
					t.Errorf("upstream called %v, immediate %v: want the body held and sent on", rec.UpstreamCalled, rec.Immediate)
				}
				md := metadataOf(t, rec)
				if md.decision != "allowed" || md.source != "none" || md.total != 0 {
					t.Errorf("metadata %+v, want allowed, charged 0 from source none (a failed answer)", md)
				}
				before.wantMoved(t, r.snapshot(t, "estimate"), 0, 1, 0, series, 1)
				if u := faultUsage(t, admin, "estimate", key).GetUsedTokens(); u != 0 {
					t.Errorf("the window holds %d tokens after the upstream's 400, want 0", u)
				}
			})
		}

		// A JSON body labelled lzma: tokengate cannot decode it and holds
		// its bytes; openai-mock ignores content-encoding, serves it and
		// reports usage, which is what is charged.
		t.Run("lzma label on JSON the upstream serves", func(t *testing.T) {
			key := "unreadable-served"
			raw := rdChat(t, "Say hello.", false)
			before := r.snapshot(t, "estimate")
			resp, body, rec := r.send(t, key, rdChatPath, raw, "lzma", "x-mock-completion-tokens", "7")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d %s, want 200", resp.StatusCode, body)
			}
			total := usageTotal(t, "served", body)
			if want := rdPrompt("Say hello.") + 7; total != want {
				t.Errorf("reported usage %d, want %d", total, want)
			}
			md := metadataOf(t, rec)
			if md.source != "reported" || md.total != total {
				t.Errorf("metadata %+v, want the reported %d", md, total)
			}
			before.wantMoved(t, r.snapshot(t, "estimate"), 0, 1, 0, "estimate/encoding/charge_bytes", 1)
			if u := faultUsage(t, admin, "estimate", key).GetUsedTokens(); u != int64(total) {
				t.Errorf("the window holds %d tokens, want the reported %d (not the %d bytes held)", u, total, len(raw))
			}
		})
	})
}
