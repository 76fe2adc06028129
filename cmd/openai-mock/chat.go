package main

import (
	"encoding/json"
)

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
}

type chatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
}

type assistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	Usage             json.RawMessage   `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// chatDelta has pointers so the last delta marshals as {}.
type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

const fingerprint = "fp_openai_mock"

func (s *server) chat(w *wire, c call) {
	var req chatRequest
	if !decodeBody(w, c.body, &req) {
		return
	}
	if req.Messages == nil {
		badRequest(w, "Missing required parameter: 'messages'.")
		return
	}
	model := c.model(req.Model)
	prompt, err := chatTokens(model, req.Messages)
	if err != nil {
		badRequest(w, "Invalid 'messages': %v.", err)
		return
	}
	gen := generate(model, c.completionTokens, limitOf(req.MaxTokens, req.MaxCompletionTokens))
	u := chatUsage(prompt, gen.tokens)
	id, created := s.nextID("chatcmpl-mock"), s.now().Unix()
	c.begin(s, id, model, req.Stream)
	if !req.Stream {
		c.buffered(gen.text())
		writeJSON(w, c.status, chatResponse{
			ID: id, Object: "chat.completion", Created: created, Model: model,
			Choices: []chatChoice{{
				Message:      assistantMessage{Role: "assistant", Content: gen.text()},
				FinishReason: finishReason(gen),
			}},
			Usage:             u,
			SystemFingerprint: fingerprint,
		})
		return
	}

	withUsage := req.StreamOptions.includeUsage() && !c.ignoreUsage
	chunk := func(d chatDelta, finish *string) chatChunk {
		ch := chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			SystemFingerprint: fingerprint,
			Choices:           []chatChunkChoice{{Delta: d, FinishReason: finish}},
		}
		if withUsage {
			ch.Usage = nullJSON
		}
		return ch
	}
	out := startSSE(w, c)
	empty := ""
	out.data(chunk(chatDelta{Role: "assistant", Content: &empty}, nil), "")
	for _, text := range gen.chunks(chunksPerEvent) {
		out.data(chunk(chatDelta{Content: &text}, nil), text)
	}
	out.data(chunk(chatDelta{}, finishReason(gen)), "")
	if withUsage {
		last := chunk(chatDelta{}, nil)
		last.Choices = []chatChunkChoice{}
		last.Usage, _ = json.Marshal(u)
		out.usageData(last)
	}
	out.done()
}
