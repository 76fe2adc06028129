package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Usage is what an upstream reported it used, in one record for every API
// (README, "Usage per API"): Prompt is all the input, cache reads and
// writes included, and Completion all the output, reasoning included, so
// count: total | prompt | completion means the same for every API. The
// breakdowns are parts of them, never added to them.
type Usage struct {
	Prompt     int64
	Completion int64
	Total      int64
	CacheRead  int64 // of Prompt: read from a prompt cache
	CacheWrite int64 // of Prompt: written to a prompt cache
	Reasoning  int64 // of Completion: thinking the answer does not show
}

// MaxCount caps any one count an upstream reports: a broken or hostile
// upstream must not lock a key out for a minute with 10^18 tokens.
const MaxCount = 1 << 31

// readCount reads a token count as upstreams really send it: an integer,
// an exponent (1e3), a float, even a quoted number or "NaN". Anything that
// is not a finite number counts as 0, negatives as 0, and it is capped at
// MaxCount, so a count never refunds and never explodes.
func readCount(b []byte) int64 {
	if n, ok := smallInt(b); ok {
		return n
	}
	s := strings.Trim(string(b), `"`)
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), math.IsNaN(f), f <= 0:
		return 0
	case f >= MaxCount: // +Inf and out-of-range included
		return MaxCount
	}
	return int64(f)
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

// usageMember names where each provider's buffered answer keeps its usage.
func usageMember(api API) string {
	if api.Provider() == Gemini {
		return "usageMetadata"
	}
	return "usage"
}

// ParseUsage reads the usage of a buffered response body of api: the
// top-level object's own usage member, nothing else. ok is false when the
// body has none. Upstreams echo parts of the request (the Responses API's
// metadata, tools' schemas, text formats), so a usage key anywhere deeper
// is the client's and never counts. The walk skips the other members'
// values without decoding them: a completion can be megabytes of text.
func ParseUsage(api API, body []byte) (Usage, bool, error) {
	v, found, err := topLevel(body, usageMember(api))
	if err != nil {
		return Usage{}, false, fmt.Errorf("llm: response body: %w", err)
	}
	if !found || isNull(v) {
		return Usage{}, false, nil
	}
	var w wireUsage
	if err := w.read(api.Provider(), v); err != nil {
		return Usage{}, false, fmt.Errorf("llm: usage in response body: %w", err)
	}
	return w.normalize(api.Provider()), true, nil
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

// wireUsage holds a usage object's counts under the provider's own names,
// by slot; seen marks the slots the object carried, for the cumulative
// updates of Anthropic's message_delta.
type wireUsage struct {
	n    [numSlots]int64
	seen [numSlots]bool
}

// The counts a usage object may carry, across providers.
const (
	slotPrompt     = iota // OpenAI prompt/input, Anthropic input (uncached), Gemini prompt, Bedrock input
	slotCompletion        // OpenAI completion/output, Anthropic output, Gemini candidates, Bedrock output
	slotTotal             // OpenAI, Gemini, Bedrock
	slotCacheRead         // OpenAI cached_tokens, Anthropic cache_read, Gemini cachedContent, Bedrock cacheRead
	slotCacheWrite        // Anthropic cache_creation, Bedrock cacheWrite
	slotReasoning         // OpenAI reasoning_tokens, Gemini thoughts
	slotToolPrompt        // Gemini toolUsePrompt
	// OpenAI's second naming scheme (Responses' input/output beside Chat
	// Completions' prompt/completion): a body carrying both is read by
	// the larger.
	slotPromptAlt
	slotCompletionAlt
	slotCacheReadAlt
	slotReasoningAlt
	numSlots
)

// usageKeys maps each provider's usage keys to slots.
var usageKeys = [...]map[string]int{
	OpenAI: {"prompt_tokens": slotPrompt, "input_tokens": slotPromptAlt, "completion_tokens": slotCompletion,
		"output_tokens": slotCompletionAlt, "total_tokens": slotTotal},
	Anthropic: {"input_tokens": slotPrompt, "output_tokens": slotCompletion,
		"cache_read_input_tokens": slotCacheRead, "cache_creation_input_tokens": slotCacheWrite},
	Gemini: {"promptTokenCount": slotPrompt, "candidatesTokenCount": slotCompletion, "totalTokenCount": slotTotal,
		"cachedContentTokenCount": slotCacheRead, "thoughtsTokenCount": slotReasoning, "toolUsePromptTokenCount": slotToolPrompt},
	Bedrock: {"inputTokens": slotPrompt, "outputTokens": slotCompletion, "totalTokens": slotTotal,
		"cacheReadInputTokens": slotCacheRead, "cacheWriteInputTokens": slotCacheWrite},
}

// usageDetails are the breakdown objects in a usage: the one count each
// is read for. Anthropic reports thinking apart in output_tokens_details.
var usageDetails = [...]map[string]struct {
	field string
	slot  int
}{
	OpenAI: {
		"prompt_tokens_details":     {"cached_tokens", slotCacheRead},
		"input_tokens_details":      {"cached_tokens", slotCacheReadAlt},
		"completion_tokens_details": {"reasoning_tokens", slotReasoning},
		"output_tokens_details":     {"reasoning_tokens", slotReasoningAlt},
	},
	Anthropic: {"output_tokens_details": {"thinking_tokens", slotReasoning}},
	Gemini:    nil,
	Bedrock:   nil,
}

// read reads a usage object. A count of another type than a number is 0;
// the usage itself must be an object.
func (w *wireUsage) read(p Provider, v []byte) error {
	if len(v) == 0 || v[0] != '{' {
		return errNotObject
	}
	if !json.Valid(v) {
		// A count the JSON cannot carry (Python's bare NaN) leaves the
		// usage unknown: the request is charged as one without usage,
		// not as one whose counts were zero.
		return errSyntax
	}
	keys := usageKeys[p]
	return members(v, func(k, v []byte) error {
		if slot, ok := keys[string(k)]; ok {
			w.set(slot, readCount(v))
			return nil
		}
		d, ok := usageDetails[p][string(k)]
		if !ok {
			return nil
		}
		// A breakdown that is not an object breaks down nothing; a
		// repeated one is read by its last, as a whole.
		w.set(d.slot, 0)
		w.seen[d.slot] = false
		_ = object(v, func(k, v []byte) error {
			if string(k) == d.field {
				w.set(d.slot, readCount(v))
			}
			return nil
		})
		return nil
	})
}

// set stores a count: of a repeated key, the last wins.
func (w *wireUsage) set(slot int, n int64) {
	w.n[slot], w.seen[slot] = n, true
}

// normalize maps a provider's counts onto Usage (README, "Usage per
// API"), and clamps what no upstream should send: a total below its parts
// is raised to them.
func (w *wireUsage) normalize(p Provider) Usage {
	n := &w.n
	u := Usage{Prompt: n[slotPrompt], Completion: n[slotCompletion], Total: n[slotTotal],
		CacheRead: n[slotCacheRead], CacheWrite: n[slotCacheWrite], Reasoning: n[slotReasoning]}
	switch p {
	case OpenAI:
		u.Prompt = max(n[slotPrompt], n[slotPromptAlt])
		u.Completion = max(n[slotCompletion], n[slotCompletionAlt])
		u.CacheRead = max(n[slotCacheRead], n[slotCacheReadAlt])
		u.Reasoning = max(n[slotReasoning], n[slotReasoningAlt])
	case Anthropic, Bedrock:
		// input_tokens (inputTokens) leaves out what was read from or
		// written to the cache: the input is the sum.
		u.Prompt = saturatingAdd(n[slotPrompt], n[slotCacheRead], n[slotCacheWrite])
	case Gemini:
		// candidates leave out thoughts; the prompt count leaves out the
		// results of tools the model called.
		u.Prompt = saturatingAdd(n[slotPrompt], n[slotToolPrompt])
		u.Completion = saturatingAdd(n[slotCompletion], n[slotReasoning])
	}
	if u.Total < u.Prompt+u.Completion {
		u.Total = u.Prompt + u.Completion
	}
	return u
}

func saturatingAdd(vs ...int64) int64 {
	var s int64
	for _, v := range vs {
		s = min(s+v, 3*MaxCount)
	}
	return s
}
