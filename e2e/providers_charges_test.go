package e2e

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// pvCompletion is the completion the mock generates in the charge tests.
const pvCompletion = 30

// pvWantUsage is the usage the mock must report for c's request with its
// breakdown headers: the prompt counted as tokengate estimates it, the
// breakdowns as asked, reasoning on top of the answer's tokens.
func pvWantUsage(t *testing.T, c pvCall) pvUsage {
	t.Helper()
	u := pvUsage{prompt: pvPrompt(c.p.model), completion: pvCompletion}
	for i := 0; i+1 < len(c.p.breakdown); i += 2 {
		n, err := strconv.Atoi(c.p.breakdown[i+1])
		if err != nil {
			t.Fatal(err)
		}
		switch c.p.breakdown[i] {
		case "x-mock-cache-read":
			u.cacheRead = n
		case "x-mock-cache-write":
			u.cacheWrite = n
		case "x-mock-reasoning":
			u.reasoning = n
			u.completion += n
		}
	}
	return u
}

// pvReportedCharge is what the metrics must move by for a settlement of
// reported usage u: every kind under source reported, the breakdowns only
// when not zero (an untouched series exports nothing).
func pvReportedCharge(u pvUsage) map[string]map[string]int {
	m := map[string]int{"prompt": u.prompt, "completion": u.completion}
	for k, v := range map[string]int{"cached": u.cacheRead, "cache_write": u.cacheWrite, "reasoning": u.reasoning} {
		if v != 0 {
			m[k] = v
		}
	}
	return map[string]map[string]int{"reported": m}
}

// pvSameTokens compares two tokens[source][kind] maps.
func pvSameTokens(a, b map[string]map[string]int) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]int) bool { return maps.Equal(x, y) })
}

// TestProvidersCharges sends each API's request, buffered and streamed
// (Gemini in both framings), each under a key of its own sent where the
// API's callers send it, and checks that tokengate charged exactly the
// usage the mock reported: in the key's window, in
// tokengate_tokens_total's prompt, completion and breakdown kinds (source
// reported), in the dynamic metadata and in its log; the prompt being
// input + cache read + cache write (README, "APIs and usage"). The
// breakdowns asked of the mock: Anthropic and Bedrock cache read and
// write, Gemini cache read and reasoning; the mock reports none for
// OpenAI, whose breakdown series must then not move. A well-formed body
// of any API must be read (tokengate_unreadable_bodies_total). Each
// request also carries a decoy key in a header another API is keyed by:
// its window stays empty.
func TestProvidersCharges(t *testing.T) {
	r := pvStart(t)
	calls := pvPick(t, "anthropic buffered", "anthropic stream", "gemini buffered", "gemini sse", "gemini array",
		"bedrock converse", "bedrock converse-stream", "openai buffered", "openai stream")
	windows := map[string]int{} // every key used, and what its window must hold
	for i, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			key, decoy := fmt.Sprintf("pv-charge-%d", i), fmt.Sprintf("pv-charge-%d-decoy", i)
			windows[key], windows[decoy] = 0, 0
			before := r.charges(t)
			headers := append([]string{"x-mock-completion-tokens", strconv.Itoa(pvCompletion), c.p.decoy, decoy}, c.p.breakdown...)
			resp, rid := r.send(t, c, key, headers...)
			var id string
			var got pvUsage
			if c.stream() {
				pvWantStream(t, c, resp)
				s, err := pvReadStream(t, c, pvNewReader(c.framing, resp.Body), nil)
				if err != nil || !s.finished || s.errored || s.usage == nil {
					t.Fatalf("stream of %d events ended with %v (finished %v, errored %v, usage %v); want a whole stream with usage",
						s.events, err, s.finished, s.errored, s.usage)
				}
				id, got = pvTraceID(c, resp, s.id), *s.usage
				if n := tokenize.Text(c.p.model, s.text); n != pvCompletion {
					t.Errorf("the client read %d completion tokens, want %d", n, pvCompletion)
				}
			} else {
				id, got = pvBufferedAnswer(t, c, resp)
			}
			want := pvWantUsage(t, c)
			if got != want {
				t.Fatalf("the mock reported %+v, want %+v", got, want)
			}
			if tr := finishedTrace(t, r.Mock.Field("http"), id); !tr.Usage || tr.CompletionTokens != pvCompletion {
				t.Errorf("the mock's trace %+v: want usage sent and %d completion tokens", tr, pvCompletion)
			}
			windows[key] = got.total()

			r.waitSettled(t, c.name, before.requests+1)
			rec := r.record(t, rid)
			d := r.charges(t).minus(before)
			wantTokens := pvReportedCharge(got)
			t.Logf("%s: the mock reported %+v; tokengate charged %v", c.name, got, d.tokens)
			if !pvSameTokens(d.tokens, wantTokens) {
				t.Errorf("tokengate_tokens_total moved by %v, want %v: exactly the reported usage", d.tokens, wantTokens)
			}
			if d.unreadable != 0 {
				t.Errorf("tokengate found %d well-formed request bodies unreadable: %q", d.unreadable, r.unreadableLines(key))
			}
			if c.stream() && rec.ModeOverrides != 1 {
				t.Errorf("%d mode overrides honoured, want 1: the stream switched to STREAMED", rec.ModeOverrides)
			}
			md := pvMetadata(t, rec)
			wantMD := pvMD{prompt: got.prompt, completion: got.completion, total: got.total(), cached: got.cacheRead,
				cacheWrite: got.cacheWrite, reasoning: got.reasoning, decision: "allowed", source: "reported"}
			if md != wantMD {
				t.Errorf("metadata %+v, want %+v", md, wantMD)
			}
			if w := r.window(t, key); w != got.total() {
				t.Errorf("key %s's window holds %d, want the %d reported (%d prompt + %d completion)", key, w, got.total(), got.prompt, got.completion)
			}
			if w := r.window(t, decoy); w != 0 {
				t.Errorf("the decoy key in %s holds %d, want 0: %s is not where this API's callers send their key", c.p.decoy, w, c.p.decoy)
			}
			lines := r.settledLines(key)
			if len(lines) != 1 || !strings.Contains(lines[0], `"source": "reported"`) {
				t.Errorf("tokengate logged %d settlements for the key, want one with source reported: %q", len(lines), lines)
			}
		})
	}
	// Each key has its own window: nothing of one request landed on
	// another's key.
	for key, want := range windows {
		if got := r.window(t, key); got != want {
			t.Errorf("at the end key %s's window holds %d, want %d", key, got, want)
		}
	}
}
