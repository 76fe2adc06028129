package openaimock

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
)

// messagesRequest is an Anthropic Messages request, as /v1/messages,
// Vertex AI's rawPredict and Bedrock's InvokeModel take it (the last two
// without model, with anthropic_version, which the mock does not check).
type messagesRequest struct {
	Model     string          `json:"model"`
	MaxTokens *int            `json:"max_tokens"`
	Stream    bool            `json:"stream"`
	System    json.RawMessage `json:"system"`
	Messages  []chatMessage   `json:"messages"`
}

// anthropicMessage is the buffered answer, and the message of a stream's
// message_start.
type anthropicMessage struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Role         string          `json:"role"`
	Model        string          `json:"model"`
	Content      []textBlock     `json:"content"`
	StopReason   *string         `json:"stop_reason"`
	StopSequence *string         `json:"stop_sequence"`
	Usage        *anthropicUsage `json:"usage,omitempty"` // nil only for x-mock-no-usage
}

type textBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// anthropicUsage is the usage of an answer, of message_start and of
// message_delta alike: the current API repeats input and cache counts on
// message_delta, every count cumulative.
type anthropicUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

// messagesEvent is any event of a Messages stream; each carries the
// members of its type only.
type messagesEvent struct {
	Type         string            `json:"type"`
	Message      *anthropicMessage `json:"message,omitempty"`
	Index        *int              `json:"index,omitempty"`
	ContentBlock *textBlock        `json:"content_block,omitempty"`
	Delta        any               `json:"delta,omitempty"`
	Usage        *anthropicUsage   `json:"usage,omitempty"`
	// Metrics is what Bedrock adds to message_stop.
	Metrics *invocationMetrics `json:"amazon-bedrock-invocationMetrics,omitempty"`
}

type stopDelta struct {
	StopReason   string  `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
}

type invocationMetrics struct {
	InputTokenCount           int   `json:"inputTokenCount"`
	OutputTokenCount          int   `json:"outputTokenCount"`
	InvocationLatency         int64 `json:"invocationLatency"`
	FirstByteLatency          int64 `json:"firstByteLatency"`
	CacheReadInputTokenCount  int   `json:"cacheReadInputTokenCount"`
	CacheWriteInputTokenCount int   `json:"cacheWriteInputTokenCount"`
}

// messages answers Anthropic's Messages API wherever it is served. The
// path decides the stream where it names one (streamRawPredict,
// invoke-with-response-stream; Bedrock's invoke never streams), the body's
// stream otherwise. On Bedrock the errors are Bedrock's, the buffered
// answer carries the token-count headers, and a stream goes out as
// eventstream chunk frames.
func (s *server) messages(w *wire, c call, req messagesRequest) {
	model := req.Model
	if model == "" {
		model = c.pathModel
	}
	switch {
	case model == "":
		c.badRequest(w, "model: Field required")
		return
	case req.MaxTokens == nil:
		c.badRequest(w, "max_tokens: Field required")
		return
	case *req.MaxTokens < 1:
		c.badRequest(w, "max_tokens: Input should be greater than or equal to 1")
		return
	case req.Messages == nil:
		c.badRequest(w, "messages: Field required")
		return
	}
	system, err := contentText(req.System)
	if err != nil {
		c.badRequest(w, "system: %v", err)
		return
	}
	msgs, err := chatMessages(req.Messages)
	if err != nil {
		c.badRequest(w, "messages: %v", err)
		return
	}
	prompt := c.splitPrompt(promptTokens(model, system, msgs))
	gen := generate(model, c.completionTokens, *req.MaxTokens)
	u := anthropicUsage{InputTokens: prompt.input, CacheCreationInputTokens: prompt.cacheWrite,
		CacheReadInputTokens: prompt.cacheRead, OutputTokens: gen.tokens}
	stop := gen.finish("end_turn", "max_tokens")
	bedrock := c.op == "invoke" || c.op == "invoke-with-response-stream"
	stream := c.op == "streamRawPredict" || c.op == "invoke-with-response-stream" || (req.Stream && c.op != "invoke")
	msg := anthropicMessage{ID: s.nextID("msg_mock"), Type: "message", Role: "assistant", Model: model}
	c.begin(s, msg.ID, model, stream)
	if id := w.Header().Get(amznRequestID); id != "" {
		s.traces.add(id, c.tr)
	}
	if !stream {
		msg.Content = []textBlock{{Type: "text", Text: gen.text()}}
		msg.StopReason, msg.Usage = &stop, &u
		if c.noUsage {
			msg.Usage = nil
		} else if bedrock {
			h := w.Header()
			h.Set("X-Amzn-Bedrock-Input-Token-Count", strconv.Itoa(u.InputTokens))
			h.Set("X-Amzn-Bedrock-Output-Token-Count", strconv.Itoa(u.OutputTokens))
			h.Set("X-Amzn-Bedrock-Cache-Read-Input-Token-Count", strconv.Itoa(u.CacheReadInputTokens))
			h.Set("X-Amzn-Bedrock-Cache-Write-Input-Token-Count", strconv.Itoa(u.CacheCreationInputTokens))
			h.Set("X-Amzn-Bedrock-Invocation-Latency", strconv.FormatInt(c.elapsedMs(s.now()), 10))
		}
		c.reply(w, msg, msg.Usage != nil, gen.text())
		return
	}

	var out messagesOut
	if bedrock {
		w.Header().Set("X-Amzn-Bedrock-Content-Type", "application/json")
		out = bedrockChunks{startStream(w, c, eventStreamType)}
	} else {
		out = sseMessages{startSSE(w, c)}
	}
	firstByte := c.elapsedMs(s.now())
	index := new(int)
	start := msg
	start.Content = []textBlock{}
	first := u
	first.OutputTokens = 1 // a provisional count, as the API sends it
	start.Usage = &first
	out.event(messagesEvent{Type: "message_start", Message: &start}, nil)
	out.event(messagesEvent{Type: "content_block_start", Index: index, ContentBlock: &textBlock{Type: "text"}}, nil)
	out.event(messagesEvent{Type: "ping"}, nil)
	texts, streamError := c.textEvents(gen)
	for _, text := range texts {
		out.event(messagesEvent{Type: "content_block_delta", Index: index, Delta: textBlock{Type: "text_delta", Text: text}},
			textNote(0, text))
	}
	if streamError {
		out.overloaded()
		out.end()
		return
	}
	out.event(messagesEvent{Type: "content_block_stop", Index: index}, nil)
	out.event(messagesEvent{Type: "message_delta", Delta: stopDelta{StopReason: stop}, Usage: &u}, usageNote)
	last := messagesEvent{Type: "message_stop"}
	if bedrock {
		last.Metrics = &invocationMetrics{InputTokenCount: u.InputTokens, OutputTokenCount: u.OutputTokens,
			InvocationLatency: c.elapsedMs(s.now()), FirstByteLatency: firstByte,
			CacheReadInputTokenCount: u.CacheReadInputTokens, CacheWriteInputTokenCount: u.CacheCreationInputTokens}
	}
	out.event(last, doneNote)
	out.end()
}

// messagesOut sends a Messages stream's events in its host's framing.
type messagesOut interface {
	event(e messagesEvent, note func(*traceRecord))
	// overloaded ends the stream with the error x-mock-stream-error-after
	// asks for.
	overloaded()
	end()
}

// sseMessages is Anthropic's own framing, on /v1/messages and Vertex AI:
// every event named on an event: line, which the Anthropic SDK requires.
type sseMessages struct{ *sse }

func (o sseMessages) event(e messagesEvent, note func(*traceRecord)) { o.send(e.Type, e, note) }

func (o sseMessages) overloaded() {
	o.send("error", newAnthropicError("overloaded_error", "Overloaded"), errorNote)
}

// bedrockChunks is InvokeModelWithResponseStream's framing: each event's
// JSON, base64-encoded, in the payload of a chunk frame. A failure comes
// as an exception frame, as Bedrock sends it.
type bedrockChunks struct{ *sse }

func (o bedrockChunks) event(e messagesEvent, note func(*traceRecord)) {
	b, ok := o.encode(e)
	if !ok {
		return
	}
	o.awsEvent("chunk", struct {
		Bytes string `json:"bytes"`
	}{base64.StdEncoding.EncodeToString(b)}, note)
}

func (o bedrockChunks) overloaded() {
	o.awsException("modelStreamErrorException", "Overloaded")
}
