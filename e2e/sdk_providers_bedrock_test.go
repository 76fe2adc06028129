package e2e

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// sdkpCredential is the access key ID of a SigV4 authorization header.
var sdkpCredential = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/,]+)/`)

// TestSDKProvidersBedrock runs the suite's scenario with the official AWS
// SDK's Bedrock Runtime client on Converse: it signs with static
// credentials (tokengate keys by their access key ID), reads a 429 with
// x-amzn-errortype ThrottlingException as a *types.ThrottlingException,
// and retries on its standard retryer, here with a 10 ms backoff and no
// retry token bucket (it reads neither retry-after nor retry-after-ms).
func TestSDKProvidersBedrock(t *testing.T) {
	const akid = "AKIDSDKPBEDROCK1"
	const model = "anthropic.claude-3-haiku-20240307-v1:0"
	t.Setenv("AWS_BEARER_TOKEN_BEDROCK", "") // else the client prefers bearer auth, refused over http
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: akid, SecretAccessKey: "sdkp-secret"}, nil
	})
	const backoff = 10 * time.Millisecond
	client := func(base string, tr *sdkpTransport, retry bool) *bedrockruntime.Client {
		var retryer aws.Retryer = aws.NopRetryer{}
		if retry {
			retryer = sdkpRetryer(backoff)
		}
		return bedrockruntime.New(bedrockruntime.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
			Credentials: creds, HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}, Retryer: retryer,
			APIOptions: []func(*middleware.Stack) error{
				smithyhttp.SetHeaderValue("x-mock-completion-tokens", strconv.Itoa(sdkpCompletion))}})
	}
	system := []types.SystemContentBlock{&types.SystemContentBlockMemberText{Value: sdkpSystem}}
	messages := []types.Message{{Role: types.ConversationRoleUser, Content: []types.ContentBlock{&types.ContentBlockMemberText{Value: sdkpUser}}}}
	inference := &types.InferenceConfiguration{MaxTokens: aws.Int32(1024)}
	sdkpRun(t, sdkpCase{
		key: akid,
		sentKey: func(h http.Header) string {
			if m := sdkpCredential.FindStringSubmatch(h.Get("Authorization")); m != nil {
				return m[1]
			}
			return ""
		},
		call: func(ctx context.Context, base string, tr *sdkpTransport, retry bool) (int64, error) {
			out, err := client(base, tr, retry).Converse(ctx, &bedrockruntime.ConverseInput{ModelId: aws.String(model),
				System: system, Messages: messages, InferenceConfig: inference})
			if err != nil {
				return 0, err
			}
			if out.Usage == nil {
				return 0, errors.New("no usage")
			}
			return int64(aws.ToInt32(out.Usage.TotalTokens)), nil
		},
		stream: func(ctx context.Context, base string, tr *sdkpTransport) error {
			out, err := client(base, tr, false).ConverseStream(ctx, &bedrockruntime.ConverseStreamInput{ModelId: aws.String(model),
				System: system, Messages: messages, InferenceConfig: inference})
			if err != nil {
				return err
			}
			st := out.GetStream()
			defer st.Close()
			for range st.Events() {
			}
			return st.Err()
		},
		wantRefused: func(t *testing.T, step string, err error) {
			t.Helper()
			var e *types.ThrottlingException
			if !errors.As(err, &e) {
				t.Fatalf("%s: %T %v, want a *types.ThrottlingException", step, err, err)
			}
			var re *smithyhttp.ResponseError
			if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusTooManyRequests || e.ErrorMessage() == "" {
				t.Errorf("%s: %v, want a ThrottlingException with a message on a 429", step, err)
			}
		},
		minWait: backoff,
	})
}

// sdkpRetryer is the AWS SDK's standard retryer, three attempts, with a
// constant backoff and no retry token bucket (whose 500 tokens a long run
// could spend).
func sdkpRetryer(backoff time.Duration) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 3
		o.RateLimiter = ratelimit.None
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return backoff, nil })
	})
}
