package openai

import (
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
// body is not JSON or carries no usage.
func ParseUsage(body []byte) (Usage, bool, error) {
	var w struct {
		Usage *wireUsage `json:"usage"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return Usage{}, false, fmt.Errorf("openai: response body: %w", err)
	}
	if w.Usage == nil {
		return Usage{}, false, nil
	}
	return w.Usage.normalize(), true, nil
}

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
