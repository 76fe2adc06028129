package main

import (
	"encoding/json"
)

type completionsRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	MaxTokens     *int            `json:"max_tokens"`
}

// completionsResponse is both the legacy answer and its stream chunks,
// which share one shape on the real API.
type completionsResponse struct {
	ID                string              `json:"id"`
	Object            string              `json:"object"`
	Created           int64               `json:"created"`
	Model             string              `json:"model"`
	SystemFingerprint string              `json:"system_fingerprint"`
	Choices           []completionsChoice `json:"choices"`
	Usage             json.RawMessage     `json:"usage,omitempty"`
}

type completionsChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// completions answers the legacy API with one choice whatever the number
// of prompts: the prompt tokens of all of them, one generated text.
func (s *server) completions(w *wire, c call) {
	var req completionsRequest
	if !decodeBody(w, c.body, &req) {
		return
	}
	model := c.model(req.Model)
	ins, err := splitInputs(model, req.Prompt)
	if err != nil {
		badRequest(w, "Invalid 'prompt': %v.", err)
		return
	}
	gen := generate(model, c.completionTokens, limitOf(req.MaxTokens))
	prompt := sumTokens(ins)
	u, _ := json.Marshal(usage{PromptTokens: prompt, CompletionTokens: gen.tokens, TotalTokens: prompt + gen.tokens})
	resp := completionsResponse{
		ID: s.nextID("cmpl-mock"), Object: "text_completion", Created: s.now().Unix(), Model: model,
		SystemFingerprint: fingerprint,
	}
	c.begin(s, resp.ID, model, req.Stream)
	if !req.Stream {
		c.buffered(gen.text())
		resp.Choices = []completionsChoice{{Text: gen.text(), FinishReason: finishReason(gen)}}
		resp.Usage = u
		writeJSON(w, c.status, resp)
		return
	}

	withUsage := req.StreamOptions.includeUsage() && !c.ignoreUsage
	chunk := func(text string, finish *string) completionsResponse {
		ch := resp
		ch.Choices = []completionsChoice{{Text: text, FinishReason: finish}}
		if withUsage {
			ch.Usage = nullJSON
		}
		return ch
	}
	out := startSSE(w, c)
	for _, text := range gen.chunks(chunksPerEvent) {
		out.data(chunk(text, nil), text)
	}
	out.data(chunk("", finishReason(gen)), "")
	if withUsage {
		last := resp
		last.Choices = []completionsChoice{}
		last.Usage = u
		out.usageData(last)
	}
	out.done()
}
