package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Usage is what an upstream reported it used.
type Usage struct {
	Prompt     int64
	Completion int64
	Total      int64
	Cached     int64
	Reasoning  int64
}

type wireUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	OutputTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

// ParseUsage finds usage in a buffered response body. ok is false when the
// body carries none. It does not decode the body: a completion can be
// megabytes of text, and only usage matters. A quote inside a JSON string
// is escaped, so the bytes "usage" in quotes can only be a key; the last
// one is taken, which is the top-level object's in every OpenAI response
// (usage comes after the choices or the output).
func ParseUsage(body []byte) (Usage, bool, error) {
	i := bytes.LastIndex(body, usageKey)
	if i < 0 {
		return Usage{}, false, nil
	}
	rest := bytes.TrimLeft(body[i+len(usageKey):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return Usage{}, false, nil
	}
	var w *wireUsage
	if err := json.NewDecoder(bytes.NewReader(rest[1:])).Decode(&w); err != nil {
		return Usage{}, false, fmt.Errorf("openai: usage in response body: %w", err)
	}
	if w == nil {
		return Usage{}, false, nil
	}
	return w.normalize(), true, nil
}

var usageKey = []byte(`"usage"`)

// normalize maps both naming schemes (Chat Completions' prompt/completion,
// Responses' input/output) onto one, and clamps what no upstream should
// send: negative counts never refund anyone.
func (w *wireUsage) normalize() Usage {
	u := Usage{
		Prompt:     max(w.PromptTokens, w.InputTokens, 0),
		Completion: max(w.CompletionTokens, w.OutputTokens, 0),
		Total:      max(w.TotalTokens, 0),
	}
	if d := w.PromptTokensDetails; d != nil {
		u.Cached = d.CachedTokens
	} else if d := w.InputTokensDetails; d != nil {
		u.Cached = d.CachedTokens
	}
	if d := w.CompletionTokensDetails; d != nil {
		u.Reasoning = d.ReasoningTokens
	} else if d := w.OutputTokensDetails; d != nil {
		u.Reasoning = d.ReasoningTokens
	}
	if u.Total < u.Prompt+u.Completion {
		u.Total = u.Prompt + u.Completion
	}
	return u
}
