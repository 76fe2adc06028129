package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

const (
	ctJSON   = "application/json"
	ctSSE    = "text/event-stream; charset=utf-8"
	ctFrames = "application/vnd.amazon.eventstream"
)

// usageCase is one answer and what its API's reader makes of it.
type usageCase struct {
	name        string
	contentType string
	body        string
	want        usage
	wantErr     string // in the error; "" for none
}

func checkUsage(t *testing.T, read func(string, []byte) (usage, error), tests []usageCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := read(tt.contentType, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, error %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// sse writes events as a server does, each with its event: line when
// the payload has a "type".
func sse(payloads ...string) string {
	var b strings.Builder
	for _, p := range payloads {
		var typed struct{ Type string }
		if json.Unmarshal([]byte(p), &typed) == nil && typed.Type != "" {
			b.WriteString("event: " + typed.Type + "\n")
		}
		b.WriteString("data: " + p + "\n\n")
	}
	return b.String()
}

func TestOpenAIUsage(t *testing.T) {
	checkUsage(t, openAIUsage, []usageCase{
		{"buffered", ctJSON, `{"id":"x","usage":{"prompt_tokens":30,"completion_tokens":64,"total_tokens":94}}`, usage{30, 64, 94}, ""},
		{"buffered without usage", ctJSON, `{"id":"x"}`, usage{}, "reports no usage"},
		{"not JSON", ctJSON, `<html>`, usage{}, "reading usage"},
		{"stream, usage in the last chunk", ctSSE,
			sse(`{"choices":[{"delta":{"content":"hi"}}],"usage":null}`,
				`{"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":2,"total_tokens":32}}`, `[DONE]`),
			usage{30, 2, 32}, ""},
		{"stream without a space after data:", ctSSE, "data:{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n", usage{1, 1, 2}, ""},
		{"stream with CRLF and a data line split in two", ctSSE,
			"data: {\"usage\":\r\ndata: {\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\r\n\r\n", usage{3, 4, 7}, ""},
		{"stream without usage", ctSSE, sse(`{"choices":[]}`, `[DONE]`), usage{}, "the stream reports no usage"},
		{"stream cut mid-event", ctSSE, "data: {\"choi", usage{}, "reading the stream"},
	})
}

func TestAnthropicUsage(t *testing.T) {
	start := `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],` +
		`"usage":{"input_tokens":20,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":1}}}`
	body := func(deltas ...string) string {
		events := []string{start, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`, `{"type":"ping"}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"No."}}`, `{"type":"content_block_stop","index":0}`}
		events = append(events, deltas...)
		return sse(append(events, `{"type":"message_stop"}`)...)
	}
	checkUsage(t, anthropicUsage, []usageCase{
		{"buffered: input, cache read and cache write are the prompt", ctJSON,
			`{"type":"message","usage":{"input_tokens":20,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":64}}`,
			usage{28, 64, 92}, ""},
		{"buffered without usage", ctJSON, `{"type":"message"}`, usage{}, "reports no usage"},
		{"buffered, not JSON", ctJSON, `{`, usage{}, "reading usage"},
		{"stream: message_delta with output only keeps message_start's input", ctSSE,
			body(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":64}}`), usage{28, 64, 92}, ""},
		{"stream: message_delta's counts replace, never add", ctSSE,
			body(`{"type":"message_delta","delta":{},"usage":{"input_tokens":20,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":10}}`,
				`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":20,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":64}}`),
			usage{28, 64, 92}, ""},
		{"stream cut after message_start", ctSSE, sse(start), usage{28, 1, 29}, ""},
		{"stream ended by an error event", ctSSE,
			sse(start, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`), usage{}, "overloaded_error: Overloaded"},
		{"stream without message_start", ctSSE, sse(`{"type":"ping"}`), usage{}, "the stream reports no usage"},
		{"stream with a broken event", ctSSE, sse(start, `{"type":`), usage{}, "reading the stream"},
	})
}

func TestGeminiUsage(t *testing.T) {
	chunk := func(text string, candidates int, final bool) string {
		finish := ""
		if final {
			finish = `,"finishReason":"STOP"`
		}
		return `{"candidates":[{"content":{"role":"model","parts":[{"text":"` + text + `"}]}` + finish + `,"index":0}],` +
			`"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":` + strconv.Itoa(candidates) + `,"totalTokenCount":` + strconv.Itoa(34+candidates) + `,"thoughtsTokenCount":4}}`
	}
	checkUsage(t, geminiUsage, []usageCase{
		{"buffered: candidates and thoughts are the completion", ctJSON, chunk("No.", 60, true), usage{30, 64, 94}, ""},
		{"buffered: cached content is part of the prompt, tool-use prompt is added", ctJSON,
			`{"usageMetadata":{"promptTokenCount":30,"cachedContentTokenCount":20,"toolUsePromptTokenCount":7,"candidatesTokenCount":64}}`,
			usage{37, 64, 101}, ""},
		{"buffered without usage", ctJSON, `{"candidates":[]}`, usage{}, "reports no usage"},
		{"buffered, not JSON", ctJSON, `<html>`, usage{}, "reading usage"},
		{"alt=sse: the last chunk's counts, not their sum", ctSSE,
			strings.ReplaceAll(sse(chunk("", 0, false), chunk("No", 30, false), chunk(" way.", 60, true)), "\n", "\r\n"),
			usage{30, 64, 94}, ""},
		{"alt=sse, a chunk without usage last", ctSSE, sse(chunk("No", 60, true), `{"candidates":[]}`), usage{30, 64, 94}, ""},
		{"alt=sse ended by an error", ctSSE,
			sse(chunk("No", 30, false), `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`), usage{}, "UNAVAILABLE: The model is overloaded."},
		{"alt=sse without usage", ctSSE, sse(`{"candidates":[]}`), usage{}, "the stream reports no usage"},
		{"JSON array stream", ctJSON, "[" + chunk("No", 30, false) + "\n,\r\n" + chunk(" way.", 60, true) + "\n]", usage{30, 64, 94}, ""},
		{"JSON array stream cut", ctJSON, "[" + chunk("No", 30, false) + "\n,\r\n{", usage{}, "reading the stream"},
	})
}

func TestConverseUsage(t *testing.T) {
	const metadata = `{"usage":{"inputTokens":20,"outputTokens":64,"totalTokens":94,"cacheReadInputTokens":6,"cacheWriteInputTokens":4},"metrics":{"latencyMs":12}}`
	stream := frames(t,
		event("messageStart", `{"role":"assistant"}`),
		event("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"No."}}`),
		event("contentBlockStop", `{"contentBlockIndex":0}`),
		event("messageStop", `{"stopReason":"end_turn"}`),
		event("metadata", metadata))
	checkUsage(t, converseUsage, []usageCase{
		{"buffered: input, cache read and cache write are the prompt", ctJSON,
			`{"output":{"message":{"role":"assistant","content":[{"text":"No."}]}},"stopReason":"end_turn","usage":{"inputTokens":20,"outputTokens":64,"totalTokens":94,"cacheReadInputTokens":6,"cacheWriteInputTokens":4}}`,
			usage{30, 64, 94}, ""},
		{"buffered without usage", ctJSON, `{"stopReason":"end_turn"}`, usage{}, "reports no usage"},
		{"buffered, not JSON", ctJSON, `<html>`, usage{}, "reading usage"},
		{"stream: the metadata event", ctFrames, stream, usage{30, 64, 94}, ""},
		{"stream ended by an exception", ctFrames,
			frames(t, event("messageStart", `{"role":"assistant"}`), exception("modelStreamErrorException", `{"message":"Model stream error"}`)),
			usage{}, "modelStreamErrorException: Model stream error"},
		{"stream without metadata", ctFrames, frames(t, event("messageStart", `{"role":"assistant"}`)), usage{}, "the stream reports no usage"},
		{"stream cut mid-frame", ctFrames, stream[:len(stream)-5], usage{}, "reading the stream"},
		{"stream with a broken metadata payload", ctFrames, frames(t, event("metadata", `{"usage":`)), usage{}, "reading the stream"},
	})
}

func event(typ, payload string) eventstream.Message {
	var h eventstream.Headers
	h.Set(":message-type", eventstream.StringValue("event"))
	h.Set(":event-type", eventstream.StringValue(typ))
	h.Set(":content-type", eventstream.StringValue("application/json"))
	return eventstream.Message{Headers: h, Payload: []byte(payload)}
}

func exception(typ, payload string) eventstream.Message {
	var h eventstream.Headers
	h.Set(":message-type", eventstream.StringValue("exception"))
	h.Set(":exception-type", eventstream.StringValue(typ))
	return eventstream.Message{Headers: h, Payload: []byte(payload)}
}

// frames encodes messages as Bedrock sends them.
func frames(t *testing.T, msgs ...eventstream.Message) string {
	t.Helper()
	var b bytes.Buffer
	enc := eventstream.NewEncoder()
	for _, m := range msgs {
		if err := enc.Encode(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestStreamErrorsAreNotWrappedTwice keeps an API's own error readable: it
// is the API's message, not "reading the stream".
func TestStreamErrorsAreNotWrappedTwice(t *testing.T) {
	_, err := anthropicUsage(ctSSE, []byte(sse(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)))
	var apiErr *apiError
	if !errors.As(err, &apiErr) || strings.Contains(err.Error(), "reading the stream") {
		t.Errorf("error %v, want the API's error as it is", err)
	}
}
