package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// biReported, as a biRow.charged value, stands for the answer's own
// usage.total_tokens.
const biReported = -1

// biRow is one bad request through a front and everything it must cause.
type biRow struct {
	name     string
	method   string   // POST when empty
	path     string   // biChatPath when empty
	headers  []string // name, value pairs, added in order
	body     []byte
	status   int    // what the client must get
	code     string // tokengate's error code, when the answer is tokengate's own
	upstream bool   // whether the request must reach the upstream
	policy   string // where charged is read; bad when empty
	// charged is what each key's window must hold afterwards.
	charged map[string]int64
	moves   []biMove
	// debugKey, when set, is a key whose request must be logged at DEBUG
	// with a word about JSON: why its body was passed through.
	debugKey string
}

// biAllowedOnce is the metric of a request that tokengate admitted and then
// settled exactly once, whatever it was charged.
func biAllowedOnce(policy string) biMove {
	return biMove{name: "tokengate_requests_total", labels: []string{"policy", policy, "decision", "allowed"}, by: 1}
}

var biPassedOnce = biMove{name: "tokengate_passthrough_total", by: 1}

// run sends row through the front f at base and checks it.
func (r *biRig) run(t *testing.T, f *front.Front, base string, row biRow) (*http.Response, []byte, front.RequestStats) {
	t.Helper()
	method, path, policy := row.method, row.path, row.policy
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = biChatPath
	}
	if policy == "" {
		policy = "bad"
	}
	before := make([]float64, len(row.moves))
	for i, m := range row.moves {
		before[i] = r.metric(t, m.name, m.labels...)
	}
	logFrom := len(r.Tokengate.Stderr())

	resp, body, rec := r.exchange(t, f, r.request(t, base, method, path, row.body, row.headers...))
	if row.code != "" {
		wantJSONError(t, row.name, resp, body, row.status, row.code)
	} else if resp.StatusCode != row.status {
		t.Errorf("status %d, want %d; body %.300s", resp.StatusCode, row.status, body)
	}
	if rec.UpstreamCalled != row.upstream {
		t.Errorf("reached the upstream: %v, want %v (record %+v)", rec.UpstreamCalled, row.upstream, rec)
	}
	if rec.GRPCError != "" {
		t.Errorf("the ext_proc stream failed: %s", rec.GRPCError)
	}
	biWantProtocol(t, rec)
	for key, want := range row.charged {
		if want == biReported {
			want = int64(usageTotal(t, row.name, body))
		}
		if got := r.used(t, policy, key); got != want {
			t.Errorf("key %.24q under %s holds %d, want %d", key, policy, got, want)
		}
	}
	for i, m := range row.moves {
		if got := r.metric(t, m.name, m.labels...) - before[i]; got != m.by {
			t.Errorf("%v moved by %v, want %v", m, got, m.by)
		}
	}
	if row.debugKey != "" {
		r.waitDebugLine(t, logFrom, row.debugKey, "json")
	}
	return resp, body, rec
}

// TestBadInputSpecTable is SPEC §10's bad-input rows, one case each,
// through the front and the real binaries. (Its fault rows — store
// unavailable, kill -9, a second process, invalid config — belong to the
// fault suite.)
func TestBadInputSpecTable(t *testing.T) {
	r := startBadInput(t)
	rows := []biRow{
		{
			name: "malformed JSON body", headers: []string{"api-key", "bi-malformed"},
			body:   []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"cut he`),
			status: http.StatusBadRequest, upstream: true,
			charged: map[string]int64{"bi-malformed": 0}, moves: []biMove{biAllowedOnce("bad")}, debugKey: "bi-malformed",
		},
		{
			name: "non-JSON body", headers: []string{"api-key", "bi-not-json", "Content-Type", "text/plain"},
			body:   []byte("hello, this is not JSON at all"),
			status: http.StatusBadRequest, upstream: true,
			charged: map[string]int64{"bi-not-json": 0}, moves: []biMove{biAllowedOnce("bad")}, debugKey: "bi-not-json",
		},
		{
			name: "missing key", body: biChat(t, nil),
			status: http.StatusUnauthorized, code: "missing_subscription_key",
			moves: []biMove{{name: "tokengate_requests_total", labels: []string{"policy", "bad", "decision", "missing_key"}, by: 1}},
		},
		{
			name: "unknown path, GET", method: http.MethodGet, path: "/v1/models", headers: []string{"api-key", "bi-unknown-path"},
			status: http.StatusNotFound, upstream: true,
			charged: map[string]int64{"bi-unknown-path": 0}, moves: []biMove{biPassedOnce},
		},
		{
			name: "unknown path, POST with a chat body", path: "/v1/chat/completions/extra/v2/things", headers: []string{"api-key", "bi-unknown-post"},
			body: biChat(t, nil), status: http.StatusNotFound, upstream: true,
			charged: map[string]int64{"bi-unknown-post": 0}, moves: []biMove{biPassedOnce},
		},
		{
			// Inference is a POST: other methods on an inference path are
			// not generations and pass uncounted.
			name: "GET on an inference path", method: http.MethodGet, path: biChatPath, headers: []string{"api-key", "bi-get-chat"},
			status: http.StatusNotFound, upstream: true,
			charged: map[string]int64{"bi-get-chat": 0}, moves: []biMove{biPassedOnce},
		},
		{
			name: "PUT with a chat body on an inference path", method: http.MethodPut, path: biChatPath, headers: []string{"api-key", "bi-put-chat"},
			body: biChat(t, nil), status: http.StatusNotFound, upstream: true,
			charged: map[string]int64{"bi-put-chat": 0}, moves: []biMove{biPassedOnce},
		},
		{
			name: "upstream 500 without usage", headers: []string{"api-key", "bi-up-500", "x-mock-status", "500"},
			body: biChat(t, nil), status: http.StatusInternalServerError, upstream: true,
			charged: map[string]int64{"bi-up-500": 0}, moves: []biMove{biAllowedOnce("bad")},
		},
		{
			name: "upstream 503 without usage, streamed request", headers: []string{"api-key", "bi-up-503", "x-mock-status", "503"},
			body: biChat(t, map[string]any{"stream": true}), status: http.StatusServiceUnavailable, upstream: true,
			charged: map[string]int64{"bi-up-503": 0}, moves: []biMove{biAllowedOnce("bad")},
		},
		{
			name: "upstream 429 without usage", headers: []string{"api-key", "bi-up-429", "x-mock-status", "429"},
			body: biChat(t, nil), status: http.StatusTooManyRequests, upstream: true,
			charged: map[string]int64{"bi-up-429": 0}, moves: []biMove{biAllowedOnce("bad")},
		},
		{
			name: "upstream 400 without usage", headers: []string{"api-key", "bi-up-400", "x-mock-status", "400"},
			body: biChat(t, nil), status: http.StatusBadRequest, upstream: true,
			charged: map[string]int64{"bi-up-400": 0}, moves: []biMove{biAllowedOnce("bad")},
		},
		{
			// Invalid bytes in a JSON string decode to U+FFFD, for
			// tokengate as for the upstream: the prompt is counted.
			name: "invalid UTF-8 in the prompt", headers: []string{"api-key", "bi-bad-utf8"},
			body:   []byte("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xc3 na\xefve \xff\xfe\xfd, a lone half \xe6\x97 and \xf0\x9f\"}]}"),
			status: http.StatusOK, upstream: true,
			charged: map[string]int64{"bi-bad-utf8": biReported}, moves: []biMove{biAllowedOnce("bad")},
		},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) { r.run(t, r.Front, r.URL, row) })
	}

	t.Run("body larger than the gRPC receive limit", func(t *testing.T) {
		const key = "bi-too-large"
		big := biChat(t, map[string]any{"messages": []map[string]string{{"role": "user", "content": strings.Repeat("word ", 4*biReceiveLimit/5)}}})
		row := biRow{
			name: "1 MiB body", headers: []string{"api-key", key}, body: big,
			status: http.StatusInternalServerError, upstream: false, moves: []biMove{biAllowedOnce("bad")},
			charged: map[string]int64{key: 0},
		}
		// Not through run: the failed stream is the expected outcome.
		before := r.metric(t, row.moves[0].name, row.moves[0].labels...)
		resp, body, rec := r.exchange(t, r.Front, r.request(t, r.URL, http.MethodPost, biChatPath, row.body, row.headers...))
		if resp.StatusCode != row.status {
			t.Errorf("status %d, want %d (Envoy's answer to a failed ext_proc stream); body %.300s", resp.StatusCode, row.status, body)
		}
		if !strings.Contains(rec.GRPCError, "ResourceExhausted") {
			t.Errorf("ext_proc stream error %q, want ResourceExhausted from the receive limit", rec.GRPCError)
		}
		if rec.UpstreamCalled {
			t.Error("the oversized request reached the upstream")
		}
		// tokengate settles the failed stream once it notices the failure,
		// which the front may answer the client before.
		if got := r.waitMetric(t, before+1, row.moves[0].name, row.moves[0].labels...) - before; got != 1 {
			t.Errorf("%v moved by %v, want 1: the request must be settled exactly once", row.moves[0], got)
		}
		if got := r.used(t, "bad", key); got != 0 {
			t.Errorf("the refused body left %d tokens on the key, want 0", got)
		}
		// tokengate is still up and the key still works.
		r.run(t, r.Front, r.URL, biRow{
			name: "next request", headers: []string{"api-key", key}, body: biChat(t, nil),
			status: http.StatusOK, upstream: true, charged: map[string]int64{key: biReported}, moves: []biMove{biAllowedOnce("bad")},
		})
	})

	t.Run("missing key counted as anonymous", func(t *testing.T) {
		_, b1, _ := r.run(t, r.Front, r.URL, biRow{
			name: "first", path: biAnonPath, body: biChat(t, nil), status: http.StatusOK, upstream: true,
			policy: "anon", charged: map[string]int64{"anonymous": biReported}, moves: []biMove{biAllowedOnce("anon")},
		})
		first := int64(usageTotal(t, "first", b1))
		_, b2, _ := r.run(t, r.Front, r.URL, biRow{
			name: "second", path: biAnonPath, body: biChat(t, nil), status: http.StatusOK, upstream: true,
			policy: "anon", moves: []biMove{biAllowedOnce("anon")},
		})
		if got, want := r.used(t, "anon", "anonymous"), first+int64(usageTotal(t, "second", b2)); got != want {
			t.Errorf("the anonymous key holds %d after two keyless requests, want %d", got, want)
		}
		// A request with a key on the same policy has its own budget.
		r.run(t, r.Front, r.URL, biRow{
			name: "with a key", path: biAnonPath, headers: []string{"api-key", "bi-anon-keyed"}, body: biChat(t, nil),
			status: http.StatusOK, upstream: true, policy: "anon", charged: map[string]int64{"bi-anon-keyed": biReported},
		})
	})

	t.Run("SSE cut mid-stream", func(t *testing.T) {
		const key = "bi-sse-cut"
		settled := r.metric(t, "tokengate_requests_total", "policy", "bad", "decision", "allowed")
		n := len(r.Front.Completed())
		req := r.request(t, r.URL, http.MethodPost, biChatPath, biChat(t, map[string]any{"stream": true}),
			"api-key", key, "x-mock-completion-tokens", "60", "x-mock-cut-after", "6")
		resp, err := rawClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		events, err := readEvents(bufio.NewReader(resp.Body), -1)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err == nil || len(events) != 6 {
			t.Fatalf("status %d, %d events ending with %v; want 200 and 6 events cut short", resp.StatusCode, len(events), err)
		}
		got := parseStream(t, events)
		if got.done || got.usage != nil {
			t.Fatalf("the cut stream ended properly: %+v", got)
		}
		r.record(t, r.Front, n)
		// Prompt estimate plus the completion that went through: every
		// byte the client got passed tokengate first.
		r.waitUsed(t, "bad", key, biPrompt()+int64(tokenize.Text("gpt-4o", got.text)))
		if d := r.metric(t, "tokengate_requests_total", "policy", "bad", "decision", "allowed") - settled; d != 1 {
			t.Errorf("%v settlements for one cut stream, want 1", d)
		}
	})

	t.Run("client disconnects mid-stream", func(t *testing.T) {
		const key = "bi-hang-up"
		settled := r.metric(t, "tokengate_requests_total", "policy", "bad", "decision", "allowed")
		req := r.request(t, r.URL, http.MethodPost, biChatPath, biChat(t, map[string]any{"stream": true}),
			"api-key", key, "x-mock-completion-tokens", "60", "x-mock-stall-after", "3", "x-mock-stall", "1m")
		resp, err := rawClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		events, err := readEvents(bufio.NewReader(resp.Body), 3)
		resp.Body.Close() // the client goes away while the upstream stalls
		if resp.StatusCode != http.StatusOK || err != nil || len(events) != 3 {
			t.Fatalf("status %d, %d events (%v); want 200 and 3 events", resp.StatusCode, len(events), err)
		}
		got := parseStream(t, events)
		r.waitUsed(t, "bad", key, biPrompt()+int64(tokenize.Text("gpt-4o", got.text)))
		if d := r.metric(t, "tokengate_requests_total", "policy", "bad", "decision", "allowed") - settled; d != 1 {
			t.Errorf("%v settlements for one abandoned stream, want 1", d)
		}
	})

	for _, enc := range []string{"gzip", "deflate", "br"} {
		t.Run("compressed answer, "+enc, func(t *testing.T) {
			key := "bi-enc-" + enc
			resp, wire, _ := r.run(t, r.Front, r.URL, biRow{
				name: enc, headers: []string{"api-key", key, "x-mock-encoding", enc}, body: biChat(t, nil),
				status: http.StatusOK, upstream: true, moves: []biMove{biAllowedOnce("bad")},
			})
			if got := resp.Header.Get("Content-Encoding"); got != enc {
				t.Fatalf("content-encoding %q, want %q", got, enc)
			}
			var c struct {
				ID    string     `json:"id"`
				Usage *wireUsage `json:"usage"`
			}
			if err := json.Unmarshal(decompress(t, enc, wire), &c); err != nil || c.Usage == nil {
				t.Fatalf("decoded answer: %v (usage %v)", err, c.Usage)
			}
			if got := r.used(t, "bad", key); got != int64(c.Usage.TotalTokens) {
				t.Errorf("charged %d, want the reported %d", got, c.Usage.TotalTokens)
			}
			tr := finishedTrace(t, r.Mock.Field("http"), c.ID)
			if tr.WireSHA256 != sha256Hex(wire) || tr.WireBytes != int64(len(wire)) {
				t.Errorf("the client got %d bytes, the mock sent %d: the body was changed on the way", len(wire), tr.WireBytes)
			}
		})
	}

	t.Run("unknown model is counted with o200k_base", func(t *testing.T) {
		const model = "acme-llm-7b-unknown"
		text := "Привет! Сколько сейчас времени в Токио? こんにちは、世界。Ελληνικά κείμενα."
		msgs := []tokenize.Message{{Role: "user", Content: text}}
		o200k, cl100k := tokenize.Chat("gpt-4o", msgs), tokenize.Chat("gpt-4", msgs)
		if o200k == cl100k {
			t.Fatalf("the prompt counts %d in both encodings: pick one that tells them apart", o200k)
		}
		body, err := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}})
		if err != nil {
			t.Fatal(err)
		}
		const hist = "tokengate_prompt_estimate_error_ratio"
		count0, exact0, under0 := r.metric(t, hist+"_count"), r.metric(t, hist+"_bucket", "le", "0"), r.metric(t, hist+"_bucket", "le", "-0.01")
		_, got, _ := r.run(t, r.Front, r.URL, biRow{
			name: model, headers: []string{"api-key", "bi-unknown-model"}, body: body,
			status: http.StatusOK, upstream: true, charged: map[string]int64{"bi-unknown-model": biReported},
			moves: []biMove{biAllowedOnce("bad")},
		})
		var c struct {
			Usage wireUsage `json:"usage"`
		}
		if err := json.Unmarshal(got, &c); err != nil {
			t.Fatal(err)
		}
		if c.Usage.PromptTokens != o200k {
			t.Fatalf("the mock reports %d prompt tokens for %s, want the o200k count %d", c.Usage.PromptTokens, model, o200k)
		}
		// The estimate-vs-reported histogram saw one observation in
		// (-0.01, 0]: tokengate's estimate is the o200k count (one token
		// off would be several percent of this prompt).
		count, exact, under := r.metric(t, hist+"_count")-count0, r.metric(t, hist+"_bucket", "le", "0")-exact0, r.metric(t, hist+"_bucket", "le", "-0.01")-under0
		if count != 1 || exact != 1 || under != 0 {
			t.Errorf("estimate error observations: %v in all, %v at or under 0, %v under -1%%; want 1, 1, 0 (estimate = o200k count %d, cl100k would be %d)",
				count, exact, under, o200k, cl100k)
		}
	})
}
