package openaimock

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genai"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The official Gen AI SDK, pointed at the mock, on the Gemini API and on
// Vertex AI (given a project, a location and a base URL, it needs no
// Google credentials).

func genaiClient(t *testing.T, url string, vertex bool, headers ...string) *genai.Client {
	t.Helper()
	for _, env := range []string{"GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
		"GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"} {
		t.Setenv(env, "")
	}
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	cfg := &genai.ClientConfig{APIKey: "test-key", Backend: genai.BackendGeminiAPI, HTTPClient: rawClient,
		HTTPOptions: genai.HTTPOptions{BaseURL: url, Headers: h}}
	if vertex {
		cfg.APIKey, cfg.Backend, cfg.Project, cfg.Location = "", genai.BackendVertexAI, "proj", "us-central1"
	}
	c, err := genai.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func genaiConfig(candidates, maxTokens int32) *genai.GenerateContentConfig {
	return &genai.GenerateContentConfig{SystemInstruction: genai.NewContentFromText(promptSystem, genai.RoleUser),
		CandidateCount: candidates, MaxOutputTokens: maxTokens}
}

// checkGenaiUsage fails unless the SDK read the test prompt's usage.
func checkGenaiUsage(t *testing.T, u *genai.GenerateContentResponseUsageMetadata, model string, cands, cached, thoughts int) {
	t.Helper()
	prompt := wantPrompt(model)
	if u == nil || int(u.PromptTokenCount) != prompt || int(u.CandidatesTokenCount) != cands ||
		int(u.CachedContentTokenCount) != cached || int(u.ThoughtsTokenCount) != thoughts ||
		int(u.TotalTokenCount) != prompt+cands+thoughts {
		t.Errorf("usage %+v, want prompt %d candidates %d cached %d thoughts %d", u, prompt, cands, cached, thoughts)
	}
}

func TestGenaiSDK(t *testing.T) {
	const model = "gemini-2.5-flash"
	url := live(t)
	ctx := context.Background()
	for _, vertex := range []bool{false, true} {
		c := genaiClient(t, url, vertex, "x-mock-reasoning", "30", "x-mock-cache-read", "5")
		resp, err := c.Models.GenerateContent(ctx, model, genai.Text(promptUser), genaiConfig(2, 8))
		if err != nil {
			t.Fatalf("vertex %v: %v", vertex, err)
		}
		if len(resp.Candidates) != 2 || !strings.HasPrefix(resp.ResponseID, "gemini-mock") || resp.ModelVersion != model {
			t.Fatalf("vertex %v: %+v", vertex, resp)
		}
		for i, cand := range resp.Candidates {
			if int(cand.Index) != i || cand.FinishReason != genai.FinishReasonMaxTokens || len(cand.Content.Parts) != 1 ||
				tokenize.Text(model, cand.Content.Parts[0].Text) != 8 {
				t.Errorf("vertex %v: candidate %d: %+v", vertex, i, cand)
			}
		}
		checkGenaiUsage(t, resp.UsageMetadata, model, 16, 5, 30)

		// The SDK always streams with alt=sse.
		var text strings.Builder
		var last *genai.GenerateContentResponse
		chunks := 0
		for chunk, err := range c.Models.GenerateContentStream(ctx, model, genai.Text(promptUser), genaiConfig(1, 0)) {
			if err != nil {
				t.Fatalf("vertex %v: chunk %d: %v", vertex, chunks, err)
			}
			chunks++
			text.WriteString(chunk.Text())
			last = chunk
		}
		if chunks != 22 || tokenize.Text(model, text.String()) != 64 || last.Candidates[0].FinishReason != genai.FinishReasonStop {
			t.Errorf("vertex %v: %d chunks of %d tokens, want 22 of 64 ending with STOP", vertex, chunks, tokenize.Text(model, text.String()))
		}
		checkGenaiUsage(t, last.UsageMetadata, model, 64, 5, 30)
	}
	calls := getCalls(t, url)
	for _, p := range []string{
		"/v1beta/models/gemini-2.5-flash:generateContent", "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
		"/v1beta1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
		"/v1beta1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
	} {
		if calls.ByPath[p] != 1 {
			t.Errorf("calls %v: want one of %s", calls.ByPath, p)
		}
	}
}

// getCalls fetches the mock's call counts.
func getCalls(t *testing.T, url string) callsReport {
	t.Helper()
	resp, err := rawClient.Get(url + "/mock/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r callsReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGenaiSDKErrors(t *testing.T) {
	url := live(t)
	ctx := context.Background()
	c := genaiClient(t, url, false, "x-mock-status", "429")
	_, err := c.Models.GenerateContent(ctx, "gemini-2.5-flash", genai.Text(promptUser), nil)
	var e genai.APIError
	if !errors.As(err, &e) || e.Code != 429 || e.Status != "RESOURCE_EXHAUSTED" || !strings.Contains(e.Message, "forced status") {
		t.Errorf("got %v, want a genai.APIError 429 RESOURCE_EXHAUSTED", err)
	}

	// x-mock-stream-error-after ends the stream early: the SDK sees an
	// answer that just stops, without a finish reason or the final usage,
	// and no error.
	c = genaiClient(t, url, false, "x-mock-stream-error-after", "2")
	chunks := 0
	var last *genai.GenerateContentResponse
	for chunk, err := range c.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text(promptUser), nil) {
		if err != nil {
			t.Fatalf("chunk %d: %v", chunks, err)
		}
		chunks++
		last = chunk
	}
	if chunks != 2 || last.Candidates[0].FinishReason != "" || last.UsageMetadata.CandidatesTokenCount != 6 {
		t.Errorf("%d chunks, the last %+v; want 2, unfinished, 6 candidates tokens", chunks, last)
	}
}
