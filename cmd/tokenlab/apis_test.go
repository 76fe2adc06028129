package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestEndpoints(t *testing.T) {
	tests := []struct {
		api, gateway, model string
		stream              bool
		want                string
	}{
		{"openai", "http://gw:10000", "gpt-4o", false, "http://gw:10000/v1/chat/completions"},
		{"openai", "https://gw.example/openai/v1/", "gpt-4o", true, "https://gw.example/openai/v1/chat/completions"},
		{"anthropic", "http://gw:10000/", "claude-sonnet-4-5", false, "http://gw:10000/v1/messages"},
		{"anthropic", "https://gw.example/anthropic/v1", "claude-sonnet-4-5", true, "https://gw.example/anthropic/v1/messages"},
		{"gemini", "http://gw:10000", "gemini-2.5-flash", false, "http://gw:10000/v1beta/models/gemini-2.5-flash:generateContent"},
		{"gemini", "http://gw:10000/v1beta/", "gemini-2.5-flash", true, "http://gw:10000/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"},
		{"gemini", "http://gw:10000/v1", "gemini-2.5-flash", false, "http://gw:10000/v1/models/gemini-2.5-flash:generateContent"},
		{"bedrock", "http://gw:10000", "amazon.nova-pro-v1:0", false, "http://gw:10000/model/amazon.nova-pro-v1%3A0/converse"},
		{"bedrock", "http://gw:10000/", "anthropic.claude-sonnet-4-5-v1:0", true, "http://gw:10000/model/anthropic.claude-sonnet-4-5-v1%3A0/converse-stream"},
		{"bedrock", "http://gw:10000", "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", false,
			"http://gw:10000/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Famazon.nova-pro-v1%3A0/converse"},
	}
	for _, tt := range tests {
		if got := lookupAPI(tt.api).endpoint(tt.gateway, tt.model, tt.stream); got != tt.want {
			t.Errorf("%s endpoint(%q, %q, stream %v) = %q, want %q", tt.api, tt.gateway, tt.model, tt.stream, got, tt.want)
		}
	}
}

// TestBodies checks each API's request as JSON: the lab's two prompts in
// the API's shape, and what a stream needs in the body.
func TestBodies(t *testing.T) {
	tests := []struct {
		api, model string
		stream     bool
		want       string
	}{
		{"openai", "gpt-4o", false, `{"model":"gpt-4o","messages":[
			{"role":"system","content":"You are a sarcastic unhelpful assistant."},
			{"role":"user","content":"Can you tell me the time, please?"}]}`},
		{"openai", "gpt-4o", true, `{"model":"gpt-4o","messages":[
			{"role":"system","content":"You are a sarcastic unhelpful assistant."},
			{"role":"user","content":"Can you tell me the time, please?"}],
			"stream":true,"stream_options":{"include_usage":true}}`},
		{"anthropic", "claude-sonnet-4-5", false, `{"model":"claude-sonnet-4-5","max_tokens":1024,
			"system":"You are a sarcastic unhelpful assistant.",
			"messages":[{"role":"user","content":"Can you tell me the time, please?"}]}`},
		{"anthropic", "claude-sonnet-4-5", true, `{"model":"claude-sonnet-4-5","max_tokens":1024,
			"system":"You are a sarcastic unhelpful assistant.",
			"messages":[{"role":"user","content":"Can you tell me the time, please?"}],"stream":true}`},
		{"gemini", "gemini-2.5-flash", true, `{
			"systemInstruction":{"parts":[{"text":"You are a sarcastic unhelpful assistant."}]},
			"contents":[{"role":"user","parts":[{"text":"Can you tell me the time, please?"}]}]}`},
		{"bedrock", "amazon.nova-pro-v1:0", true, `{
			"system":[{"text":"You are a sarcastic unhelpful assistant."}],
			"messages":[{"role":"user","content":[{"text":"Can you tell me the time, please?"}]}]}`},
	}
	for _, tt := range tests {
		body, err := lookupAPI(tt.api).body(tt.model, tt.stream)
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %v", tt.api, err)
		}
		if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s body (stream %v):\n%s\nwant:\n%s", tt.api, tt.stream, body, tt.want)
		}
	}
}

func TestKeyValue(t *testing.T) {
	tests := []struct {
		api, header, want string
	}{
		{"openai", "api-key", "k1"},
		{"openai", "authorization", "Bearer k1"},
		{"anthropic", "x-api-key", "k1"},
		{"anthropic", "Authorization", "Bearer k1"},
		{"gemini", "x-goog-api-key", "k1"},
		{"bedrock", "authorization", "AWS4-HMAC-SHA256 Credential=k1/20261130/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=0"},
		{"bedrock", "x-tenant", "k1"},
	}
	for _, tt := range tests {
		if got := keyValue(lookupAPI(tt.api), tt.header, "k1"); got != tt.want {
			t.Errorf("%s in %s: %q, want %q", tt.api, tt.header, got, tt.want)
		}
	}
}

func TestLabConfigKey(t *testing.T) {
	tests := []struct {
		header string
		want   string
	}{
		{"", `store:
  backend: bbolt
  bbolt: {path: "/tmp/x.db", flush_interval: 1s}
policies:
- name: lab
  tokens_per_minute: 500
`},
		{"x-tenant", `store:
  backend: bbolt
  bbolt: {path: "/tmp/x.db", flush_interval: 1s}
policies:
- name: lab
  counter_key: {header: ["x-tenant"]}
  tokens_per_minute: 500
`},
	}
	for _, tt := range tests {
		if got := string(labConfig("/tmp/x.db", 500, tt.header)); got != tt.want {
			t.Errorf("key header %q:\n%s\nwant:\n%s", tt.header, got, tt.want)
		}
	}
}
