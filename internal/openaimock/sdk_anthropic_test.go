package openaimock

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/bedrock"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The official Anthropic SDK, pointed at the mock: it parses the answers
// and their usage as it parses the real API's, on the first-party API and
// on Bedrock (where it signs the request and turns the eventstream frames
// back into events).

// anthropicClient talks to the mock at url; bedrockRegion, when set, goes
// through the SDK's Bedrock adapter instead.
func anthropicClient(t *testing.T, url, bedrockRegion string, opts ...option.RequestOption) anthropic.Client {
	t.Helper()
	base := []option.RequestOption{option.WithoutEnvironmentDefaults(), option.WithAPIKey("sk-test")}
	if bedrockRegion != "" {
		t.Setenv("AWS_BEARER_TOKEN_BEDROCK", "")
		base = []option.RequestOption{bedrock.WithConfig(aws.Config{Region: bedrockRegion, Credentials: staticAWSKey})}
	}
	base = append(base, option.WithBaseURL(url), option.WithMaxRetries(0))
	return anthropic.NewClient(append(base, opts...)...)
}

// staticAWSKey signs the SDKs' Bedrock requests; the mock checks no
// signature.
var staticAWSKey = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret"}, nil
})

func anthropicParams(model string, maxTokens int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model: model, MaxTokens: maxTokens,
		System:   []anthropic.TextBlockParam{{Text: promptSystem}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(promptUser))},
	}
}

// checkAnthropicMessage fails unless the SDK's message has one text of out
// tokens, the stop reason, and the test prompt's usage split by the cache
// counts.
func checkAnthropicMessage(t *testing.T, m anthropic.Message, model string, read, write, out int, stop string) {
	t.Helper()
	if len(m.Content) != 1 || m.Content[0].Type != "text" || tokenize.Text(model, m.Content[0].Text) != out ||
		string(m.StopReason) != stop || !strings.HasPrefix(m.ID, "msg_mock") {
		t.Errorf("message %s, want one text of %d tokens, %s", m.RawJSON(), out, stop)
	}
	u := m.Usage
	if int(u.InputTokens) != wantPrompt(model)-read-write || int(u.CacheReadInputTokens) != read ||
		int(u.CacheCreationInputTokens) != write || int(u.OutputTokens) != out {
		t.Errorf("usage in %d read %d write %d out %d, want %d %d %d %d", u.InputTokens, u.CacheReadInputTokens,
			u.CacheCreationInputTokens, u.OutputTokens, wantPrompt(model)-read-write, read, write, out)
	}
}

func TestAnthropicSDK(t *testing.T) {
	const model = "claude-sonnet-4-5"
	url := live(t)
	ctx := context.Background()
	for _, region := range []string{"", "us-east-1"} {
		name := "first party"
		if region != "" {
			name = "bedrock"
		}
		t.Run(name, func(t *testing.T) {
			c := anthropicClient(t, url, region)
			m, err := c.Messages.New(ctx, anthropicParams(model, 10),
				option.WithHeader("x-mock-cache-read", "4"), option.WithHeader("x-mock-cache-write", "2"))
			if err != nil {
				t.Fatal(err)
			}
			checkAnthropicMessage(t, *m, model, 4, 2, 10, "max_tokens")

			st := c.Messages.NewStreaming(ctx, anthropicParams(model, 100), option.WithHeader("x-mock-completion-tokens", "20"),
				option.WithHeader("x-mock-cache-read", "3"))
			var acc anthropic.Message
			events := 0
			for st.Next() {
				events++
				if err := acc.Accumulate(st.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			// The SDK drops ping: 2 block events, 7 deltas, 3 message events.
			if events != 12 {
				t.Errorf("the SDK saw %d events, want 12", events)
			}
			checkAnthropicMessage(t, acc, model, 3, 0, 20, "end_turn")
		})
	}
}

func TestAnthropicSDKErrors(t *testing.T) {
	url := live(t)
	ctx := context.Background()
	params := anthropicParams("claude-haiku-4-5", 100)
	tests := []struct {
		region, status string
		wantStatus     int
		wantType       string
	}{
		{"", "429", 429, "rate_limit_error"},
		{"", "529", 529, "overloaded_error"},
		// Bedrock's errors are Bedrock's: the SDK keeps the status, and has
		// no Anthropic type to read.
		{"us-west-2", "429", 429, ""},
	}
	for i, tt := range tests {
		c := anthropicClient(t, url, tt.region)
		_, err := c.Messages.New(ctx, params, option.WithHeader("x-mock-status", tt.status))
		var e *anthropic.Error
		if !errors.As(err, &e) || e.StatusCode != tt.wantStatus || string(e.Type()) != tt.wantType {
			t.Errorf("step %d: got %v, want an *anthropic.Error %d %q", i, err, tt.wantStatus, tt.wantType)
		}
	}

	// The stream error reaches the caller as the API's error, after the
	// text sent before it.
	for _, region := range []string{"", "eu-west-1"} {
		c := anthropicClient(t, url, region)
		st := c.Messages.NewStreaming(ctx, params, option.WithHeader("x-mock-stream-error-after", "2"))
		var acc anthropic.Message
		for st.Next() {
			if err := acc.Accumulate(st.Current()); err != nil {
				t.Fatal(err)
			}
		}
		wantType := "overloaded_error"
		if region != "" {
			wantType = "modelStreamErrorException" // the adapter names Bedrock's exception
		}
		var e *anthropic.Error
		if err := st.Err(); !errors.As(err, &e) || string(e.Type()) != wantType || e.Message != "Overloaded" {
			t.Errorf("region %q: stream error %v, want %s Overloaded", region, err, wantType)
		}
		if len(acc.Content) != 1 || tokenize.Text("claude-haiku-4-5", acc.Content[0].Text) != 6 {
			t.Errorf("region %q: accumulated %+v before the error, want 6 tokens of text", region, acc.Content)
		}
	}
}
