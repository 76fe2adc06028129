package llm

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
	PromptTokens            count           `json:"prompt_tokens"`
	CompletionTokens        count           `json:"completion_tokens"`
	InputTokens             count           `json:"input_tokens"`
	OutputTokens            count           `json:"output_tokens"`
	TotalTokens             count           `json:"total_tokens"`
	PromptTokensDetails     cachedTokens    `json:"prompt_tokens_details"`
	InputTokensDetails      cachedTokens    `json:"input_tokens_details"`
	CompletionTokensDetails reasoningTokens `json:"completion_tokens_details"`
	OutputTokensDetails     reasoningTokens `json:"output_tokens_details"`
}

type cachedTokens struct {
	CachedTokens count `json:"cached_tokens"`
}

type reasoningTokens struct {
	ReasoningTokens count `json:"reasoning_tokens"`
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
	if n, ok := smallInt(b); ok {
		*c = count(n)
		return nil
	}
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

// smallInt reads the common case, a plain non-negative integer under
// MaxCount, without going through strconv.
func smallInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// ParseUsage reads the usage of a buffered response body: the top-level
// object's own "usage" member, nothing else. ok is false when the body has
// none. Upstreams echo parts of the request (the Responses API's metadata,
// tools' schemas, text formats), so a "usage" key anywhere deeper is the
// client's and never counts. Keys are matched as the upstream's JSON
// parser writes and reads them: case-sensitively, after unescaping; of a
// repeated top-level "usage" the last is taken, as Python's json and Go's
// encoding/json both keep the last. The walk skips the other members'
// values without decoding them: a completion can be megabytes of text.
func ParseUsage(body []byte) (Usage, bool, error) {
	v, found, err := topLevel(body, "usage")
	if err != nil {
		return Usage{}, false, fmt.Errorf("llm: response body: %w", err)
	}
	if !found || isNull(v) {
		return Usage{}, false, nil
	}
	if json.Valid(v) {
		if w, err := scanUsage(v); err == nil {
			return w.normalize(), true, nil
		}
	}
	return decodeUsage(v)
}

// topLevel returns the value of the object b's last top-level member
// named name.
func topLevel(b []byte, name string) (v []byte, found bool, err error) {
	err = members(b, func(k, value []byte) error {
		if string(k) == name {
			v, found = value, true
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return v, found, nil
}

// decodeUsage is ParseUsage's slow path, for what the scan leaves to
// encoding/json: malformed JSON (for its error) and keys that only match
// after case folding or unescaping.
func decodeUsage(v []byte) (Usage, bool, error) {
	var w *wireUsage
	if err := json.NewDecoder(bytes.NewReader(v)).Decode(&w); err != nil {
		return Usage{}, false, fmt.Errorf("llm: usage in response body: %w", err)
	}
	if w == nil {
		return Usage{}, false, nil
	}
	return w.normalize(), true, nil
}

// scanUsage reads a valid JSON usage object without reflection, the way
// encoding/json would decode it into a wireUsage; errInexact when it
// cannot be sure of that, and decodeUsage must answer.
func scanUsage(v []byte) (w wireUsage, err error) {
	// details reads a breakdown object's one field; null leaves it as it
	// was, as encoding/json does with a struct.
	details := func(dst *count, v []byte, field string) error {
		return object(v, func(k, v []byte) error {
			if string(k) == field {
				return dst.UnmarshalJSON(v)
			}
			return unknownKey(k, field)
		})
	}
	err = object(v, func(k, v []byte) error {
		switch string(k) {
		case "prompt_tokens":
			return w.PromptTokens.UnmarshalJSON(v)
		case "completion_tokens":
			return w.CompletionTokens.UnmarshalJSON(v)
		case "input_tokens":
			return w.InputTokens.UnmarshalJSON(v)
		case "output_tokens":
			return w.OutputTokens.UnmarshalJSON(v)
		case "total_tokens":
			return w.TotalTokens.UnmarshalJSON(v)
		case "prompt_tokens_details":
			return details(&w.PromptTokensDetails.CachedTokens, v, "cached_tokens")
		case "input_tokens_details":
			return details(&w.InputTokensDetails.CachedTokens, v, "cached_tokens")
		case "completion_tokens_details":
			return details(&w.CompletionTokensDetails.ReasoningTokens, v, "reasoning_tokens")
		case "output_tokens_details":
			return details(&w.OutputTokensDetails.ReasoningTokens, v, "reasoning_tokens")
		}
		return unknownKey(k, usageFields...)
	})
	return w, err
}

var usageFields = []string{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens",
	"prompt_tokens_details", "input_tokens_details", "completion_tokens_details", "output_tokens_details"}

// normalize maps both naming schemes (Chat Completions' prompt/completion,
// Responses' input/output) onto one, and clamps what no upstream should
// send: negative counts never refund anyone.
func (w *wireUsage) normalize() Usage {
	u := Usage{
		Prompt:     int64(max(w.PromptTokens, w.InputTokens)),
		Completion: int64(max(w.CompletionTokens, w.OutputTokens)),
		Total:      int64(w.TotalTokens),
		Cached:     int64(max(w.PromptTokensDetails.CachedTokens, w.InputTokensDetails.CachedTokens)),
		Reasoning:  int64(max(w.CompletionTokensDetails.ReasoningTokens, w.OutputTokensDetails.ReasoningTokens)),
	}
	if u.Total < u.Prompt+u.Completion {
		u.Total = u.Prompt + u.Completion
	}
	return u
}
