package extproc

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/tokengate/tokengate/extproc/decode/decodetest"
	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// What the upstream may read, tokengate reads: a compressed body, a body
// with Python's NaN, a path with an escaped slash are estimated like the
// plain request; what it cannot read is refused or charged by its bytes.

func compress(t *testing.T, enc string, body string) string {
	t.Helper()
	var b bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&b)
	case "br":
		w = brotli.NewWriter(&b)
	case "zstd":
		w, _ = zstd.NewWriter(&b)
	}
	w.Write([]byte(body))
	w.Close()
	return b.String()
}

func TestReadsWhatTheUpstreamReads(t *testing.T) {
	prompt := labPrompt(t)
	estimating := "{name: lab, tokens_per_minute: 100000, estimate_prompt_tokens: true, counter_key: {header: [api-key]}}"
	cases := []struct {
		name, path, body string
		headers          []string
	}{
		{"plain", "/v1/chat/completions", labBody, nil},
		{"gzip", "/v1/chat/completions", compress(t, "gzip", labBody), []string{"content-encoding", "gzip"}},
		{"br", "/v1/chat/completions", compress(t, "br", labBody), []string{"content-encoding", "br"}},
		{"zstd", "/v1/chat/completions", compress(t, "zstd", labBody), []string{"content-encoding", "zstd"}},
		{"NaN", "/v1/chat/completions", strings.Replace(labBody, `"model"`, `"temperature":NaN,"top_p":Infinity,"model"`, 1), nil},
		{"escaped slash", "/v1/chat%2Fcompletions", labBody, nil},
	}
	for _, tc := range cases {
		e := newEnv(t, parsePolicy(t, estimating))
		p := &processor{s: e.srv, ctx: t.Context()}
		h := append([]string{":method", "POST", ":path", tc.path, "api-key", "k"}, tc.headers...)
		p.handle(reqHeaders(false, h...))
		r := p.handle(reqBody(tc.body))
		if r.GetImmediateResponse() != nil {
			t.Errorf("%s: refused %v", tc.name, r)
		}
		if got := e.used(t, "lab", "k"); got != prompt {
			t.Errorf("%s: held %d, want the prompt estimate %d", tc.name, got, prompt)
		}
		if len(r.GetRequestBody().GetResponse().GetBodyMutation().GetBody()) != 0 {
			t.Errorf("%s: the body was rewritten", tc.name)
		}
	}
}

func TestUnreadableBodies(t *testing.T) {
	bad := `{"model":"gpt-4o","messages":[` // cut short
	cases := []struct {
		name, policy, encoding, body string
		status                       int32 // 0: let through
		held                         int64
	}{
		{"strict refuses", "reserve_completion: max_tokens", "", bad, 400, 0},
		{"strict refuses an unknown encoding", "reserve_completion: max_tokens", "lzma", "xxxx", 400, 0},
		{"estimating charges the bytes", "estimate_prompt_tokens: true", "", bad, 0, int64(len(bad))},
		{"corrupt gzip charges the bytes", "estimate_prompt_tokens: true", "gzip", "not gzip", 0, int64(len("not gzip"))},
		{"pass when told", "estimate_prompt_tokens: true, unreadable_body: pass", "", bad, 0, 0},
		{"refuse when told", "estimate_prompt_tokens: true, unreadable_body: refuse", "", bad, 400, 0},
		{"a policy that does not read the body passes", "count: total", "", bad, 0, 0},
		{"charge_bytes refuses what does not fit", "estimate_prompt_tokens: true, tokens_per_minute: 10", "", bad, 429, 0},
		// charge_bytes holds what the policy's reservation would, with
		// the bytes for the prompt: count prompt holds the bytes alone,
		// strict adds its budget, clamped to what the window leaves.
		{"charge_bytes under count prompt", "reserve_completion: \"500\", count: prompt, unreadable_body: charge_bytes", "", bad, 0, int64(len(bad))},
		{"charge_bytes under strict", "reserve_completion: \"500\", unreadable_body: charge_bytes", "", bad, 0, int64(len(bad)) + 500},
		{"charge_bytes under strict, clamped", "tokens_per_minute: 100, reserve_completion: \"500\", unreadable_body: charge_bytes", "", bad, 0, 100},
	}
	for _, tc := range cases {
		pol := "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key]}, " + tc.policy + "}"
		if strings.Contains(tc.policy, "tokens_per_minute") {
			pol = "{name: lab, counter_key: {header: [api-key]}, " + tc.policy + "}"
		}
		e := newEnv(t, parsePolicy(t, pol))
		p := &processor{s: e.srv, ctx: t.Context()}
		h := []string{":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"}
		if tc.encoding != "" {
			h = append(h, "content-encoding", tc.encoding)
		}
		p.handle(reqHeaders(false, h...))
		r := p.handle(reqBody(tc.body))
		if got := int32(r.GetImmediateResponse().GetStatus().GetCode()); got != tc.status {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, got, tc.status, r)
		}
		if tc.status == 400 && !strings.Contains(string(r.GetImmediateResponse().GetBody()), "unreadable_body") {
			t.Errorf("%s: body %s", tc.name, r.GetImmediateResponse().GetBody())
		}
		if got := e.used(t, "lab", "k"); got != tc.held {
			t.Errorf("%s: held %d, want %d", tc.name, got, tc.held)
		}
	}
}

// TestCompressionBomb: a request body of a few kilobytes that inflates
// to 256 MiB is unreadable (too_large) once it passes what bodies decoded
// at once may hold, 64 MiB by default, and is never held inflated: the
// policy's unreadable_body then answers for it, as for any body not read.
func TestCompressionBomb(t *testing.T) {
	bomb := string(decodetest.Bomb(256))
	for _, tc := range []struct {
		name, policy string
		status       int32
		held         int64
	}{
		{"strict refuses", "reserve_completion: max_tokens", 400, 0},
		{"estimating charges its bytes", "estimate_prompt_tokens: true", 0, int64(len(bomb))},
	} {
		e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key]}, "+tc.policy+"}"))
		p := &processor{s: e.srv, ctx: t.Context()}
		p.handle(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k", "content-encoding", "zstd"))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := p.handle(reqBody(bomb))
		runtime.ReadMemStats(&after)
		if got := int32(r.GetImmediateResponse().GetStatus().GetCode()); got != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.status)
		}
		if tc.status == 400 && !strings.Contains(string(r.GetImmediateResponse().GetBody()), "too_large") {
			t.Errorf("%s: body %s, want the reason too_large", tc.name, r.GetImmediateResponse().GetBody())
		}
		if got := e.used(t, "lab", "k"); got != tc.held {
			t.Errorf("%s: held %d, want %d", tc.name, got, tc.held)
		}
		// The decoder's window (8 MiB at most) and its buffers; the
		// body, inflated, would be 64 MiB before it was refused.
		if got := after.TotalAlloc - before.TotalAlloc; got > 24<<20 {
			t.Errorf("%s: a %d-byte body allocated %d MiB", tc.name, len(bomb), got>>20)
		}
	}
}

// TestDecodedBodiesShareTheirBound: the bound on decoded bodies is for
// all those read at once, each giving its bytes back once read; a body
// alone past it is unreadable.
func TestDecodedBodiesShareTheirBound(t *testing.T) {
	prompt := labPrompt(t)
	policies := compiled(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, estimate_prompt_tokens: true, counter_key: {header: [api-key]}}"))
	gz := compress(t, "gzip", labBody)
	for _, tc := range []struct {
		name  string
		bound int64
		held  int64 // by each of three requests
	}{
		{"each body fits alone", int64(len(labBody)), prompt},
		{"no body fits", int64(len(labBody)) - 1, int64(len(gz))},
	} {
		e := &env{store: memstore.New(), clock: limiter.NewManualClock(t0)}
		e.srv = New(Options{Policies: policies, Store: e.store, Clock: e.clock, MaxDecoded: tc.bound})
		for i := range 3 {
			p := &processor{s: e.srv, ctx: t.Context()}
			key := fmt.Sprint("k", i)
			p.handle(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", key, "content-encoding", "gzip"))
			if r := p.handle(reqBody(gz)); r.GetImmediateResponse() != nil {
				t.Fatalf("%s: request %d refused: %v", tc.name, i, r)
			}
			if got := e.used(t, "lab", key); got != tc.held {
				t.Errorf("%s: request %d held %d, want %d", tc.name, i, got, tc.held)
			}
		}
	}
}
