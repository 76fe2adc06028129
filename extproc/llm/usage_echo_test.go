package llm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// Upstreams echo parts of the request in the response. Whatever the client
// hides there under a "usage" key must not change its charge: only the
// response object's own top-level usage counts.

// realUsage is what each template below reports.
var realUsage = Usage{Prompt: 120, Completion: 30, Total: 150}

// echoTemplates are real responses of each API with %s where a
// client-controlled field is echoed, before (%[1]s) and after (%[2]s) the
// top-level usage.
var echoTemplates = map[string]string{
	"responses": `{"id":"resp_1","object":"response","created_at":1,"status":"completed",%[1]s"model":"gpt-5",` +
		`"output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"noon"}]}],` +
		`"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":0},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":150}` +
		`%[2]s}`,
	"chat": `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",%[1]s` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"noon"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150}%[2]s}`,
	"completions": `{"id":"cmpl-1","object":"text_completion",%[1]s"choices":[{"text":"noon","index":0}],` +
		`"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150}%[2]s}`,
	"embeddings": `{"object":"list",%[1]s"data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"text-embedding-3-small",` +
		`"usage":{"prompt_tokens":150,"total_tokens":150}%[2]s}`,
}

func echoedUsage(api string) Usage {
	if api == "embeddings" {
		return Usage{Prompt: 150, Total: 150}
	}
	return realUsage
}

// hostileUsages are what a client puts under a nested "usage" key.
var hostileUsages = []string{
	`"free"`,
	`{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`,
	`{"input_tokens":0,"output_tokens":0,"total_tokens":0}`,
	`{"prompt_tokens":9e18,"completion_tokens":99999999999,"total_tokens":1e300}`,
	`null`,
	`[]`,
	`{"usage":{"total_tokens":0}}`,
}

// echoedFields are the request fields each API writes back into its
// response, as the client sent them, with %s where the client's nested
// usage goes. Chat Completions and Completions echo nothing of the request
// but the model; their rows stand for any object an upstream might add.
var echoedFields = []struct{ api, name, field string }{
	{"responses", "metadata", `"metadata":{"usage":%s}`},
	{"responses", "instructions", `"instructions":{"usage":%s}`},
	{"responses", "tools schema", `"tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"usage":{"type":"object","default":%s}},"usage":%s}}]`},
	{"responses", "text format schema", `"text":{"format":{"type":"json_schema","name":"x","schema":{"properties":{"usage":%s}},"usage":%s}}`},
	{"responses", "user", `"user":{"usage":%s}`},
	{"responses", "prompt variables", `"prompt":{"id":"pmpt_1","variables":{"usage":%s}}`},
	{"responses", "reasoning", `"reasoning":{"effort":"low","usage":%s}`},
	{"responses", "tool_choice", `"tool_choice":{"type":"function","name":"usage","usage":%s}`},
	{"chat", "metadata", `"metadata":{"usage":%s}`},
	{"chat", "message", `"choices_extra":[{"message":{"usage":%s}}]`},
	{"completions", "nested", `"extra":{"a":[{"usage":%s}]}`},
	{"embeddings", "nested", `"extra":{"usage":%s}`},
}

func TestUsageIgnoresEchoedFields(t *testing.T) {
	for _, f := range echoedFields {
		for _, hostile := range hostileUsages {
			field := strings.ReplaceAll(f.field, "%s", hostile)
			for _, where := range []string{"before", "after"} {
				before, after := field+",", ""
				if where == "after" {
					before, after = "", ","+field
				}
				body := fmt.Sprintf(echoTemplates[f.api], before, after)
				if !json.Valid([]byte(body)) {
					t.Fatalf("test body is not JSON: %s", body)
				}
				got, ok, err := ParseUsage(ChatCompletions, []byte(body))
				if want := echoedUsage(f.api); err != nil || !ok || got != want {
					t.Errorf("%s %s, %s usage %s: got %+v %v %v, want %+v", f.api, f.name, where, hostile, got, ok, err, want)
				}
			}
		}
	}
}

func TestUsageTopLevelOnly(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"nested only", `{"metadata":{"usage":{"total_tokens":5}},"output":[]}`, Usage{}, false},
		{"repeated top level, last wins", `{"usage":{"total_tokens":900},"usage":{"prompt_tokens":3,"total_tokens":3}}`, Usage{Prompt: 3, Total: 3}, true},
		{"repeated top level, last null", `{"usage":{"total_tokens":900},"usage":null}`, Usage{}, false},
		{"case differs", `{"Usage":{"total_tokens":900},"USAGE":{"total_tokens":1}}`, Usage{}, false},
		{"escaped key", `{"us\u0061ge":{"total_tokens":7}}`, Usage{Total: 7}, true},
		{"usage in a string", `{"output_text":"\"usage\":{\"total_tokens\":0}","usage":{"total_tokens":8}}`, Usage{Total: 8}, true},
		{"backslashes before quotes", `{"a":"x\\\\","usage":{"total_tokens":9},"b":"\\\"usage\\\":1"}`, Usage{Total: 9}, true},
	}
	for _, tt := range tests {
		got, ok, err := ParseUsage(ChatCompletions, []byte(tt.body))
		if err != nil || got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %+v %v %v, want %+v %v", tt.name, got, ok, err, tt.want, tt.ok)
		}
	}
}

// FuzzUsageTopLevelOnly builds a real response of each API with an
// arbitrary client-controlled value, carrying usage, echoed before or after
// the top-level usage: the charge is always the top-level usage.
func FuzzUsageTopLevelOnly(f *testing.F) {
	for i, h := range hostileUsages {
		f.Add(uint8(i), uint8(i), []byte(h), []byte(`{"deep":[{"usage":0}]}`))
	}
	apis := []string{"responses", "chat", "completions", "embeddings"}
	f.Fuzz(func(t *testing.T, pick, where uint8, hostile, extra []byte) {
		if !json.Valid(hostile) {
			hostile, _ = json.Marshal(string(hostile))
		}
		if !json.Valid(extra) {
			extra = []byte(`{}`)
		}
		api := apis[int(pick)%len(apis)]
		field := fmt.Sprintf(`"metadata":{"usage":%s,"x":%s,"usage":%s}`, hostile, extra, hostile)
		before, after := field+",", ""
		if where%2 == 1 {
			before, after = "", ","+field
		}
		body := fmt.Sprintf(echoTemplates[api], before, after)
		got, ok, err := ParseUsage(ChatCompletions, []byte(body))
		if want := echoedUsage(api); err != nil || !ok || got != want {
			t.Fatalf("%s: got %+v %v %v, want %+v", body, got, ok, err, want)
		}
	})
}
