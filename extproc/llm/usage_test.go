package llm

import (
	"strings"
	"testing"
)

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":5}}}`,
			Usage{Prompt: 30, Completion: 12, Total: 42, CacheRead: 8, Reasoning: 5}, true},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}`, Usage{Prompt: 7, Total: 7}, true},
		{"responses", `{"usage":{"input_tokens":10,"output_tokens":4,"total_tokens":14,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}`,
			Usage{Prompt: 10, Completion: 4, Total: 14, CacheRead: 2, Reasoning: 1}, true},
		{"total missing", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, Usage{Prompt: 3, Completion: 4, Total: 7}, true},
		{"negative clamped", `{"usage":{"prompt_tokens":-30,"completion_tokens":5,"total_tokens":-25}}`, Usage{Completion: 5, Total: 5}, true},
		{"exponents and floats", `{"usage":{"prompt_tokens":1e3,"completion_tokens":2.9,"total_tokens":"1002"}}`, Usage{Prompt: 1000, Completion: 2, Total: 1002}, true},
		{"NaN and absurd", `{"usage":{"prompt_tokens":"NaN","completion_tokens":1e300,"total_tokens":"Infinity"}}`, Usage{Completion: MaxCount, Total: MaxCount}, true},
		{"garbage counts", `{"usage":{"prompt_tokens":"lots","completion_tokens":[1],"total_tokens":{}}}`, Usage{}, true},
		{"no usage", `{"error":{"message":"bad"}}`, Usage{}, false},
		{"null usage", `{"usage":null}`, Usage{}, false},
		{"usage last, after a big body", `{"choices":[{"message":{"content":"` + strings.Repeat("x", 1<<16) + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}`, Usage{Prompt: 5, Completion: 6, Total: 11}, true},
		{"pretty printed", "{\n  \"usage\" :\n  {\"total_tokens\": 3, \"prompt_tokens\": 3}\n}", Usage{Prompt: 3, Total: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseUsage(ChatCompletions, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if u, ok, err := ParseUsage(ChatCompletions, []byte(`{"choices":[{"message":{"content":"the \"usage\": {\"total_tokens\": 99}"}}]}`)); ok || err != nil {
		t.Errorf("usage in a string: got %+v %v %v, want no usage", u, ok, err)
	}
	if u, ok, err := ParseUsage(ChatCompletions, []byte("<html>")); ok || err == nil {
		t.Errorf("an HTML page: got %+v %v %v, want no usage and why", u, ok, err)
	}
	if _, _, err := ParseUsage(ChatCompletions, []byte(`{"usage":{"prompt_tokens":1,}}`)); err == nil {
		t.Error("malformed usage: want error")
	}
}

// Every provider's usage, as its answers carry it: each count lands in
// its place of the one record.
func TestParseUsageProviders(t *testing.T) {
	tests := []struct {
		api  API
		body string
		want Usage
	}{
		{Messages, `{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"output_tokens":25,"service_tier":"standard","cache_creation":{"ephemeral_5m_input_tokens":200}}}`,
			Usage{Prompt: 3210, Completion: 25, Total: 3235, CacheRead: 3000, CacheWrite: 200}},
		{GenerateContent, `{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":20,"thoughtsTokenCount":30,"toolUsePromptTokenCount":5,"cachedContentTokenCount":60,"totalTokenCount":155}}`,
			Usage{Prompt: 105, Completion: 50, Total: 155, CacheRead: 60, Reasoning: 30}},
		{Converse, `{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":7,"totalTokens":19,"cacheReadInputTokens":100,"cacheWriteInputTokens":50}}`,
			Usage{Prompt: 162, Completion: 7, Total: 169, CacheRead: 100, CacheWrite: 50}},
		{Messages, `{"metadata":{"usage":{"input_tokens":1}},"usage":{"input_tokens":4,"output_tokens":2},"content":[{"type":"text","text":"{\"usage\":{}}"}]}`,
			Usage{Prompt: 4, Completion: 2, Total: 6}},
		{GenerateContent, `{"usage":{"prompt_tokens":9},"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`, Usage{Prompt: 1, Completion: 1, Total: 2}},
	}
	for _, tt := range tests {
		got, ok, err := ParseUsage(tt.api, []byte(tt.body))
		if err != nil || !ok || got != tt.want {
			t.Errorf("%s %s:\n got %+v %v %v\nwant %+v", tt.api, tt.body, got, ok, err, tt.want)
		}
		checkUsageAgrees(t, tt.api.Provider(), []byte(tt.body))
	}
}

// checkUsageAgrees holds ParseUsage to the reference on a valid body: the
// walk skips what it does not read without judging it, so only valid
// bodies have one right answer to agree on.
func checkUsageAgrees(t *testing.T, p Provider, body []byte) {
	t.Helper()
	top, err := ref(body)
	if err != nil {
		return
	}
	api := map[Provider]API{OpenAI: ChatCompletions, Anthropic: Messages, Gemini: GenerateContent, Bedrock: Converse}[p]
	got, ok, err := ParseUsage(api, body)
	want, wantOK := refUsage(p, top)
	if _, isObj := top.(map[string]any); !isObj {
		if err == nil {
			t.Fatalf("%s: %s is not an object, ParseUsage took it", p, body)
		}
		return
	}
	if m, _ := top.(map[string]any); m[usageMember(api)] != nil && !wantOK {
		// usage of another type than an object: an error, no usage.
		if ok || err == nil {
			t.Fatalf("%s: %s: usage not an object, got %+v %v %v", p, body, got, ok, err)
		}
		return
	}
	if got != want || ok != wantOK || err != nil {
		t.Fatalf("%s: %s:\n scan %+v %v %v\n  ref %+v %v", p, body, got, ok, err, want, wantOK)
	}
}

func (p Provider) String() string { return [...]string{"openai", "anthropic", "gemini", "bedrock"}[p] }

func FuzzParseUsage(f *testing.F) {
	f.Add(uint8(0), []byte(`{"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}`))
	f.Add(uint8(0), []byte(`{"usage":{"input_tokens":1e3,"output_tokens":-1}}`))
	f.Add(uint8(0), []byte(`{"usage":{"PROMPT_TOKENS":"9","prompt_tokens_details":{"cached_tokens":1},"output_tokens_details":null}}`))
	f.Add(uint8(1), []byte(`{"usage":{"input_tokens":3,"cache_read_input_tokens":"7","output_tokens":1},"usage":{"input_tokens":4}}`))
	f.Add(uint8(2), []byte(`{"usageMetadata":{"promptTokenCount":3,"thoughtsTokenCount":2,"totalTokenCount":1}}`))
	f.Add(uint8(3), []byte(`{"usage":{"inputTokens":3,"cacheWriteInputTokens":2,"InputTokens":9}}`))
	f.Fuzz(func(t *testing.T, p uint8, body []byte) {
		prov := Provider(p % 4)
		checkUsageAgrees(t, prov, body)
		api := map[Provider]API{OpenAI: ChatCompletions, Anthropic: Messages, Gemini: GenerateContent, Bedrock: Converse}[prov]
		u, _, err := ParseUsage(api, body)
		if err != nil {
			return
		}
		if u.Prompt < 0 || u.Completion < 0 || u.Total < u.Prompt+u.Completion {
			t.Fatalf("usage out of bounds: %+v", u)
		}
	})
}

// BenchmarkParseUsage reads the usage of a buffered chat completion, as the
// response_body phase does, next to decoding it with encoding/json.
func BenchmarkParseUsage(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("The time in Lisbon is noon. ", 30) + `"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":260,"completion_tokens":100,"total_tokens":360,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_1"}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if u, ok, err := ParseUsage(ChatCompletions, body); !ok || err != nil || u.Total != 360 {
				b.Fatal(u, ok, err)
			}
		}
	})
}
