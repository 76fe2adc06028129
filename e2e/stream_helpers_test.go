package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// streamLimit is the streaming scenarios' budget: large enough that
// nothing is refused, so remaining tokens read back exact charges.
const streamLimit = 1_000_000

// streamConfig has two policies: "noinject" for the Azure-style
// /openai/... paths, which never asks the upstream for usage, and
// "stream" for the rest, with inject_stream_usage left at its default.
const streamConfig = `store: {backend: memory}
policies:
- name: noinject
  match: {path_prefix: /openai/}
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
  inject_stream_usage: false
- name: stream
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
`

// streamMessages is the prompt of every streamed chat in these tests.
var streamMessages = []harness.Message{
	{Role: "system", Content: "You are a patient narrator."},
	{Role: "user", Content: "Tell me about the fox and the dog, slowly."},
}

// rig is a stack for the streaming scenarios plus the bookkeeping they
// share: requests go one at a time, so the front's n-th record is the n-th
// request sent.
type rig struct {
	*harness.Stack
	t    *testing.T
	sent int
}

// startRig starts a stack and sends one streamed request through it, so
// that the scenarios start on a warm tokengate: it announces ready before
// its vocabularies are loaded (see TestFirstStreamAfterReady), and a first
// streamed request that waits for them can miss the front's
// message_timeout on a busy machine.
func startRig(t *testing.T) *rig {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: streamConfig, FakeClock: labClock})
	r := &rig{Stack: s, t: t}
	resp := r.send("warm-up", "/v1/chat/completions", chatBody(t, true), "x-mock-completion-tokens", "3")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.waitSettlements("stream", 1)
	if _, err := r.Front.WaitCompleted(r.sent, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return r
}

// rawClient neither asks for nor undoes compression, so tests see the
// bytes on the wire; it keeps no connection, so a closed body is a closed
// connection, as when a real client goes away.
var rawClient = &http.Client{
	Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true},
	Timeout:   30 * time.Second,
}

// send posts body to path with api-key key and the x-mock-* headers given
// as pairs, and returns the response unread; the test closes it, or it is
// closed when the test ends.
func (r *rig) send(key, path string, body []byte, headers ...string) *http.Response {
	r.t.Helper()
	req := r.post(path, body)
	req.Header.Set("api-key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r.sent++
	resp, err := rawClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s: %v", path, err)
	}
	r.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// record waits for the front's record of the last request sent, and
// checks that tokengate spoke the protocol as Envoy expects: every reply in
// time, nothing spurious, no stream left open.
func (r *rig) record() front.RequestStats {
	r.t.Helper()
	recs, err := r.Front.WaitCompleted(r.sent, 10*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	rec := recs[r.sent-1]
	if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" || rec.StreamLeftOpen || rec.RejectedMutations > 0 || rec.IgnoredModeOverrides > 0 {
		r.t.Errorf("protocol trouble on %s %s: %+v", rec.Method, rec.Path, rec)
	}
	return rec
}

// responseBodies counts the response_body messages tokengate was sent: one
// for a buffered body, one per chunk for a stream.
func responseBodies(rec front.RequestStats) int {
	n := 0
	for _, m := range rec.Sent {
		if m == "response_body" {
			n++
		}
	}
	return n
}

// chatPaths are chat paths of each policy of streamConfig: the counter is
// per policy and key, whatever the path.
var chatPaths = map[string]string{"stream": "/v1/chat/completions", "noinject": "/openai/v1/chat/completions"}

// charged returns what key's window under policy holds, read back through
// the limiter: the remaining tokens after a small buffered chat, plus that
// chat's own usage. Call it once a request has settled.
func (r *rig) charged(key, policy string) int {
	r.t.Helper()
	path := chatPaths[policy]
	body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []harness.Message{{Role: "user", Content: "And then?"}}})
	if err != nil {
		r.t.Fatal(err)
	}
	resp := r.send(key, path, body)
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		r.t.Fatalf("follow-up chat for %s: %d %s (%v)", key, resp.StatusCode, got, err)
	}
	return streamLimit - remaining(r.t, "follow-up chat", resp.Header) - usageTotal(r.t, "follow-up chat", got)
}

// metric sums the samples of a tokengate series whose labels include
// the given name="value" pairs.
func (r *rig) metric(name string, labels ...string) float64 {
	r.t.Helper()
	v, err := harness.ScrapeMetric(rawClient, r.Tokengate.Field("admin"), name, labels...)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// settlements is how many requests of policy tokengate has settled: it
// counts each allowed request once, at its settlement.
func (r *rig) settlements(policy string) int {
	r.t.Helper()
	return int(r.metric("tokengate_requests_total", "policy", policy, "decision", "allowed"))
}

// waitSettlements waits until policy has n settlements, for requests that
// end without the client seeing their end (tokengate settles them when
// the ext_proc stream is reset), and fails if there are more.
func (r *rig) waitSettlements(policy string, n int) {
	r.t.Helper()
	harness.Eventually(r.t, 5*time.Second, func() error {
		got := r.settlements(policy)
		if got > n {
			r.t.Fatalf("policy %s: %d settlements, want %d: a request was settled twice", policy, got, n)
		}
		if got < n {
			return fmt.Errorf("policy %s: %d settlements, want %d", policy, got, n)
		}
		return nil
	})
}

// post builds a JSON POST to path on the front. The rig's helpers fail
// r.t, the running (sub)test, never the stack's parent test.
func (r *rig) post(path string, body []byte) *http.Request {
	r.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, r.URL+path, bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// mockTrace is openai-mock's account of one answer (GET /mock/traces/{id}).
type mockTrace struct {
	ID               string `json:"id"`
	Events           int    `json:"events"`
	Text             string `json:"text"`
	CompletionTokens int    `json:"completion_tokens"`
	Usage            bool   `json:"usage"`
	Done             bool   `json:"done"`
	Cut              bool   `json:"cut"`
	WireBytes        int64  `json:"wire_bytes"`
	WireSHA256       string `json:"wire_sha256"`
	Finished         bool   `json:"finished"`
}

func (r *rig) trace(id string) mockTrace {
	r.t.Helper()
	return traceOf(r.t, r.Mock.Field("http"), id)
}

// finishedTrace waits until the mock's handler for id has returned, which
// after a client's disconnect proves the upstream request was ended too.
func (r *rig) finishedTrace(id string) mockTrace {
	r.t.Helper()
	return finishedTrace(r.t, r.Mock.Field("http"), id)
}

// traceOf is openai-mock's account of answer id, as it stands.
func traceOf(t *testing.T, mock, id string) mockTrace {
	t.Helper()
	code, body, err := getWhole("http://" + mock + "/mock/traces/" + id)
	var tr mockTrace
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &tr) != nil {
		t.Fatalf("trace %s: %d %s (%v)", id, code, body, err)
	}
	return tr
}

// finishedTrace waits until openai-mock has finished answering id and
// returns its account of what it sent.
func finishedTrace(t *testing.T, mock, id string) mockTrace {
	t.Helper()
	var tr mockTrace
	harness.Eventually(t, 5*time.Second, func() error {
		if tr = traceOf(t, mock, id); !tr.Finished {
			return fmt.Errorf("the mock still sends %s: %+v", id, tr)
		}
		return nil
	})
	return tr
}

// getWhole fetches u (an admin or mock URL) whole with rawClient.
func getWhole(u string) (int, []byte, error) {
	resp, err := rawClient.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s: %w", u, err)
	}
	return resp.StatusCode, body, nil
}

// chatBody is a gpt-4o chat request on streamMessages.
func chatBody(t *testing.T, stream bool) []byte {
	t.Helper()
	return chatJSON(t, "gpt-4o", streamMessages, map[string]any{"stream": stream})
}

// chatJSON is a chat completion request on model and messages, with the
// extra fields set.
func chatJSON(t *testing.T, model string, messages any, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{"model": model, "messages": messages}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokengateMD reads the request's tokengate dynamic metadata.
type tokengateMD struct {
	prompt, completion, total, remaining int
	decision, source                     string
}

func metadataOf(t *testing.T, rec front.RequestStats) tokengateMD {
	t.Helper()
	f := rec.Metadata.GetFields()["tokengate"].GetStructValue().GetFields()
	if f == nil {
		t.Fatalf("record %+v has no tokengate metadata", rec)
	}
	n := func(k string) int { return int(f[k].GetNumberValue()) }
	return tokengateMD{
		prompt: n("prompt_tokens"), completion: n("completion_tokens"), total: n("total_tokens"),
		remaining: n("remaining_tokens"), decision: f["decision"].GetStringValue(), source: f["source"].GetStringValue(),
	}
}

// within reports whether got is within pct percent of want.
func withinPct(got, want int, pct float64) bool {
	d := float64(got - want)
	return d <= float64(want)*pct/100 && -d <= float64(want)*pct/100
}
