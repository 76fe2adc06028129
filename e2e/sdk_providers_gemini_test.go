package e2e

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/genai"
)

// TestSDKProvidersGemini runs the suite's scenario with the official Gen
// AI SDK on the Gemini API: it sends its key in x-goog-api-key, reads a
// 429 as a genai.APIError with status RESOURCE_EXHAUSTED, and retries only
// when HTTPOptions.RetryOptions asks it to, after the delay configured
// there (it reads neither retry-after nor RetryInfo).
func TestSDKProvidersGemini(t *testing.T) {
	const key = "gemini-sdkp-1"
	const model = "gemini-2.5-flash"
	for _, env := range []string{"GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
		"GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"} {
		t.Setenv(env, "")
	}
	// Three attempts at most, 50 ms apart, no jitter: the test wants two.
	attempts, delay, jitter := int32(3), 0.05, 0.0
	client := func(ctx context.Context, base string, tr *sdkpTransport, retry bool) (*genai.Client, error) {
		opts := genai.HTTPOptions{BaseURL: base,
			Headers: http.Header{"X-Mock-Completion-Tokens": {strconv.Itoa(sdkpCompletion)}}}
		if retry {
			opts.RetryOptions = &genai.HTTPRetryOptions{Attempts: &attempts, InitialDelay: &delay, MaxDelay: &delay, Jitter: &jitter}
		}
		return genai.NewClient(ctx, &genai.ClientConfig{APIKey: key, Backend: genai.BackendGeminiAPI,
			HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}, HTTPOptions: opts})
	}
	config := &genai.GenerateContentConfig{SystemInstruction: genai.NewContentFromText(sdkpSystem, genai.RoleUser)}
	sdkpRun(t, sdkpCase{
		key:     key,
		sentKey: func(h http.Header) string { return h.Get("x-goog-api-key") },
		call: func(ctx context.Context, base string, tr *sdkpTransport, retry bool) (int64, error) {
			c, err := client(ctx, base, tr, retry)
			if err != nil {
				return 0, err
			}
			resp, err := c.Models.GenerateContent(ctx, model, genai.Text(sdkpUser), config)
			if err != nil {
				return 0, err
			}
			if resp.UsageMetadata == nil {
				return 0, errors.New("no usageMetadata")
			}
			return int64(resp.UsageMetadata.TotalTokenCount), nil
		},
		stream: func(ctx context.Context, base string, tr *sdkpTransport) error {
			c, err := client(ctx, base, tr, false)
			if err != nil {
				return err
			}
			for _, err := range c.Models.GenerateContentStream(ctx, model, genai.Text(sdkpUser), config) {
				if err != nil {
					return err
				}
			}
			return nil
		},
		wantRefused: func(t *testing.T, step string, err error) {
			t.Helper()
			var e genai.APIError
			if !errors.As(err, &e) {
				t.Fatalf("%s: %T %v, want a genai.APIError", step, err, err)
			}
			if e.Code != http.StatusTooManyRequests || e.Status != "RESOURCE_EXHAUSTED" || e.Message == "" {
				t.Errorf("%s: genai.APIError %d %q %q, want 429 RESOURCE_EXHAUSTED with a message", step, e.Code, e.Status, e.Message)
			}
		},
		minWait: 50 * time.Millisecond, // RetryOptions' delay
	})
}
