package openaimock

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// messagesBody is an Anthropic request with the test prompt: its system
// as a string or as text blocks, and a user message whose blocks other
// than text count nothing.
func messagesBody(fields string, blocks bool) string {
	system := fmt.Sprintf("%q", promptSystem)
	if blocks {
		system = fmt.Sprintf(`[{"type":"text","text":%q,"cache_control":{"type":"ephemeral"}}]`, promptSystem)
	}
	return fmt.Sprintf(`{%s"system":%s,"messages":[{"role":"user","content":[{"type":"text","text":%q},`+
		`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}]}`, fields, system, promptUser)
}

// wireMessage decodes a buffered Messages answer.
type wireMessage struct {
	ID, Type, Role, Model string
	Content               []struct{ Type, Text string }
	StopReason            *string `json:"stop_reason"`
	StopSequence          *string `json:"stop_sequence"`
	Usage                 *struct {
		InputTokens   int `json:"input_tokens"`
		CacheCreation int `json:"cache_creation_input_tokens"`
		CacheRead     int `json:"cache_read_input_tokens"`
		OutputTokens  int `json:"output_tokens"`
	}
}

func TestMessagesBuffered(t *testing.T) {
	const claude, bedrockModel = "claude-sonnet-4-5", "anthropic.claude-3-haiku-20240307-v1:0"
	bedrockBody := messagesBody(`"anthropic_version":"bedrock-2023-05-31","max_tokens":100,`, false)
	tests := []struct {
		name, path, body string
		headers          []string
		model            string
		in, read, write  int // of wantPrompt
		out              int
		stop             string
		bedrock          bool
	}{
		{name: "first party", path: "/v1/messages", body: messagesBody(`"model":"claude-sonnet-4-5","max_tokens":100,`, false),
			model: claude, out: 64, stop: "end_turn"},
		{name: "prefix, system blocks, capped", path: "/anthropic/v1/messages",
			body: messagesBody(`"model":"claude-sonnet-4-5","max_tokens":10,`, true), model: claude, out: 10, stop: "max_tokens"},
		{name: "cache read and write", path: "/v1/messages", body: messagesBody(`"model":"claude-sonnet-4-5","max_tokens":100,`, false),
			headers: []string{"x-mock-cache-read", "5", "x-mock-cache-write", "3", "x-mock-completion-tokens", "7"},
			model:   claude, read: 5, write: 3, out: 7, stop: "end_turn"},
		{name: "cache beyond the prompt is capped", path: "/v1/messages", body: messagesBody(`"model":"claude-sonnet-4-5","max_tokens":100,`, false),
			headers: []string{"x-mock-cache-read", "1000", "x-mock-cache-write", "3"}, model: claude, read: -1, out: 64, stop: "end_turn"},
		{name: "vertex rawPredict", path: "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
			body:  messagesBody(`"anthropic_version":"vertex-2023-10-16","max_tokens":100,`, false),
			model: "claude-sonnet-4-5@20250929", out: 64, stop: "end_turn"},
		{name: "bedrock, escaped model", path: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke", body: bedrockBody,
			headers: []string{"x-mock-cache-read", "2"}, model: bedrockModel, read: 2, out: 64, stop: "end_turn", bedrock: true},
		{name: "bedrock, stream in body ignored", path: "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
			body:  messagesBody(`"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"stream":true,`, false),
			model: bedrockModel, out: 64, stop: "end_turn", bedrock: true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, tt.path, tt.body, tt.headers...)
			var got wireMessage
			decodeJSON(t, rec, http.StatusOK, &got)
			if !strings.HasPrefix(got.ID, "msg_mock") || got.Type != "message" || got.Role != "assistant" || got.Model != tt.model {
				t.Errorf("got id %q type %q role %q model %q, want msg_mock… message assistant %q", got.ID, got.Type, got.Role, got.Model, tt.model)
			}
			if len(got.Content) != 1 || got.Content[0].Type != "text" || tokenize.Text(tt.model, got.Content[0].Text) != tt.out {
				t.Fatalf("content %+v, want one text block of %d tokens", got.Content, tt.out)
			}
			if got.StopReason == nil || *got.StopReason != tt.stop || got.StopSequence != nil {
				t.Errorf("stop_reason %v stop_sequence %v, want %q and null", got.StopReason, got.StopSequence, tt.stop)
			}
			prompt := wantPrompt(tt.model)
			read, write := tt.read, tt.write
			if read < 0 { // the whole prompt came from the cache
				read, write = prompt, 0
			}
			u := got.Usage
			if u == nil || u.InputTokens != prompt-read-write || u.CacheRead != read || u.CacheCreation != write || u.OutputTokens != tt.out {
				t.Errorf("usage %+v, want input %d, cache read %d, write %d, output %d", u, prompt-read-write, read, write, tt.out)
			}
			if tt.bedrock {
				for name, want := range map[string]int{
					"x-amzn-bedrock-input-token-count": prompt - read - write, "x-amzn-bedrock-output-token-count": tt.out,
					"x-amzn-bedrock-cache-read-input-token-count": read,
				} {
					if got := rec.Result().Header.Get(name); got != fmt.Sprint(want) {
						t.Errorf("%s: got %q, want %d", name, got, want)
					}
				}
			}
			if rid := rec.Result().Header.Get("x-amzn-requestid"); tt.bedrock != strings.HasPrefix(rid, "bedrock-mock") {
				t.Errorf("x-amzn-requestid %q on bedrock %v", rid, tt.bedrock)
			}
		})
	}
}

// messagesSequence is the events of a whole stream of k text deltas, in
// order.
func messagesSequence(k int) []string {
	seq := []string{"message_start", "content_block_start", "ping"}
	for range k {
		seq = append(seq, "content_block_delta")
	}
	return append(seq, "content_block_stop", "message_delta", "message_stop")
}

// checkMessagesStream checks a Messages stream's events, whichever their
// framing: names and types agree, they come in order, the deltas make a
// text of out tokens, and the usage is what the API sends: provisional on
// message_start, whole and cumulative on message_delta. It returns the
// message id.
func checkMessagesStream(t *testing.T, events []sseEvent, model string, in, out int, stop string, bedrock bool) string {
	t.Helper()
	var text strings.Builder
	var id string
	for i, e := range events {
		if strings.HasSuffix(e.name, "Exception") {
			continue // Bedrock's exception frame: not an Anthropic event
		}
		var v struct {
			Type    string
			Message wireMessage
			Index   *int
			Delta   struct {
				Type, Text string
				StopReason string `json:"stop_reason"`
			}
			Usage *struct {
				InputTokens  *int `json:"input_tokens"`
				OutputTokens int  `json:"output_tokens"`
			}
			Metrics *struct{ InputTokenCount, OutputTokenCount int } `json:"amazon-bedrock-invocationMetrics"`
		}
		mustUnmarshal(t, e.data, &v)
		if v.Type != e.name {
			t.Errorf("event %d: named %q, type %q", i, e.name, v.Type)
		}
		switch e.name {
		case "message_start":
			id = v.Message.ID
			if u := v.Message.Usage; u == nil || u.InputTokens != in || u.OutputTokens != 1 || len(v.Message.Content) != 0 ||
				v.Message.Model != model || v.Message.StopReason != nil {
				t.Errorf("message_start %s, want input %d, output 1, no content, model %q", e.data, in, model)
			}
		case "content_block_delta":
			if v.Index == nil || *v.Index != 0 || v.Delta.Type != "text_delta" || tokenize.Text(model, v.Delta.Text) > chunksPerEvent {
				t.Errorf("event %d: %s", i, e.data)
			}
			text.WriteString(v.Delta.Text)
		case "message_delta":
			if u := v.Usage; u == nil || u.InputTokens == nil || *u.InputTokens != in || u.OutputTokens != out || v.Delta.StopReason != stop {
				t.Errorf("message_delta %s, want input %d, output %d, stop %q", e.data, in, out, stop)
			}
		case "message_stop":
			if m := v.Metrics; bedrock != (m != nil) || m != nil && (m.InputTokenCount != in || m.OutputTokenCount != out) {
				t.Errorf("message_stop %s on bedrock %v, want input %d output %d", e.data, bedrock, in, out)
			}
		}
	}
	if n := tokenize.Text(model, text.String()); n != out && events[len(events)-1].name == "message_stop" {
		t.Errorf("deltas make %d tokens, want %d", n, out)
	}
	return id
}

func eventNames(events []sseEvent) []string {
	names := make([]string, len(events))
	for i, e := range events {
		names[i] = e.name
	}
	return names
}

func TestMessagesStream(t *testing.T) {
	const model = "claude-haiku-4-5"
	sseBody := messagesBody(`"model":"claude-haiku-4-5","max_tokens":100,"stream":true,`, false)
	vertexBody := messagesBody(`"anthropic_version":"vertex-2023-10-16","max_tokens":100,`, false)
	tests := []struct {
		name, path, body string
		headers          []string
		deltas, out      int
		cacheRead        int
		streamError      bool
	}{
		{name: "first party", path: "/v1/messages", body: sseBody, deltas: 4, out: 12},
		{name: "vertex streamRawPredict", path: "/v1/projects/p/locations/global/publishers/anthropic/models/claude-haiku-4-5:streamRawPredict",
			body: vertexBody, deltas: 4, out: 12},
		{name: "bedrock", path: "/model/claude-haiku-4-5/invoke-with-response-stream", body: vertexBody, deltas: 4, out: 12},
		{name: "cache read", path: "/v1/messages", body: sseBody, headers: []string{"x-mock-cache-read", "4"}, deltas: 4, out: 12, cacheRead: 4},
		{name: "error after 2", path: "/v1/messages", body: sseBody, headers: []string{"x-mock-stream-error-after", "2"},
			deltas: 2, out: 6, streamError: true},
		{name: "bedrock error after 1", path: "/model/claude-haiku-4-5/invoke-with-response-stream", body: vertexBody,
			headers: []string{"x-mock-stream-error-after", "1"}, deltas: 1, out: 3, streamError: true},
		{name: "error asked past the end", path: "/v1/messages", body: sseBody, headers: []string{"x-mock-stream-error-after", "9"},
			deltas: 4, out: 12, streamError: true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, tt.path, tt.body, append(tt.headers, "x-mock-completion-tokens", "12")...)
			bedrock := strings.HasPrefix(tt.path, "/model/")
			var events []sseEvent
			if bedrock {
				if ct := rec.Result().Header.Get("Content-Type"); rec.Code != http.StatusOK || ct != eventStreamType {
					t.Fatalf("got %d %q, want 200 %s", rec.Code, ct, eventStreamType)
				}
				events = chunkEvents(t, readFrames(t, rec.Body.Bytes()))
			} else {
				events = parseSSE(t, rec)
			}
			want := messagesSequence(tt.deltas)
			if tt.streamError {
				errName := "error"
				if bedrock {
					errName = "modelStreamErrorException"
				}
				want = append(want[:3+tt.deltas], errName)
			}
			if got := eventNames(events); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("events:\n got %v\nwant %v", got, want)
			}
			if tt.streamError {
				wantErr := `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
				if bedrock {
					wantErr = `{"message":"Overloaded"}`
				}
				if last := events[len(events)-1]; last.data != wantErr {
					t.Errorf("error event %s, want %s", last.data, wantErr)
				}
			}
			in := wantPrompt(model) - tt.cacheRead
			id := checkMessagesStream(t, events, model, in, tt.out, "end_turn", bedrock)
			tr := traceRecord{Stream: true, Text: generate(model, tt.out, -1).text(), CompletionTokens: tt.out,
				Usage: !tt.streamError, Done: !tt.streamError, StreamError: tt.streamError, Events: len(events)}
			checkTrace(t, h, id, tr)
			if bedrock {
				checkTrace(t, h, rec.Result().Header.Get("x-amzn-requestid"), tr)
			}
		})
	}
}

func TestMessagesErrors(t *testing.T) {
	const bedrock = "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
	tests := []struct {
		path, body string
		headers    []string
		status     int
		typ        string // Anthropic's error type, or Bedrock's exception
		msg        string
	}{
		{"/v1/messages", `{"model":"m","messages":[]}`, nil, 400, "invalid_request_error", "max_tokens: Field required"},
		{"/v1/messages", `{"model":"m","max_tokens":0,"messages":[]}`, nil, 400, "invalid_request_error", "max_tokens"},
		{"/v1/messages", `{"max_tokens":5,"messages":[]}`, nil, 400, "invalid_request_error", "model: Field required"},
		{"/v1/messages", `{"model":"m","max_tokens":5}`, nil, 400, "invalid_request_error", "messages: Field required"},
		{"/v1/messages", `{"model":"m","max_tokens":5,"system":5,"messages":[]}`, nil, 400, "invalid_request_error", "system"},
		{"/v1/messages", `{`, nil, 400, "invalid_request_error", "parse"},
		{"/x/v1/messages", `{}`, []string{"x-mock-status", "529"}, 529, "overloaded_error", "forced status 529"},
		{"/v1/messages", `{}`, []string{"x-mock-status", "429"}, 429, "rate_limit_error", "forced"},
		{"/v1/messages", `{}`, []string{"x-mock-status", "503"}, 503, "api_error", "forced"},
		{"/v1/messages", `{}`, []string{"x-mock-cache-read", "-1"}, 400, "invalid_request_error", "x-mock-cache-read"},
		{bedrock, `{"messages":[]}`, nil, 400, "ValidationException", "max_tokens: Field required"},
		{bedrock, `{}`, []string{"x-mock-status", "429"}, 429, "ThrottlingException", "forced"},
		{bedrock, `{}`, []string{"x-mock-status", "500"}, 500, "InternalServerException", "forced"},
		{"/model/m/invoke-with-response-stream", `{}`, []string{"x-mock-stream-error-after", "0"}, 400, "ValidationException",
			"x-mock-stream-error-after"},
	}
	h := newServer(testConfig()).routes()
	for i, tt := range tests {
		rec := post(t, h, tt.path, tt.body, tt.headers...)
		checkStatus(t, rec, tt.status)
		var e struct {
			Type  string
			Error struct{ Type, Message string }
			// Bedrock's
			Message string
		}
		mustUnmarshal(t, rec.Body.String(), &e)
		typ, msg := e.Error.Type, e.Error.Message
		if strings.HasPrefix(tt.path, "/model/") {
			typ, msg = rec.Result().Header.Get("x-amzn-errortype"), e.Message
		} else if e.Type != "error" {
			t.Errorf("step %d: type %q, want error", i, e.Type)
		}
		if typ != tt.typ || !strings.Contains(msg, tt.msg) {
			t.Errorf("step %d: %s %s: got %q %q, want %q containing %q", i, tt.path, tt.body, typ, msg, tt.typ, tt.msg)
		}
	}
}
