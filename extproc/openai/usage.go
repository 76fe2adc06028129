package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
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
	PromptTokens        count `json:"prompt_tokens"`
	CompletionTokens    count `json:"completion_tokens"`
	InputTokens         count `json:"input_tokens"`
	OutputTokens        count `json:"output_tokens"`
	TotalTokens         count `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens count `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokensDetails *struct {
		CachedTokens count `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens count `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	OutputTokensDetails *struct {
		ReasoningTokens count `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

// MaxCount caps any one count an upstream reports: a broken or hostile
// upstream must not lock a key out for a minute with 10^18 tokens.
const MaxCount = 1 << 31

// count is a token count as upstreams really send it: an integer, an
// exponent (1e3), a float, even a quoted number or "NaN". Anything that is
// not a finite number counts as 0, negatives as 0, and it is capped at
// MaxCount, so a count never refunds and never explodes.
type count int64

func (c *count) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), math.IsNaN(f), f <= 0:
		*c = 0
	case f >= MaxCount: // +Inf and out-of-range included
		*c = MaxCount
	default:
		*c = count(f)
	}
	return nil
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
		Prompt:     int64(max(w.PromptTokens, w.InputTokens)),
		Completion: int64(max(w.CompletionTokens, w.OutputTokens)),
		Total:      int64(w.TotalTokens),
	}
	if d := w.PromptTokensDetails; d != nil {
		u.Cached = int64(d.CachedTokens)
	} else if d := w.InputTokensDetails; d != nil {
		u.Cached = int64(d.CachedTokens)
	}
	if d := w.CompletionTokensDetails; d != nil {
		u.Reasoning = int64(d.ReasoningTokens)
	} else if d := w.OutputTokensDetails; d != nil {
		u.Reasoning = int64(d.ReasoningTokens)
	}
	if u.Total < u.Prompt+u.Completion {
		u.Total = u.Prompt + u.Completion
	}
	return u
}
