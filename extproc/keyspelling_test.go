package extproc

import (
	"context"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/internal/config"
)

// Each spelling of what the upstream (or Envoy) treats as one thing is
// one budget: a client must not get a fresh one by spelling its route,
// host or path otherwise, or by naming its key where its API does not
// read it.

func withAttribute(m *extprocv3.ProcessingRequest, name, value string) *extprocv3.ProcessingRequest {
	m.Attributes = map[string]*structpb.Struct{attributesKey: {Fields: map[string]*structpb.Value{name: structpb.NewStringValue(value)}}}
	return m
}

// spent plays two requests of 50 tokens (the budget of 100 spent) with
// first(base), then one with first(other) for each other spelling, which
// must find the same budget spent.
func spent(t *testing.T, e *env, first func(string) *extprocv3.ProcessingRequest, base string, others ...string) {
	t.Helper()
	e.answered(t, first(base), labBody)
	e.answered(t, first(base), labBody)
	for _, o := range others {
		if got := e.answered(t, first(o), labBody); got != 429 {
			t.Errorf("%q after %q spent its 100 tokens: status %d, want 429 (the same budget)", o, base, got)
		}
	}
}

func TestRouteSpellingsShareABudget(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, counter_key: {header: [api-key], per_route: true}}"))
	spent(t, e, func(path string) *extprocv3.ProcessingRequest {
		return reqHeaders(false, ":method", "POST", ":path", path, "api-key", "k")
	}, "/v1/chat/completions", "/v1/chat/completions/", "/v1/chat/completions/?x=1", "//v1/chat/completions//")
}

func TestHostAttributeIgnoresCase(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, counter_key: {attribute: request.host}}"))
	spent(t, e, func(host string) *extprocv3.ProcessingRequest {
		return withAttribute(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", ":authority", host), "request.host", host)
	}, "acme.example.com", "ACME.example.com", "Acme.Example.Com.")
}

func TestPathAttributeIsTheRoute(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, counter_key: {attribute: request.path}}"))
	spent(t, e, func(path string) *extprocv3.ProcessingRequest {
		return withAttribute(reqHeaders(false, ":method", "POST", ":path", path), "request.path", path)
	}, "/v1/chat/completions", "/v1/chat/completions?n=1", "/v1/chat/completions/", "/v1/chat%2Fcompletions")
}

// TestCompositeKeysReadEachAPIsKey: a policy naming no key header keys
// each API's callers where they send their key, per_route or not: an
// Anthropic caller is its x-api-key, whatever api-key it adds.
func TestCompositeKeysReadEachAPIsKey(t *testing.T) {
	body := `{"model":"claude-sonnet-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	answer := `{"type":"message","content":[],"usage":{"input_tokens":40,"output_tokens":10}}`
	play := func(e *env, kv ...string) int {
		out := e.run(t, reqHeaders(false, append([]string{":method", "POST", ":path", "/v1/messages"}, kv...)...), reqBody(body),
			respHeaders("200", false, "content-type", "application/json"), respBody(answer))
		for _, o := range out {
			if imm := o.GetImmediateResponse(); imm != nil {
				return int(imm.GetStatus().GetCode())
			}
		}
		return 0
	}
	e := newEnv(t, config.Policy{Name: "lab", TokensPerMinute: 100, CounterKey: config.CounterKey{PerRoute: true}})
	var got []int
	for _, fake := range []string{"f1", "f2", "f3"} {
		got = append(got, play(e, "x-api-key", "real", "api-key", fake))
	}
	if got[0] != 0 || got[2] != 429 {
		t.Errorf("statuses %v: want the first let through and the third refused (one x-api-key, 100 tokens, 50 a request)", got)
	}
}

// TestLongModelNamesAreBounded: a per_model key holds the model's name,
// which the client writes; past 128 bytes (no real model's) it holds its
// hash, so that a key stays small in memory, in Redis and on disk.
func TestLongModelNamesAreBounded(t *testing.T) {
	e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key], per_model: true}}"))
	for _, model := range []string{strings.Repeat("m", 1<<20), strings.Repeat("m", 1<<20-1) + "n"} {
		body := strings.Replace(labBody, `"gpt-4o"`, `"`+model+`"`, 1)
		e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(body))
	}
	keys, err := e.store.List(context.Background(), "lab:", e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Errorf("two long model names: %d keys, want 2 (each its own budget still)", len(keys))
	}
	for _, k := range keys {
		if len(k.Key) > 256 {
			t.Errorf("a counter key of %d bytes from a made-up model", len(k.Key))
		}
	}
}
