package llm

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// An Anthropic stream as the Messages API sends it: message_start with the
// prompt's usage, deltas, a ping, message_delta with the cumulative usage.
const anthropicStream = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4","usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}` + "\n\n" +
	"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}` + "\n\n" +
	"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}` + "\n\n" +
	"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}` + "\n\n" +
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

// Gemini's streamGenerateContent without alt=sse: one JSON array, the
// usage in its last element.
const geminiArray = `[{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}],"usageMetadata": {"promptTokenCount": 9},"modelVersion": "gemini-2.5-flash"}
,
{"candidates": [{"content": {"parts": [{"text": "lo [\"}]"}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 4,"thoughtsTokenCount": 6,"totalTokenCount": 19}}
]`

func geminiSSE() string {
	return "data: " + `{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":9}}` + "\r\n\r\n" +
		"data: " + `{"candidates":[{"content":{"parts":[{"text":"lo [\"}]"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":6,"totalTokenCount":19}}` + "\r\n\r\n"
}

// eventFrames encodes events as eventstream frames, as Bedrock sends them.
func eventFrames(t testing.TB, events ...[2]string) string {
	var b bytes.Buffer
	enc := eventstream.NewEncoder()
	for _, e := range events {
		var h eventstream.Headers
		msgType := "event"
		if strings.HasSuffix(e[0], "Exception") {
			msgType = "exception"
			h.Set(":exception-type", eventstream.StringValue(e[0]))
		} else {
			h.Set(":event-type", eventstream.StringValue(e[0]))
		}
		h.Set(":message-type", eventstream.StringValue(msgType))
		h.Set(":content-type", eventstream.StringValue("application/json"))
		if err := enc.Encode(&b, eventstream.Message{Headers: h, Payload: []byte(e[1])}); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func converseFrames(t testing.TB) string {
	return eventFrames(t,
		[2]string{"messageStart", `{"role":"assistant"}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hello"}}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":" there"}}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":0}`},
		[2]string{"messageStop", `{"stopReason":"end_turn"}`},
		[2]string{"metadata", `{"usage":{"inputTokens":12,"outputTokens":3,"totalTokens":15,"cacheReadInputTokens":4},"metrics":{"latencyMs":100}}`},
	)
}

// invokeFrames wraps Anthropic's events in InvokeModel's chunk frames.
func invokeFrames(t testing.TB) string {
	var evs [][2]string
	for _, block := range strings.Split(strings.TrimSpace(anthropicStream), "\n\n") {
		_, data, _ := strings.Cut(block, "data: ")
		evs = append(evs, [2]string{"chunk", fmt.Sprintf(`{"bytes":%q}`, base64.StdEncoding.EncodeToString([]byte(data)))})
	}
	evs = append(evs, [2]string{"throttlingException", `{"message":"slow down"}`})
	return eventFrames(t, evs...)
}

type streamCase struct {
	route       Route
	contentType string
}

var streamCases = []streamCase{
	{Route{API: ChatCompletions}, "text/event-stream"},
	{Route{API: Messages}, "text/event-stream"},
	{Route{API: GenerateContent, Stream: true}, "text/event-stream"},
	{Route{API: GenerateContent, Stream: true}, "application/json; charset=UTF-8"},
	{Route{API: Converse, Stream: true, Bedrock: true}, "application/vnd.amazon.eventstream"},
	{Route{API: Messages, Stream: true, Bedrock: true}, "application/vnd.amazon.eventstream"},
}

// Every provider's stream, cut anywhere: the usage it reports in its own
// way lands in the one record, and its text is counted for a stream that
// ends without usage.
func TestProviderStreams(t *testing.T) {
	tests := []struct {
		name   string
		sc     streamCase
		stream string
		usage  Usage
		prompt int64 // reported before the final usage; -1: none
		text   string
	}{
		{"anthropic", streamCases[1], anthropicStream,
			Usage{Prompt: 135, Completion: 15, Total: 150, CacheRead: 100, CacheWrite: 10}, 135, `Hello there{"a":`},
		{"gemini sse", streamCases[2], geminiSSE(), Usage{Prompt: 9, Completion: 10, Total: 19, Reasoning: 6}, -1, `Hello ["}]`},
		{"gemini array", streamCases[3], geminiArray, Usage{Prompt: 9, Completion: 10, Total: 19, Reasoning: 6}, -1, `Hello ["}]`},
		{"bedrock converse", streamCases[4], converseFrames(t), Usage{Prompt: 16, Completion: 3, Total: 19, CacheRead: 4}, -1, "Hello there"},
		{"bedrock invoke anthropic", streamCases[5], invokeFrames(t),
			Usage{Prompt: 135, Completion: 15, Total: 150, CacheRead: 100, CacheWrite: 10}, 135, `Hello there{"a":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cut := range []int{0, 1, 7, 64, len(tt.stream) / 2, len(tt.stream) - 1} {
				if !IsStream(tt.sc.route, tt.sc.contentType) {
					t.Fatal("not taken for a stream")
				}
				c := NewStreamCounter(tt.sc.route, "gpt-4o", tt.sc.contentType)
				c.Feed([]byte(tt.stream[:cut]))
				c.Feed([]byte(tt.stream[cut:]))
				u, ok := c.Usage()
				if !ok || u != tt.usage || !c.Done() {
					t.Fatalf("cut %d: usage %+v %v done %v, want %+v", cut, u, ok, c.Done(), tt.usage)
				}
				if p, ok := c.Prompt(); (tt.prompt >= 0) != ok || (ok && p != tt.prompt) {
					t.Fatalf("cut %d: prompt %d %v, want %d", cut, p, ok, tt.prompt)
				}
				if got, want := c.CompletionTokens(), int64(tokenize.Text("gpt-4o", tt.text)); got != want {
					t.Fatalf("cut %d: completion tokens %d, want %d (%q)", cut, got, want, tt.text)
				}
			}
		})
	}
}

// A stream cut before its final usage reports none, but what it carried
// counts: Anthropic's prompt from message_start, the text so far.
func TestProviderStreamsCut(t *testing.T) {
	cut := anthropicStream[:strings.Index(anthropicStream, "event: message_delta")]
	c := NewStreamCounter(Route{API: Messages}, "gpt-4o", "text/event-stream")
	c.Feed([]byte(cut))
	if _, ok := c.Usage(); ok || c.Done() {
		t.Error("a cut stream reported its usage")
	}
	if p, ok := c.Prompt(); !ok || p != 135 {
		t.Errorf("prompt %d %v, want 135 from message_start", p, ok)
	}
	// message_delta's counts replace message_start's, never add to them.
	c.Feed([]byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9,\"input_tokens\":30}}\n\n"))
	if u, ok := c.Usage(); !ok || u.Completion != 9 || u.Prompt != 140 {
		t.Errorf("cumulative usage: %+v %v, want completion 9, prompt 30+10+100", u, ok)
	}
	// An error event mid-stream ends nothing by itself.
	e := NewStreamCounter(Route{API: Messages}, "gpt-4o", "text/event-stream")
	e.Feed([]byte(cut + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
	if _, ok := e.Usage(); ok || e.Done() || e.CompletionTokens() == 0 {
		t.Errorf("overloaded mid-stream: usage reported or text lost")
	}
	// Frames past maxEvent, or not frames at all, count as nothing.
	b := NewStreamCounter(Route{API: Converse, Stream: true}, "gpt-4o", "application/vnd.amazon.eventstream")
	b.Feed([]byte("\xff\xff\xff\xffgarbage"))
	b.Feed([]byte(converseFrames(t)))
	if _, ok := b.Usage(); ok {
		t.Error("frames after garbage were read")
	}
}

func TestIsStream(t *testing.T) {
	for _, c := range []struct {
		route Route
		ct    string
		want  bool
	}{
		{Route{API: ChatCompletions}, "text/event-stream; charset=utf-8", true},
		{Route{API: ChatCompletions}, "application/json", false},
		{Route{API: GenerateContent, Stream: true}, "application/json", true},
		{Route{API: GenerateContent}, "application/json", false},
		{Route{API: Converse, Stream: true}, "application/vnd.amazon.eventstream", true},
		{Route{API: Messages}, "Text/Event-Stream", true},
	} {
		if IsStream(c.route, c.ct) != c.want {
			t.Errorf("IsStream(%+v, %q) = %v", c.route, c.ct, !c.want)
		}
	}
}

// BenchmarkStreamEvent reads one streamed event, as each chunk of a
// stream costs: an OpenAI chat chunk and an Anthropic content delta.
func BenchmarkStreamEvent(b *testing.B) {
	for _, c := range []struct {
		name  string
		route Route
		data  string
	}{
		{"openai", Route{API: ChatCompletions}, `{"id":"chatcmpl-B7xQ2kV9mN4pL1sR8tU3wY6zA0cD","object":"chat.completion.chunk","created":1741083667,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"content":" watch"},"logprobs":null,"finish_reason":null}],"usage":null}`},
		{"anthropic", Route{API: Messages}, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" watch"}}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := NewStreamCounter(c.route, "gpt-4o", "text/event-stream")
			data := []byte(c.data)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				s.onEvent("", data)
				s.text = s.text[:0]
			}
		})
	}
}
