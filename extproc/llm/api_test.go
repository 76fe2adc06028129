package llm

import "testing"

func TestDetect(t *testing.T) {
	tests := []struct {
		path string
		want Route
	}{
		{"/v1/chat/completions", Route{API: ChatCompletions}},
		{"/v1/chat/completions?x=1", Route{API: ChatCompletions}},
		{"/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", Route{API: ChatCompletions, Model: "gpt-4o"}},
		{"/openai/v1/chat/completions", Route{API: ChatCompletions}},
		{"/models/chat/completions", Route{API: ChatCompletions}},
		{"/v1/completions", Route{API: Completions}},
		{"/openai/deployments/davinci/completions", Route{API: Completions, Model: "davinci"}},
		{"/v1/embeddings", Route{API: Embeddings}},
		{"/openai/deployments/ada/embeddings/", Route{API: Embeddings, Model: "ada"}},
		{"/openai/v1/embeddings", Route{API: Embeddings}},
		{"/v1/responses", Route{API: Responses}},
		{"/openai/v1/responses?api-version=preview", Route{API: Responses}},
		{"/openai/responses", Route{API: Responses}},
		{"/v1/models", Route{}},
		{"/openai/deployments//chat/completions", Route{}},
		{"/openai/deployments/x", Route{}},
		{"/v1/responses/resp_123", Route{}},
		{"", Route{}},
		{"/v1/messages", Route{API: Messages}},
		{"/anthropic/v1/messages?beta=true", Route{API: Messages}},
		{"/v1/messages/count_tokens", Route{}},
		{"/v1/messages/batches", Route{}},
		{"/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
			Route{API: Messages, Model: "claude-sonnet-4@20250514"}},
		{"/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4:streamRawPredict",
			Route{API: Messages, Model: "claude-sonnet-4", Stream: true}},
		{"/model/anthropic.claude-3-5-sonnet-20241022-v2:0/invoke", Route{API: Messages, Model: "anthropic.claude-3-5-sonnet-20241022-v2:0", Bedrock: true}},
		{"/model/us.anthropic.claude-sonnet-4-v1:0/invoke-with-response-stream",
			Route{API: Messages, Model: "us.anthropic.claude-sonnet-4-v1:0", Stream: true, Bedrock: true}},
		{"/model/amazon.titan-text-express-v1/invoke", Route{}},
		{"/v1beta/models/gemini-2.5-flash:generateContent", Route{API: GenerateContent, Model: "gemini-2.5-flash"}},
		{"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Route{API: GenerateContent, Model: "gemini-2.5-flash", Stream: true}},
		{"/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent",
			Route{API: GenerateContent, Model: "gemini-2.5-pro"}},
		{"/v1beta/tunedModels/my-model-1:generateContent", Route{API: GenerateContent, Model: "my-model-1"}},
		{"/v1/projects/p/locations/us-central1/endpoints/1234567890:streamGenerateContent",
			Route{API: GenerateContent, Model: "1234567890", Stream: true}},
		{"/v1/projects/p/locations/us-central1/endpoints/1234567890:predict", Route{}},
		{"/v1beta/tunedModels/my-model-1", Route{}},
		{"/v1beta/models/gemini-2.5-flash:countTokens", Route{}},
		{"/v1beta/models/gemini-2.5-flash:embedContent", Route{}},
		{"/model/amazon.nova-pro-v1:0/converse", Route{API: Converse, Model: "amazon.nova-pro-v1:0", Bedrock: true}},
		{"/model/arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-sonnet-4-v1:0/converse-stream",
			Route{API: Converse, Model: "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-sonnet-4-v1:0", Stream: true, Bedrock: true}},
		{"/model/x/apply-guardrail", Route{}},
		{"/model//converse", Route{}},
	}
	for i, tt := range tests {
		if got := Detect(tt.path); got != tt.want {
			t.Errorf("step %d: Detect(%q) = %+v, want %+v", i, tt.path, got, tt.want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/chat%2Fcompletions":                        "/v1/chat/completions",
		"/v1/chat%2fcompletions?x=1":                    "/v1/chat/completions",
		"//v1///chat/./completions":                     "/v1/chat/completions",
		"/v1/x/../chat/completions/":                    "/v1/chat/completions/",
		"/openai/deployments/gpt%2D4o/chat/completions": "/openai/deployments/gpt-4o/chat/completions",
		"/v1/%252F":     "/v1/%2F",
		"/v1/bad%zz":    "/v1/bad%zz",
		"v1/embeddings": "/v1/embeddings",
		"/":             "/",
	} {
		if got := NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
	if r := Detect(NormalizePath("/v1/chat%2Fcompletions")); r.API != ChatCompletions {
		t.Errorf("escaped slash: %v", r.API)
	}
}

// A clean path, the common request, costs no allocation.
func BenchmarkNormalizePath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if NormalizePath("/v1/chat/completions") != "/v1/chat/completions" {
			b.Fatal("changed a clean path")
		}
	}
}

// Each provider's SDK reads its refusals: the shapes its API sends.
func TestErrorBody(t *testing.T) {
	for _, c := range []struct {
		p         Provider
		r         Refusal
		want, hdr string
	}{
		{OpenAI, RateLimited, `{"error":{"message":"m","type":"tokens","code":"rate_limit_exceeded"}}`, ""},
		{Anthropic, RateLimited, `{"error":{"message":"m","type":"rate_limit_error"},"type":"error"}`, ""},
		{Anthropic, QuotaExceeded, `{"error":{"message":"m","type":"permission_error"},"type":"error"}`, ""},
		{Gemini, RateLimited, `{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}`, ""},
		{Gemini, MissingKey, `{"error":{"code":401,"message":"m","status":"UNAUTHENTICATED"}}`, ""},
		{Bedrock, RateLimited, `{"message":"m"}`, "ThrottlingException"},
		{Bedrock, Unavailable, `{"message":"m"}`, "ServiceUnavailableException"},
	} {
		body, name, value := ErrorBody(c.p, c.r, "m")
		if string(body) != c.want || value != c.hdr || (value != "") != (name == "x-amzn-errortype") {
			t.Errorf("%v %v: %s %s=%s, want %s %s", c.p, c.r, body, name, value, c.want, c.hdr)
		}
	}
}
