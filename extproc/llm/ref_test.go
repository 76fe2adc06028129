package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The reference for the differential tests: JSON decoded the way the
// upstreams' parsers decode it, by encoding/json into maps, whose keys are
// exact (case-sensitive, unescaped) and keep the last of repeated ones. It
// is slow and simple; the scanner must agree with it on every valid body.

// ref decodes one JSON value, numbers as json.Number.
func ref(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the value")
	}
	return v, nil
}

// get walks objects by keys; nil when a step is missing or not an object.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// refCount is readCount on a decoded value: numbers and numeric strings,
// clamped; anything else is 0.
func refCount(v any) int64 {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = x
	default:
		return 0
	}
	return readCount([]byte(strconv.Quote(s)))
}

// refUsage reads a provider's usage from a decoded body, by the README's
// table.
func refUsage(p Provider, body any) (Usage, bool) {
	member := "usage"
	if p == Gemini {
		member = "usageMetadata"
	}
	u, ok := get(body, member).(map[string]any)
	if !ok {
		return Usage{}, false
	}
	n := func(keys ...string) int64 { return refCount(get(u, keys...)) }
	var out Usage
	switch p {
	case OpenAI:
		out = Usage{Prompt: max(n("prompt_tokens"), n("input_tokens")), Completion: max(n("completion_tokens"), n("output_tokens")),
			Total:     n("total_tokens"),
			CacheRead: max(n("prompt_tokens_details", "cached_tokens"), n("input_tokens_details", "cached_tokens")),
			Reasoning: max(n("completion_tokens_details", "reasoning_tokens"), n("output_tokens_details", "reasoning_tokens"))}
	case Anthropic:
		out = Usage{CacheRead: n("cache_read_input_tokens"), CacheWrite: n("cache_creation_input_tokens"), Completion: n("output_tokens"),
			Reasoning: n("output_tokens_details", "thinking_tokens")}
		out.Prompt = n("input_tokens") + out.CacheRead + out.CacheWrite
	case Gemini:
		out = Usage{Prompt: n("promptTokenCount") + n("toolUsePromptTokenCount"), Reasoning: n("thoughtsTokenCount"),
			CacheRead: n("cachedContentTokenCount"), Total: n("totalTokenCount")}
		out.Completion = n("candidatesTokenCount") + out.Reasoning
	case Bedrock:
		out = Usage{CacheRead: n("cacheReadInputTokens"), CacheWrite: n("cacheWriteInputTokens"), Completion: n("outputTokens"), Total: n("totalTokens")}
		out.Prompt = n("inputTokens") + out.CacheRead + out.CacheWrite
	}
	out.Total = max(out.Total, out.Prompt+out.Completion)
	return out, true
}

// refFlatten is flatten on a decoded value.
func refFlatten(v any, depth int) string {
	if depth > maxFlatDepth {
		return ""
	}
	raw := func(v any) string {
		switch x := v.(type) {
		case nil:
			return ""
		case string:
			return x
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return strings.TrimSuffix(b.String(), "\n")
	}
	switch x := v.(type) {
	case string:
		return x
	case []any:
		var b strings.Builder
		for _, e := range x {
			b.WriteString(refFlatten(e, depth+1))
		}
		return b.String()
	case map[string]any:
		var b strings.Builder
		for _, k := range blockFields {
			fv, has := x[k]
			if !has || fv == nil {
				continue
			}
			switch k {
			case "text", "thinking":
				if s, ok := fv.(string); ok {
					b.WriteString(s)
				}
			case "input", "json":
				b.WriteString(raw(fv))
			case "content":
				b.WriteString(refFlatten(fv, depth+1))
			case "toolUse":
				b.WriteString(raw(get(fv, "input")))
			case "toolResult":
				b.WriteString(refFlatten(get(fv, "content"), depth+1))
			case "functionCall":
				b.WriteString(raw(get(fv, "args")))
			case "functionResponse":
				b.WriteString(raw(get(fv, "response")))
			case "reasoningContent":
				b.WriteString(refFlatten(get(fv, "reasoningText", "text"), depth+1))
			}
		}
		return b.String()
	}
	return ""
}

// refMessages reads a list of messages as messagesOf does.
func refMessages(v any, contentKey string) []tokenize.Message {
	list, ok := v.([]any)
	if !ok {
		return nil
	}
	out := []tokenize.Message{}
	for _, e := range list {
		if _, ok := e.(map[string]any); !ok && e != nil {
			return nil
		}
		role, ok1 := get(e, "role").(string)
		name, ok2 := get(e, "name").(string)
		if (!ok1 && get(e, "role") != nil) || (!ok2 && get(e, "name") != nil) {
			return nil
		}
		out = append(out, tokenize.Message{Role: role, Name: name, Content: refFlatten(get(e, contentKey), 0)})
	}
	return out
}
