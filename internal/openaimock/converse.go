package openaimock

import (
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// converseRequest is a Bedrock Converse request; the model is the path's.
type converseRequest struct {
	Messages        []converseMessage `json:"messages"`
	System          []textPart        `json:"system"`
	InferenceConfig *struct {
		MaxTokens *int `json:"maxTokens"`
	} `json:"inferenceConfig"`
}

type converseMessage struct {
	Role    string     `json:"role"`
	Content []textPart `json:"content"`
}

type converseResponse struct {
	Output struct {
		Message converseMessage `json:"message"`
	} `json:"output"`
	StopReason string          `json:"stopReason"`
	Usage      *converseUsage  `json:"usage,omitempty"` // nil only for x-mock-no-usage
	Metrics    converseMetrics `json:"metrics"`
}

// converseUsage is Bedrock's TokenUsage: inputTokens leaves out the
// tokens read from and written to the prompt cache, and totalTokens adds
// all four up, as the service reports them (a stream measured with
// inputTokens 4995, cacheWriteInputTokens 4993 and 19 output tokens had
// totalTokens 10007).
type converseUsage struct {
	InputTokens           int `json:"inputTokens"`
	OutputTokens          int `json:"outputTokens"`
	TotalTokens           int `json:"totalTokens"`
	CacheReadInputTokens  int `json:"cacheReadInputTokens"`
	CacheWriteInputTokens int `json:"cacheWriteInputTokens"`
}

type converseMetrics struct {
	LatencyMs int64 `json:"latencyMs"`
}

// The payloads of ConverseStream's event frames.
type (
	blockDelta struct {
		ContentBlockIndex int      `json:"contentBlockIndex"`
		Delta             textPart `json:"delta"`
	}
	blockStop struct {
		ContentBlockIndex int `json:"contentBlockIndex"`
	}
	messageStop struct {
		StopReason string `json:"stopReason"`
	}
	streamMetadata struct {
		Usage   converseUsage   `json:"usage"`
		Metrics converseMetrics `json:"metrics"`
	}
)

// converse answers Bedrock's Converse and ConverseStream. The trace goes
// by the x-amzn-RequestId the answer carries, Converse having no id of
// its own.
func (s *server) converse(w *wire, c call, req converseRequest) {
	if req.Messages == nil {
		c.badRequest(w, "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null")
		return
	}
	model := c.pathModel
	msgs := make([]tokenize.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = tokenize.Message{Role: m.Role, Content: joinText(m.Content)}
	}
	prompt := c.splitPrompt(promptTokens(model, joinText(req.System), msgs))
	limit := -1
	if req.InferenceConfig != nil {
		limit = limitOf(req.InferenceConfig.MaxTokens)
	}
	gen := generate(model, c.completionTokens, limit)
	u := converseUsage{InputTokens: prompt.input, OutputTokens: gen.tokens,
		TotalTokens:          prompt.input + gen.tokens + prompt.cacheRead + prompt.cacheWrite,
		CacheReadInputTokens: prompt.cacheRead, CacheWriteInputTokens: prompt.cacheWrite}
	stop := gen.finish("end_turn", "max_tokens")
	stream := c.op == "converse-stream"
	c.begin(s, w.Header().Get(amznRequestID), model, stream)
	if !stream {
		var resp converseResponse
		resp.Output.Message = converseMessage{Role: "assistant", Content: []textPart{{Text: gen.text()}}}
		resp.StopReason, resp.Usage = stop, &u
		if c.noUsage {
			resp.Usage = nil
		}
		resp.Metrics.LatencyMs = c.elapsedMs(s.now())
		c.reply(w, resp, resp.Usage != nil, gen.text())
		return
	}

	out := startStream(w, c, eventStreamType)
	out.awsEvent("messageStart", struct {
		Role string `json:"role"`
	}{"assistant"}, nil)
	texts, streamError := c.textEvents(gen)
	for _, text := range texts {
		out.awsEvent("contentBlockDelta", blockDelta{Delta: textPart{Text: text}}, textNote(0, text))
	}
	if streamError {
		out.awsException("modelStreamErrorException", "openai-mock: x-mock-stream-error-after")
		out.end()
		return
	}
	out.awsEvent("contentBlockStop", blockStop{}, nil)
	out.awsEvent("messageStop", messageStop{StopReason: stop}, nil)
	out.awsEvent("metadata", streamMetadata{Usage: u, Metrics: converseMetrics{LatencyMs: c.elapsedMs(s.now())}}, endNote)
	out.end()
}
