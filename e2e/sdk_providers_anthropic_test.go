package e2e

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// TestSDKProvidersAnthropic runs the suite's scenario with the official
// Anthropic SDK, which sends its key as Authorization: Bearer (tokengate's
// second Anthropic key source), reads a 429 as an *anthropic.Error of type
// rate_limit_error, and waits what retry-after-ms says before its retry.
func TestSDKProvidersAnthropic(t *testing.T) {
	const key = "sk-ant-sdkp-1"
	client := func(base string, tr *sdkpTransport, retry bool) anthropic.Client {
		retries := 0
		if retry {
			retries = 2 // the SDK's default; the test wants one used
		}
		return anthropic.NewClient(option.WithoutEnvironmentDefaults(), option.WithBaseURL(base), option.WithAPIKey(key),
			option.WithHTTPClient(&http.Client{Transport: tr, Timeout: 30 * time.Second}), option.WithMaxRetries(retries),
			option.WithHeader("x-mock-completion-tokens", strconv.Itoa(sdkpCompletion)))
	}
	params := anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 1024,
		System:   []anthropic.TextBlockParam{{Text: sdkpSystem}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(sdkpUser))},
	}
	total := func(u anthropic.Usage) int64 {
		return u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens + u.OutputTokens
	}
	c := sdkpCase{
		key: key,
		sentKey: func(h http.Header) string {
			if h.Get("x-api-key") != "" {
				return "x-api-key:" + h.Get("x-api-key") // v2 is not expected to send it
			}
			return sdkpBearer(h)
		},
		call: func(ctx context.Context, base string, tr *sdkpTransport, retry bool) (int64, error) {
			c := client(base, tr, retry)
			m, err := c.Messages.New(ctx, params)
			if err != nil {
				return 0, err
			}
			return total(m.Usage), nil
		},
		stream: func(ctx context.Context, base string, tr *sdkpTransport) error {
			c := client(base, tr, false)
			st := c.Messages.NewStreaming(ctx, params)
			defer st.Close()
			for st.Next() {
			}
			return st.Err()
		},
		wantRefused: func(t *testing.T, step string, err error) {
			t.Helper()
			var e *anthropic.Error
			if !errors.As(err, &e) {
				t.Fatalf("%s: %T %v, want an *anthropic.Error", step, err, err)
			}
			if e.StatusCode != http.StatusTooManyRequests || e.Type() != anthropic.ErrorTypeRateLimitError || e.Message == "" {
				t.Errorf("%s: *anthropic.Error %d %q %q (body %s), want 429 rate_limit_error with a message",
					step, e.StatusCode, e.Type(), e.Message, e.RawJSON())
			}
		},
		refusalHeaders: func(t *testing.T, step string, h http.Header, spent int64, wait time.Duration) {
			t.Helper()
			if got := only(t, step, h, "Anthropic-Ratelimit-Tokens-Limit"); got != strconv.Itoa(sdkpLimit) {
				t.Errorf("%s: anthropic-ratelimit-tokens-limit %q, want %d", step, got, sdkpLimit)
			}
			if got := only(t, step, h, "Anthropic-Ratelimit-Tokens-Remaining"); got != "0" {
				t.Errorf("%s: anthropic-ratelimit-tokens-remaining %q, want 0 (%d of %d spent)", step, got, spent, sdkpLimit)
			}
			// Every charge leaves the window at 10:01:00, the reset in
			// whole seconds (RFC 3339).
			if got := only(t, step, h, "Anthropic-Ratelimit-Tokens-Reset"); got != "2026-01-05T10:01:00Z" {
				t.Errorf("%s: anthropic-ratelimit-tokens-reset %q, want 2026-01-05T10:01:00Z (%v from now)", step, got, wait)
			}
		},
		minWait: 250 * time.Millisecond, // the retry's refusal asks for retry-after-ms 250
	}
	sdkpRun(t, c)
}
