package llm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

func chatStream(deltas []string, usage string) string {
	var b strings.Builder
	b.WriteString(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n")
	for _, d := range deltas {
		fmt.Fprintf(&b, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}],\"usage\":null}\r\n\r\n", d)
	}
	b.WriteString(`data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
	if usage != "" {
		b.WriteString(`data: {"id":"c","choices":[],"usage":` + usage + "}\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

func TestStreamCounter(t *testing.T) {
	deltas := []string{"It", "'s", " time", " to", " buy", " a", " watch", ". 時計", "を買", "って 🕰️"}
	text := strings.Join(deltas, "")
	respStream := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\" there\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":2,\"total_tokens\":11}}}\n\n"
	tests := []struct {
		name       string
		api        API
		stream     string
		usage      Usage
		reported   bool
		done       bool
		completion int64
	}{
		{"chat with usage", ChatCompletions, chatStream(deltas, `{"prompt_tokens":20,"completion_tokens":12,"total_tokens":32}`),
			Usage{Prompt: 20, Completion: 12, Total: 32}, true, true, int64(tokenize.Text("gpt-4o", text))},
		{"chat without usage", ChatCompletions, chatStream(deltas, ""), Usage{}, false, true, int64(tokenize.Text("gpt-4o", text))},
		{"chat cut before done", ChatCompletions, chatStream(deltas, "")[:200], Usage{}, false, false, -1},
		{"completions", Completions, "data: {\"choices\":[{\"text\":\"Hello\"}]}\n\ndata: {\"choices\":[{\"text\":\" world\"}]}\n\ndata: [DONE]\n\n",
			Usage{}, false, true, int64(tokenize.Text("gpt-4o", "Hello world"))},
		{"responses", Responses, respStream, Usage{Prompt: 9, Completion: 2, Total: 11}, true, true, int64(tokenize.Text("gpt-4o", "Hello there"))},
		{"garbage", ChatCompletions, "data: {not json\n\ndata: \xff\xfe\n\n", Usage{}, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cut := range []int{0, 1, 7, 64, len(tt.stream) / 2, len(tt.stream) - 1} {
				if cut > len(tt.stream) {
					continue
				}
				c := NewStreamCounter(Route{API: tt.api}, "gpt-4o", "text/event-stream")
				c.Feed([]byte(tt.stream[:cut]))
				c.Feed([]byte(tt.stream[cut:]))
				u, ok := c.Usage()
				if u != tt.usage || ok != tt.reported || c.Done() != tt.done {
					t.Fatalf("cut %d: usage %+v %v done %v, want %+v %v %v", cut, u, ok, c.Done(), tt.usage, tt.reported, tt.done)
				}
				if tt.completion >= 0 && c.CompletionTokens() != tt.completion {
					t.Fatalf("cut %d: completion tokens %d, want %d", cut, c.CompletionTokens(), tt.completion)
				}
			}
		})
	}
}

func FuzzStreamCounter(f *testing.F) {
	f.Add([]byte(chatStream([]string{"a", "é"}, `{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`)), 5)
	f.Add([]byte("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":-9}}}\n\n"), 2)
	f.Add([]byte(anthropicStream), 40)
	f.Add([]byte(geminiArray), 17)
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		if len(stream) == 0 {
			return
		}
		cut = ((cut % len(stream)) + len(stream)) % len(stream)
		for _, sc := range streamCases {
			c := NewStreamCounter(sc.route, "gpt-4o", sc.contentType)
			c.Feed(stream[:cut])
			c.Feed(stream[cut:])
			u, _ := c.Usage()
			if u.Prompt < 0 || u.Completion < 0 || u.Total < u.Prompt+u.Completion || c.CompletionTokens() < 0 {
				t.Fatalf("%s: counts out of bounds: %+v, %d", sc.route.API, u, c.CompletionTokens())
			}
		}
	})
}
