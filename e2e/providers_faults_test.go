package e2e

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// pvSettledOnce checks, once a test's requests are all done, that each
// key was settled exactly once (one decision line with a source) and
// that its window still holds what it held when its request settled: no
// late second settlement slipped in after the checks of its subtest.
func pvSettledOnce(t *testing.T, r *pvRig, windows map[string]int) {
	t.Helper()
	for key, want := range windows {
		if lines := r.settledLines(key); len(lines) != 1 {
			t.Errorf("key %s: %d settlements logged, want 1: %q", key, len(lines), lines)
		}
		if got := r.window(t, key); got != want {
			t.Errorf("key %s: the window holds %d at the end, want the %d charged once", key, got, want)
		}
	}
}

// pvWantCharge checks what one settlement moved: one request, and the
// tokens under source alone.
func pvWantCharge(t *testing.T, d pvCharge, source string, want map[string]int) {
	t.Helper()
	if d.requests != 1 {
		t.Errorf("tokengate_requests_total moved by %d, want 1", d.requests)
	}
	if w := map[string]map[string]int{source: want}; !pvSameTokens(d.tokens, w) {
		t.Errorf("tokengate_tokens_total moved by %v, want %v", d.tokens, w)
	}
}

// TestProvidersStreamError ends each API's stream with its mid-stream
// error after two text events (x-mock-stream-error-after: 2; OpenAI has
// none, so its upstream drops the connection at the same point) and
// checks that the request is settled exactly once, charged what the
// stream reported or delivered: Anthropic's message_start prompt (input +
// cache read + cache write) plus the text counted, source counted;
// Gemini's usage so far, which every chunk carries, source reported;
// Bedrock's estimated prompt plus the text counted.
func TestProvidersStreamError(t *testing.T) {
	r := pvStart(t)
	tests := []struct {
		call    string
		headers []string
		// source is the count's; err how the client's read ends (nil: a
		// clean end of the body); errored: the stream carried the API's
		// error.
		source  string
		err     error
		errored bool
	}{
		{"anthropic stream", []string{"x-mock-stream-error-after", "2", "x-mock-cache-read", "5", "x-mock-cache-write", "3"}, "counted", nil, true},
		{"bedrock invoke-with-response-stream", []string{"x-mock-stream-error-after", "2"}, "counted", nil, true},
		{"gemini sse", []string{"x-mock-stream-error-after", "2", "x-mock-cache-read", "5", "x-mock-reasoning", "7"}, "reported", nil, false},
		{"gemini array", []string{"x-mock-stream-error-after", "2", "x-mock-cache-read", "5", "x-mock-reasoning", "7"}, "reported", io.ErrUnexpectedEOF, false},
		{"bedrock converse-stream", []string{"x-mock-stream-error-after", "2"}, "counted", nil, true},
		// The role event and two text events, then the connection drops.
		{"openai stream", []string{"x-mock-cut-after", "3"}, "counted", io.ErrUnexpectedEOF, false},
	}
	windows := map[string]int{}
	for i, tt := range tests {
		c := pvPick(t, tt.call)[0]
		t.Run(c.name, func(t *testing.T) {
			key := fmt.Sprintf("pv-error-%d", i)
			windows[key] = 0
			before := r.charges(t)
			resp, rid := r.send(t, c, key, append([]string{"x-mock-completion-tokens", "30"}, tt.headers...)...)
			pvWantStream(t, c, resp)
			s, err := pvReadStream(t, c, pvNewReader(c.framing, resp.Body), nil)
			if !errors.Is(err, tt.err) || s.errored != tt.errored || s.finished || s.texts != 2 {
				t.Fatalf("the client read %d events, %d with text, then %v (errored %v, finished %v); want two text events, then %v (errored %v)",
					s.events, s.texts, err, s.errored, s.finished, tt.err, tt.errored)
			}
			tr := finishedTrace(t, r.Mock.Field("http"), pvTraceID(c, resp, s.id))
			delivered := tokenize.Text(c.p.model, s.text)
			if tr.Text != s.text || tr.Done || (c.p.name == "openai") != tr.Cut {
				t.Fatalf("the mock's trace %+v; the client read %q", tr, s.text)
			}

			// What the stream says it cost.
			prompt, completion := pvPrompt(c.p.model), delivered
			want := map[string]int{}
			switch {
			case tt.source == "reported":
				if s.usage == nil {
					t.Fatal("no usage in the stream")
				}
				prompt, completion = s.usage.prompt, s.usage.completion
				for k, v := range map[string]int{"cached": s.usage.cacheRead, "cache_write": s.usage.cacheWrite, "reasoning": s.usage.reasoning} {
					if v != 0 {
						want[k] = v
					}
				}
			case c.p.name == "anthropic":
				if s.started == nil {
					t.Fatal("no message_start usage in the stream")
				}
				prompt = s.started.prompt
			}
			want["prompt"], want["completion"] = prompt, completion

			r.waitSettled(t, c.name, before.requests+1)
			rec := r.record(t, rid)
			d := r.charges(t).minus(before)
			lines := r.settledLines(key)
			t.Logf("%s: the client read %d completion tokens (the mock sent %d) and the stream's error; tokengate charged %v; log: %q",
				c.name, delivered, tr.CompletionTokens, d.tokens, lines)
			pvWantCharge(t, d, tt.source, want)
			if prompt != pvPrompt(c.p.model) {
				t.Errorf("the stream reported a prompt of %d, the request's counts %d", prompt, pvPrompt(c.p.model))
			}
			if len(lines) != 1 || !strings.Contains(lines[0], fmt.Sprintf(`"source": %q`, tt.source)) {
				t.Errorf("tokengate logged %d settlements for the key, want one with source %s", len(lines), tt.source)
			}
			if w := r.window(t, key); w != prompt+completion {
				t.Errorf("the window holds %d, want %d (%d prompt + %d completion)", w, prompt+completion, prompt, completion)
			}
			windows[key] = prompt + completion
			if rec.ModeOverrides != 1 {
				t.Errorf("%d mode overrides honoured, want 1", rec.ModeOverrides)
			}
			// A stream the upstream ended (even with an error) settles at
			// its end, with metadata; a cut one when the stream is reset.
			if tt.err == nil || c.framing == pvArray {
				md := pvMetadata(t, rec)
				if md.source != tt.source || md.prompt != prompt || md.completion != completion || md.total != prompt+completion {
					t.Errorf("metadata %+v, want %d prompt + %d completion, source %s", md, prompt, completion, tt.source)
				}
			}
		})
	}
	pvSettledOnce(t, r, windows)
}

// TestProvidersClientDisconnect reads each API's stream until two text
// events came, then hangs up while the mock still streams (slowed by
// x-mock-chunk-delay). tokengate must settle once, charged the prompt
// plus the text it let through: at least what the client read, at most
// what the mock sent before the hang-up reached it.
func TestProvidersClientDisconnect(t *testing.T) {
	r := pvStart(t)
	tests := []struct {
		call   string
		source string // Gemini's chunks all carry the usage so far
	}{
		{"anthropic stream", "counted"},
		{"gemini sse", "reported"},
		{"gemini array", "reported"},
		{"bedrock converse-stream", "counted"},
		{"openai stream", "counted"},
	}
	windows := map[string]int{}
	for i, tt := range tests {
		c := pvPick(t, tt.call)[0]
		t.Run(c.name, func(t *testing.T) {
			key := fmt.Sprintf("pv-hang-up-%d", i)
			windows[key] = 0
			before := r.charges(t)
			resp, rid := r.send(t, c, key, "x-mock-completion-tokens", "60", "x-mock-chunk-delay", "200ms")
			pvWantStream(t, c, resp)
			s, err := pvReadStream(t, c, pvNewReader(c.framing, resp.Body), func(s *pvStream) bool { return s.texts == 2 })
			if err != nil || s.texts != 2 {
				t.Fatalf("the client read %d events, %d with text, then %v; want two text events", s.events, s.texts, err)
			}
			resp.Body.Close() // the client goes away mid-stream
			read := tokenize.Text(c.p.model, s.text)

			r.waitSettled(t, c.name, before.requests+1)
			tr := finishedTrace(t, r.Mock.Field("http"), pvTraceID(c, resp, s.id))
			rec := r.record(t, rid)
			d := r.charges(t).minus(before)
			lines := r.settledLines(key)
			prompt, completion := d.tokens[tt.source]["prompt"], d.tokens[tt.source]["completion"]
			t.Logf("%s: the client read %d completion tokens, the mock sent %d; tokengate charged %v; log: %q",
				c.name, read, tr.CompletionTokens, d.tokens, lines)
			if tr.Done || tr.Usage {
				t.Errorf("the mock finished the stream (%+v): the hang-up did not reach it", tr)
			}
			if !rec.ClientGone {
				t.Errorf("front record %+v, want ClientGone", rec)
			}
			if d.requests != 1 || len(d.tokens) != 1 {
				t.Errorf("%d requests settled, tokens moved %v; want one settlement, all under source %s", d.requests, d.tokens, tt.source)
			}
			if prompt != pvPrompt(c.p.model) {
				t.Errorf("charged %d prompt tokens, want the request's %d", prompt, pvPrompt(c.p.model))
			}
			if completion < read || completion > tr.CompletionTokens {
				t.Errorf("charged %d completion tokens, want between the %d the client read and the %d the mock sent",
					completion, read, tr.CompletionTokens)
			}
			if len(lines) != 1 || !strings.Contains(lines[0], fmt.Sprintf(`"source": %q`, tt.source)) {
				t.Errorf("tokengate logged %d settlements for the key, want one with source %s", len(lines), tt.source)
			}
			if w := r.window(t, key); w != prompt+completion {
				t.Errorf("the window holds %d, want the %d charged", w, prompt+completion)
			}
			windows[key] = prompt + completion
		})
	}
	pvSettledOnce(t, r, windows)
}
