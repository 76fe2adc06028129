package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// TestSDKReadsInjectedStream streams a chat through the official OpenAI Go
// SDK, which does not ask for usage: tokengate injects include_usage, and
// the SDK must parse the stream with the extra usage chunk (empty choices)
// and report the usage tokengate charged.
func TestSDKReadsInjectedStream(t *testing.T) {
	r := startRig(t)
	client := openai.NewClient(
		option.WithBaseURL(r.URL+"/v1/"),
		option.WithAPIKey("sk-unused"), // tokengate keys on api-key only, in this config
		option.WithHeader("api-key", "sdk-key"),
		option.WithHeader("x-mock-completion-tokens", "120"),
		option.WithMaxRetries(0), // a retry would be a second charge
		// The SDK stops at [DONE] and closes the body; a client that reads
		// the response to its end is one the proxy finishes with, so the
		// metadata of tokengate's last reply is in the record (a client
		// that hangs up first races Envoy's last ext_proc reply, in Envoy
		// as in the front).
		option.WithHTTPClient(&http.Client{Transport: drainingTransport{http.DefaultTransport}}),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4o}
	for _, m := range streamMessages {
		if m.Role == "system" {
			params.Messages = append(params.Messages, openai.SystemMessage(m.Content))
		} else {
			params.Messages = append(params.Messages, openai.UserMessage(m.Content))
		}
	}
	r.sent++
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("chunk %d does not fit the stream: %+v", chunks, stream.Current())
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("the SDK failed to read the stream after %d chunks: %v", chunks, err)
	}
	stream.Close()

	u := acc.Usage
	if u.PromptTokens != int64(chatPrompt()) || u.CompletionTokens != 120 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Fatalf("SDK usage %d+%d=%d, want %d+120: the injected usage chunk was lost", u.PromptTokens, u.CompletionTokens, u.TotalTokens, chatPrompt())
	}
	if len(acc.Choices) != 1 || tokenize.Text("gpt-4o", acc.Choices[0].Message.Content) != 120 {
		t.Fatalf("SDK accumulated %d choices, want one of 120 tokens: %+v", len(acc.Choices), acc.Choices)
	}
	rec := r.record()
	if rec.ClientGone {
		t.Errorf("the client hung up before the response ended (the body was not read to its end): %+v", rec)
	}
	md := metadataOf(t, rec)
	if int64(md.total) != u.TotalTokens || md.source != "reported" {
		t.Errorf("tokengate charged %d (%s), the SDK saw usage %d", md.total, md.source, u.TotalTokens)
	}
	if c := r.charged("sdk-key", "stream"); int64(c) != u.TotalTokens {
		t.Errorf("the window holds %d, the SDK saw usage %d", c, u.TotalTokens)
	}
}

// drainingTransport reads each response body to its end before closing it.
type drainingTransport struct{ next http.RoundTripper }

func (d drainingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(req)
	if err == nil {
		resp.Body = drainingBody{resp.Body}
	}
	return resp, err
}

type drainingBody struct{ io.ReadCloser }

func (b drainingBody) Close() error {
	_, _ = io.Copy(io.Discard, io.LimitReader(b.ReadCloser, 1<<20))
	return b.ReadCloser.Close()
}
