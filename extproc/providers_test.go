package extproc

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/internal/config"
)

// defaultKeyPolicy names no key header: each API's callers are keyed where
// their SDK sends the key.
func defaultKeyPolicy(tpm int64) config.Policy {
	return config.Policy{Name: "lab", TokensPerMinute: tpm}
}

// Each API's buffered answer is charged its reported usage, all of its
// input included, with the key read where the API's callers send it.
func TestProvidersChargeReportedUsage(t *testing.T) {
	tests := []struct {
		name, path, body, answer string
		keyHeader                []string
		want                     int64
	}{
		{"anthropic", "/v1/messages", `{"model":"claude-sonnet-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`,
			`{"type":"message","content":[{"type":"text","text":"yo"}],"usage":{"input_tokens":10,"cache_read_input_tokens":30,"cache_creation_input_tokens":5,"output_tokens":7}}`,
			[]string{"x-api-key", "k"}, 52},
		{"anthropic bearer", "/anthropic/v1/messages", `{"model":"claude-sonnet-4","max_tokens":100,"messages":[]}`,
			`{"usage":{"input_tokens":3,"output_tokens":4}}`, []string{"authorization", "Bearer k"}, 7},
		{"gemini", "/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`,
			`{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"thoughtsTokenCount":5,"totalTokenCount":15}}`,
			[]string{"x-goog-api-key", "k"}, 15},
		{"gemini key parameter", "/v1beta/models/gemini-2.5-flash:generateContent?key=k", `{"contents":[]}`,
			`{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`, nil, 2},
		{"bedrock", "/model/amazon.nova-pro-v1%3A0/converse", `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`,
			`{"output":{"message":{"content":[{"text":"yo"}]}},"usage":{"inputTokens":6,"outputTokens":3,"totalTokens":9}}`,
			[]string{"authorization", "AWS4-HMAC-SHA256 Credential=k/20261130/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=abc"}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, defaultKeyPolicy(100000))
			kv := append([]string{":method", "POST", ":path", tt.path}, tt.keyHeader...)
			out := e.run(t, reqHeaders(false, kv...), reqBody(tt.body), respHeaders("200", false, "content-type", "application/json"), respBody(tt.answer))
			for _, r := range out {
				if r.GetImmediateResponse() != nil {
					t.Fatalf("refused: %v", r.GetImmediateResponse())
				}
			}
			if got := e.used(t, "lab", "k"); got != tt.want {
				t.Errorf("charged %d, want %d", got, tt.want)
			}
		})
	}
}

// A refusal looks like the API's own rate limit to its SDK.
func TestProvidersRefuseInTheirOwnShape(t *testing.T) {
	tests := []struct {
		path, key, value string
		check            func(t *testing.T, body map[string]any, h *extprocv3.ImmediateResponse)
	}{
		{"/v1/messages", "x-api-key", "k", func(t *testing.T, body map[string]any, h *extprocv3.ImmediateResponse) {
			if body["type"] != "error" || body["error"].(map[string]any)["type"] != "rate_limit_error" {
				t.Errorf("anthropic body %v", body)
			}
			if v, n := headerOf(h.GetHeaders(), "anthropic-ratelimit-tokens-remaining"); n != 1 || v != "0" {
				t.Errorf("anthropic-ratelimit-tokens-remaining %q ×%d", v, n)
			}
			if v, _ := headerOf(h.GetHeaders(), "anthropic-ratelimit-tokens-reset"); !strings.HasPrefix(v, "2026-") {
				t.Errorf("anthropic-ratelimit-tokens-reset %q, want an RFC 3339 time", v)
			}
		}},
		{"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "x-goog-api-key", "k", func(t *testing.T, body map[string]any, h *extprocv3.ImmediateResponse) {
			if e := body["error"].(map[string]any); e["status"] != "RESOURCE_EXHAUSTED" || e["code"] != float64(429) {
				t.Errorf("gemini body %v", body)
			}
		}},
		{"/model/m/converse-stream", "authorization", "AWS4-HMAC-SHA256 Credential=k/d/r/bedrock/aws4_request", func(t *testing.T, body map[string]any, h *extprocv3.ImmediateResponse) {
			if v, _ := headerOf(h.GetHeaders(), "x-amzn-errortype"); v != "ThrottlingException" || body["message"] == nil {
				t.Errorf("bedrock: errortype %q, body %v", v, body)
			}
		}},
	}
	for _, tt := range tests {
		e := newEnv(t, defaultKeyPolicy(10))
		// Spend the window: the answer reports more than the limit.
		e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/messages", "x-api-key", "k"), reqBody(`{"max_tokens":1}`),
			respHeaders("200", false, "content-type", "application/json"), respBody(`{"usage":{"input_tokens":50,"output_tokens":1}}`))
		out := e.run(t, reqHeaders(false, ":method", "POST", ":path", tt.path, tt.key, tt.value))
		imm := out[0].GetImmediateResponse()
		if imm == nil || imm.GetStatus().GetCode() != 429 {
			t.Fatalf("%s: %v, want a 429", tt.path, out[0])
		}
		var body map[string]any
		if err := json.Unmarshal(imm.GetBody(), &body); err != nil {
			t.Fatalf("%s: body %s: %v", tt.path, imm.GetBody(), err)
		}
		tt.check(t, body, imm)
	}
}

// Strict mode holds the estimate margin on top of a Claude prompt's
// o200k_base estimate; an OpenAI prompt, counted by its own vocabulary,
// gets none.
func TestStrictModeMarginForModelsWithoutATokenizer(t *testing.T) {
	body := `{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"` + strings.Repeat("What time is it in Lisbon? ", 20) + `"}]}`
	held := func(path string) int64 {
		margin := 0.5
		p := defaultKeyPolicy(100000)
		p.CounterKey.Header = []string{"api-key"}
		p.ReserveCompletion, p.EstimateMargin = "max_tokens", &margin
		e := newEnv(t, p)
		pr := &processor{s: e.srv, ctx: context.Background()}
		pr.handle(reqHeaders(false, ":method", "POST", ":path", path, "api-key", "k"))
		if r := pr.handle(reqBody(body)); r.GetImmediateResponse() != nil {
			t.Fatalf("%s refused: %v", path, r)
		}
		return e.used(t, "lab", "k") // the hold, before the answer settles it
	}
	openai, claude := held("/v1/chat/completions"), held("/v1/messages")
	prompt := openai - 100
	if want := (prompt*1500+999)/1000 + 100; claude != want || prompt <= 0 {
		t.Errorf("held %d for Claude, %d for GPT: want the prompt %d × 1.5 rounded up + 100 = %d", claude, openai, prompt, want)
	}
}

// A refusal carries the request's id under the provider's name for it, so
// that the SDK's error names it.
func TestRefusalsCarryTheRequestID(t *testing.T) {
	for _, c := range []struct{ path, header string }{
		{"/v1/messages", "request-id"},
		{"/model/m/converse", "x-amzn-requestid"},
		{"/v1/chat/completions", "x-request-id"},
	} {
		e := newEnv(t, defaultKeyPolicy(100000))
		out := e.run(t, reqHeaders(false, ":method", "POST", ":path", c.path, "x-request-id", "req-43"))
		imm := out[0].GetImmediateResponse()
		if imm == nil || imm.GetStatus().GetCode() != 401 {
			t.Fatalf("%s without a key: %v, want a 401", c.path, out[0])
		}
		if v, n := headerOf(imm.GetHeaders(), c.header); v != "req-43" || n != 1 {
			t.Errorf("%s: %s = %q (×%d), want req-43", c.path, c.header, v, n)
		}
	}
}
