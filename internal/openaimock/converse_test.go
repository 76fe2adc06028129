package openaimock

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// converseBody is a Converse request with the test prompt; config is the
// inferenceConfig's members.
func converseBody(config string) string {
	return fmt.Sprintf(`{"messages":[{"role":"user","content":[{"text":%q},{"image":{"format":"png","source":{"bytes":"AAAA"}}}]}],`+
		`"system":[{"text":%q},{"cachePoint":{"type":"default"}}],"inferenceConfig":{%s}}`, promptUser, promptSystem, config)
}

// wireConverseUsage decodes Bedrock's TokenUsage.
type wireConverseUsage struct {
	InputTokens, OutputTokens, TotalTokens      int
	CacheReadInputTokens, CacheWriteInputTokens int
}

// checkConverseUsage fails unless u bills the test prompt, split by the
// cache counts, and out tokens; the total adds up all four.
func checkConverseUsage(t *testing.T, u *wireConverseUsage, model string, read, write, out int) {
	t.Helper()
	in := wantPrompt(model) - read - write
	want := wireConverseUsage{InputTokens: in, OutputTokens: out, TotalTokens: in + out + read + write,
		CacheReadInputTokens: read, CacheWriteInputTokens: write}
	if u == nil || *u != want {
		t.Errorf("usage %+v, want %+v", u, want)
	}
}

func TestConverseBuffered(t *testing.T) {
	tests := []struct {
		name, path, body string
		headers          []string
		model            string
		read, write, out int
		stop             string
	}{
		{name: "escaped model", path: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", body: converseBody(""),
			model: "anthropic.claude-3-haiku-20240307-v1:0", out: 64, stop: "end_turn"},
		{name: "arn, capped", path: "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.amazon.nova-lite-v1%3A0/converse",
			body: converseBody(`"maxTokens":10`), model: "arn:aws:bedrock:us-east-1:123:inference-profile/us.amazon.nova-lite-v1:0",
			out: 10, stop: "max_tokens"},
		{name: "cache", path: "/model/us.amazon.nova-lite-v1:0/converse", body: converseBody(`"maxTokens":100,"temperature":0.2`),
			headers: []string{"x-mock-cache-read", "6", "x-mock-cache-write", "2", "x-mock-completion-tokens", "5"},
			model:   "us.amazon.nova-lite-v1:0", read: 6, write: 2, out: 5, stop: "end_turn"},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, tt.path, tt.body, tt.headers...)
			var got struct {
				Output struct {
					Message struct {
						Role    string
						Content []struct{ Text string }
					}
				}
				StopReason string
				Usage      *wireConverseUsage
				Metrics    *struct{ LatencyMs *int64 }
			}
			decodeJSON(t, rec, http.StatusOK, &got)
			m := got.Output.Message
			if m.Role != "assistant" || len(m.Content) != 1 || tokenize.Text(tt.model, m.Content[0].Text) != tt.out || got.StopReason != tt.stop {
				t.Errorf("got %+v %q, want one text of %d tokens, %s", m, got.StopReason, tt.out, tt.stop)
			}
			checkConverseUsage(t, got.Usage, tt.model, tt.read, tt.write, tt.out)
			if got.Metrics == nil || got.Metrics.LatencyMs == nil {
				t.Error("no metrics.latencyMs")
			}
			id := rec.Result().Header.Get("x-amzn-requestid")
			checkTrace(t, h, id, traceRecord{Text: m.Content[0].Text, CompletionTokens: tt.out, Usage: true, Done: true})
		})
	}
}

func TestConverseStream(t *testing.T) {
	const model = "us.anthropic.claude-sonnet-4-5-v1:0"
	const path = "/model/us.anthropic.claude-sonnet-4-5-v1%3A0/converse-stream"
	tests := []struct {
		name        string
		headers     []string
		deltas, out int
		read, write int
		streamError bool
	}{
		{name: "whole", deltas: 4, out: 12},
		{name: "cache", headers: []string{"x-mock-cache-read", "3", "x-mock-cache-write", "1"}, deltas: 4, out: 12, read: 3, write: 1},
		{name: "exception after 3", headers: []string{"x-mock-stream-error-after", "3"}, deltas: 3, out: 9, streamError: true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, path, converseBody(""), append(tt.headers, "x-mock-completion-tokens", "12")...)
			if ct := rec.Result().Header.Get("Content-Type"); rec.Code != http.StatusOK || ct != eventStreamType || !rec.Flushed {
				t.Fatalf("got %d %q flushed %v, want 200 %s flushed", rec.Code, ct, rec.Flushed, eventStreamType)
			}
			frames := readFrames(t, rec.Body.Bytes())
			want := []string{"messageStart"}
			for range tt.deltas {
				want = append(want, "contentBlockDelta")
			}
			if tt.streamError {
				want = append(want, "modelStreamErrorException")
			} else {
				want = append(want, "contentBlockStop", "messageStop", "metadata")
			}
			var got []string
			var text strings.Builder
			for i, f := range frames {
				got = append(got, f.typ)
				if f.contentType != "application/json" || (f.messageType == "exception") != (f.typ == "modelStreamErrorException") {
					t.Errorf("frame %d: %+v", i, f)
				}
				switch f.typ {
				case "messageStart":
					if string(f.payload) != `{"role":"assistant"}` {
						t.Errorf("messageStart %s", f.payload)
					}
				case "contentBlockDelta":
					var d struct {
						ContentBlockIndex *int
						Delta             struct{ Text string }
					}
					mustUnmarshal(t, string(f.payload), &d)
					if d.ContentBlockIndex == nil || *d.ContentBlockIndex != 0 {
						t.Errorf("frame %d: %s", i, f.payload)
					}
					text.WriteString(d.Delta.Text)
				case "messageStop":
					if string(f.payload) != `{"stopReason":"end_turn"}` {
						t.Errorf("messageStop %s", f.payload)
					}
				case "metadata":
					var m struct {
						Usage   *wireConverseUsage
						Metrics *struct{ LatencyMs int64 }
					}
					mustUnmarshal(t, string(f.payload), &m)
					checkConverseUsage(t, m.Usage, model, tt.read, tt.write, tt.out)
					if m.Metrics == nil {
						t.Error("metadata without metrics")
					}
				case "modelStreamErrorException":
					if !strings.Contains(string(f.payload), `"message":`) {
						t.Errorf("exception %s", f.payload)
					}
				}
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("frames:\n got %v\nwant %v", got, want)
			}
			if n := tokenize.Text(model, text.String()); n != tt.out {
				t.Errorf("deltas carry %d tokens, want %d", n, tt.out)
			}
			checkTrace(t, h, rec.Result().Header.Get("x-amzn-requestid"), traceRecord{Stream: true, Text: text.String(),
				CompletionTokens: tt.out, Usage: !tt.streamError, Done: !tt.streamError, StreamError: tt.streamError, Events: len(frames)})
		})
	}
}

func TestConverseErrors(t *testing.T) {
	tests := []struct {
		path, body string
		headers    []string
		status     int
		typ, msg   string
	}{
		{"/model/m/converse", `{}`, nil, 400, "ValidationException", "messages"},
		{"/model/m/converse", `nope`, nil, 400, "ValidationException", "parse"},
		{"/model/m/converse-stream", `{}`, []string{"x-mock-status", "429"}, 429, "ThrottlingException", "forced status 429"},
		{"/model/m/converse", `{}`, []string{"x-mock-status", "503"}, 503, "ServiceUnavailableException", "forced"},
		{"/model/m/converse", `{}`, []string{"x-mock-status", "403"}, 403, "AccessDeniedException", "forced"},
		{"/model/m/converse", `{}`, []string{"x-mock-cache-write", "many"}, 400, "ValidationException", "x-mock-cache-write"},
		{"/model/m/apply-guardrail", `{}`, nil, 404, "ResourceNotFoundException", "apply-guardrail"},
	}
	h := newServer(testConfig()).routes()
	for i, tt := range tests {
		rec := post(t, h, tt.path, tt.body, tt.headers...)
		checkStatus(t, rec, tt.status)
		var e struct{ Message string }
		mustUnmarshal(t, rec.Body.String(), &e)
		if typ := rec.Result().Header.Get("x-amzn-errortype"); typ != tt.typ || !strings.Contains(e.Message, tt.msg) {
			t.Errorf("step %d: %s %q, want %s containing %q", i, typ, e.Message, tt.typ, tt.msg)
		}
		if !strings.HasPrefix(rec.Result().Header.Get("x-amzn-requestid"), "bedrock-mock") {
			t.Errorf("step %d: no x-amzn-requestid", i)
		}
	}
}
