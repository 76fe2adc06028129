package openaimock

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The official AWS SDK's Bedrock Runtime client, pointed at the mock: it
// signs, escapes the model ID (":" as %3A), decodes the eventstream
// frames and the exceptions.

const bedrockModel = "anthropic.claude-3-haiku-20240307-v1:0"

func bedrockClient(t *testing.T, url string) *bedrockruntime.Client {
	t.Helper()
	t.Setenv("AWS_BEARER_TOKEN_BEDROCK", "")
	return bedrockruntime.New(bedrockruntime.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: staticAWSKey, HTTPClient: &http.Client{Transport: readOnlyBody{rawClient.Transport}},
		Retryer: aws.NopRetryer{}})
}

// readOnlyBody hides the WriteTo of the AWS SDK's request bodies. Over
// plain HTTP, net/http may write the body straight to the socket and then
// check it for extra bytes; by then a fast server has answered, the SDK
// has closed the body, and smithy-go's closed body answers WriteTo with
// io.EOF as an error, on which net/http closes the connection under a
// stream still being read ("use of closed network connection", about one
// run in ten under load). Read reports a closed body as a clean EOF.
type readOnlyBody struct{ rt http.RoundTripper }

func (t readOnlyBody) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r = r.Clone(r.Context())
		r.Body = struct{ io.ReadCloser }{r.Body}
	}
	return t.rt.RoundTrip(r)
}

// mockHeaders adds x-mock-* headers to one call.
func mockHeaders(kv ...string) func(*bedrockruntime.Options) {
	return func(o *bedrockruntime.Options) {
		for i := 0; i+1 < len(kv); i += 2 {
			o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue(kv[i], kv[i+1]))
		}
	}
}

func converseInput() *bedrockruntime.ConverseInput {
	return &bedrockruntime.ConverseInput{ModelId: aws.String(bedrockModel),
		System:          []types.SystemContentBlock{&types.SystemContentBlockMemberText{Value: promptSystem}},
		Messages:        []types.Message{{Role: types.ConversationRoleUser, Content: []types.ContentBlock{&types.ContentBlockMemberText{Value: promptUser}}}},
		InferenceConfig: &types.InferenceConfiguration{MaxTokens: aws.Int32(50)}}
}

func converseStreamInput() *bedrockruntime.ConverseStreamInput {
	in := converseInput()
	return &bedrockruntime.ConverseStreamInput{ModelId: in.ModelId, System: in.System, Messages: in.Messages,
		InferenceConfig: in.InferenceConfig}
}

// checkTokenUsage fails unless the SDK read the test prompt's usage,
// split by the cache counts.
func checkTokenUsage(t *testing.T, u *types.TokenUsage, read, write, out int) {
	t.Helper()
	in := wantPrompt(bedrockModel) - read - write
	if u == nil || int(aws.ToInt32(u.InputTokens)) != in || int(aws.ToInt32(u.OutputTokens)) != out ||
		int(aws.ToInt32(u.CacheReadInputTokens)) != read || int(aws.ToInt32(u.CacheWriteInputTokens)) != write ||
		int(aws.ToInt32(u.TotalTokens)) != in+out+read+write {
		t.Errorf("usage %+v, want in %d out %d read %d write %d", u, in, out, read, write)
	}
}

func TestBedrockSDKConverse(t *testing.T) {
	url := live(t)
	ctx := context.Background()
	c := bedrockClient(t, url)
	out, err := c.Converse(ctx, converseInput(), mockHeaders("x-mock-cache-read", "6", "x-mock-cache-write", "4"))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := out.Output.(*types.ConverseOutputMemberMessage)
	if !ok || len(msg.Value.Content) != 1 || out.StopReason != types.StopReasonMaxTokens || out.Metrics == nil {
		t.Fatalf("output %+v stop %q", out.Output, out.StopReason)
	}
	if text, ok := msg.Value.Content[0].(*types.ContentBlockMemberText); !ok || tokenize.Text(bedrockModel, text.Value) != 50 {
		t.Errorf("content %+v, want a text of 50 tokens", msg.Value.Content[0])
	}
	checkTokenUsage(t, out.Usage, 6, 4, 50)
	if id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata); getTrace(t, url, id).CompletionTokens != 50 {
		t.Errorf("no trace of 50 tokens under the request id %q", id)
	}

	stream, err := c.ConverseStream(ctx, converseStreamInput(), mockHeaders("x-mock-cache-read", "2"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var usage *types.TokenUsage
	for ev := range stream.GetStream().Events() {
		switch v := ev.(type) {
		case *types.ConverseStreamOutputMemberMessageStart:
			kinds = append(kinds, "start")
		case *types.ConverseStreamOutputMemberContentBlockDelta:
			kinds = append(kinds, "delta")
		case *types.ConverseStreamOutputMemberContentBlockStop:
			kinds = append(kinds, "stop")
		case *types.ConverseStreamOutputMemberMessageStop:
			kinds = append(kinds, string(v.Value.StopReason))
		case *types.ConverseStreamOutputMemberMetadata:
			kinds, usage = append(kinds, "metadata"), v.Value.Usage
		}
	}
	if err := stream.GetStream().Err(); err != nil {
		t.Fatal(err)
	}
	if len(kinds) != 21 || kinds[0] != "start" || kinds[18] != "stop" || kinds[19] != "max_tokens" || kinds[20] != "metadata" {
		t.Errorf("events %v, want start, 17 deltas, stop, max_tokens, metadata", kinds)
	}
	checkTokenUsage(t, usage, 2, 0, 50)
}

func TestBedrockSDKInvoke(t *testing.T) {
	url := live(t)
	ctx := context.Background()
	c := bedrockClient(t, url)
	body := []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"system":"` + promptSystem +
		`","messages":[{"role":"user","content":"` + promptUser + `"}]}`)
	out, err := c.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{ModelId: aws.String(bedrockModel), Body: body,
		ContentType: aws.String("application/json")}, mockHeaders("x-mock-completion-tokens", "9"))
	if err != nil {
		t.Fatal(err)
	}
	var m anthropic.Message
	if err := json.Unmarshal(out.Body, &m); err != nil {
		t.Fatal(err)
	}
	checkAnthropicMessage(t, m, bedrockModel, 0, 0, 9, "end_turn")

	stream, err := c.InvokeModelWithResponseStream(ctx, &bedrockruntime.InvokeModelWithResponseStreamInput{
		ModelId: aws.String(bedrockModel), Body: body, ContentType: aws.String("application/json")},
		mockHeaders("x-mock-cache-write", "3"))
	if err != nil {
		t.Fatal(err)
	}
	var acc anthropic.Message
	var metrics struct {
		Metrics *struct{ InputTokenCount, OutputTokenCount int } `json:"amazon-bedrock-invocationMetrics"`
	}
	for ev := range stream.GetStream().Events() {
		chunk, ok := ev.(*types.ResponseStreamMemberChunk)
		if !ok {
			t.Fatalf("event %T", ev)
		}
		var e anthropic.MessageStreamEventUnion
		if err := json.Unmarshal(chunk.Value.Bytes, &e); err != nil {
			t.Fatal(err)
		}
		if err := acc.Accumulate(e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "message_stop" {
			mustUnmarshal(t, string(chunk.Value.Bytes), &metrics)
		}
	}
	if err := stream.GetStream().Err(); err != nil {
		t.Fatal(err)
	}
	checkAnthropicMessage(t, acc, bedrockModel, 0, 3, 64, "end_turn")
	if m := metrics.Metrics; m == nil || m.InputTokenCount != wantPrompt(bedrockModel)-3 || m.OutputTokenCount != 64 {
		t.Errorf("invocation metrics %+v", m)
	}
}

func TestBedrockSDKErrors(t *testing.T) {
	url := live(t)
	ctx := context.Background()
	c := bedrockClient(t, url)
	_, err := c.Converse(ctx, converseInput(), mockHeaders("x-mock-status", "429"))
	var throttled *types.ThrottlingException
	var re interface{ ServiceRequestID() string }
	if !errors.As(err, &throttled) || !errors.As(err, &re) || re.ServiceRequestID() == "" {
		t.Errorf("got %v, want a ThrottlingException with a request id", err)
	}
	_, err = c.Converse(ctx, &bedrockruntime.ConverseInput{ModelId: aws.String(bedrockModel)})
	var invalid *types.ValidationException
	if !errors.As(err, &invalid) {
		t.Errorf("no messages: got %v, want a ValidationException", err)
	}

	stream, err := c.ConverseStream(ctx, converseStreamInput(),
		mockHeaders("x-mock-stream-error-after", "2"))
	if err != nil {
		t.Fatal(err)
	}
	deltas := 0
	for ev := range stream.GetStream().Events() {
		if _, ok := ev.(*types.ConverseStreamOutputMemberContentBlockDelta); ok {
			deltas++
		}
	}
	var streamErr *types.ModelStreamErrorException
	if err := stream.GetStream().Err(); !errors.As(err, &streamErr) || deltas != 2 {
		t.Errorf("after %d deltas: %v, want a ModelStreamErrorException after 2", deltas, err)
	}
}
