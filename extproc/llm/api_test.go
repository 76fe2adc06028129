package llm

import "testing"

func TestDetect(t *testing.T) {
	tests := []struct {
		path string
		want Route
	}{
		{"/v1/chat/completions", Route{API: ChatCompletions}},
		{"/v1/chat/completions?x=1", Route{API: ChatCompletions}},
		{"/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", Route{API: ChatCompletions, Deployment: "gpt-4o"}},
		{"/openai/v1/chat/completions", Route{API: ChatCompletions}},
		{"/models/chat/completions", Route{API: ChatCompletions}},
		{"/v1/completions", Route{API: Completions}},
		{"/openai/deployments/davinci/completions", Route{API: Completions, Deployment: "davinci"}},
		{"/v1/embeddings", Route{API: Embeddings}},
		{"/openai/deployments/ada/embeddings/", Route{API: Embeddings, Deployment: "ada"}},
		{"/openai/v1/embeddings", Route{API: Embeddings}},
		{"/v1/responses", Route{API: Responses}},
		{"/openai/v1/responses?api-version=preview", Route{API: Responses}},
		{"/openai/responses", Route{API: Responses}},
		{"/v1/models", Route{}},
		{"/openai/deployments//chat/completions", Route{}},
		{"/openai/deployments/x", Route{}},
		{"/v1/responses/resp_123", Route{}},
		{"", Route{}},
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
