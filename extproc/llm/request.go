package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Request is what tokengate needs from a request body.
type Request struct {
	Model        string
	Stream       bool
	IncludeUsage bool
	// MaxOutput is max_tokens, max_completion_tokens or max_output_tokens,
	// whichever the request sets; 0 when none.
	MaxOutput int64
	// Choices is how many completions the upstream generates, and bills,
	// for the request: n for Chat Completions, the larger of n and
	// best_of for legacy Completions (best_of candidates are generated
	// and billed, n of them returned); 1 for APIs without either.
	Choices int64

	api       API
	body      []byte // kept to read the prompt only when a policy estimates
	promptErr error
}

// PromptErr says why the prompt could not be read for an estimate (nil
// when it could): the request still goes on, estimated at nothing.
func (r *Request) PromptErr() error { return r.promptErr }

// wirePrompt is the text of a request, decoded only when estimating.
type wirePrompt struct {
	Messages     json.RawMessage `json:"messages"`
	Prompt       json.RawMessage `json:"prompt"`
	Input        json.RawMessage `json:"input"`
	Instructions string          `json:"instructions"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Name    string          `json:"name"`
	Content json.RawMessage `json:"content"`
}

// The top-level fields ParseRequest reads, by index into its last-value
// table.
const (
	fieldModel = iota
	fieldStream
	fieldStreamOptions
	fieldMaxTokens
	fieldMaxCompletionTokens
	fieldMaxOutputTokens
	fieldN
	fieldBestOf
	numFields
)

var fieldNames = [numFields]string{"model", "stream", "stream_options", "max_tokens",
	"max_completion_tokens", "max_output_tokens", "n", "best_of"}

// ParseRequest reads a request body of the given API. An error means the
// body is not JSON of the expected shape: the caller treats it as
// unreadable (the policy's unreadable_body).
//
// A repeated field is read as the upstream reads it: the last one counts
// (Python's json and Go's maps alike), and only its value must be of the
// field's type; an earlier one of another type is no error.
func ParseRequest(api API, body []byte) (*Request, error) {
	// Python's json.loads, given bytes as Starlette gives it, reads a body
	// behind a UTF-8 byte-order mark.
	body = bytes.TrimPrefix(body, utf8BOM)
	r := &Request{api: api, body: body}
	var last [numFields][]byte
	err := members(body, func(key, v []byte) error {
		for i, name := range fieldNames {
			if string(key) == name {
				last[i] = v
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("llm: %s request: %w", api, err)
	}
	var ints [numFields]int64
	for i, v := range last {
		if v == nil {
			continue
		}
		switch i {
		case fieldModel:
			r.Model, err = readString(v)
		case fieldStream:
			r.Stream, err = readBool(v)
		case fieldStreamOptions:
			r.IncludeUsage, err = readIncludeUsage(v)
		default:
			ints[i], err = readInt(v)
		}
		if err != nil {
			return nil, fmt.Errorf("llm: %s request: %s: %w", api, fieldNames[i], err)
		}
	}
	r.MaxOutput = firstPositive(ints[fieldMaxTokens], ints[fieldMaxCompletionTokens], ints[fieldMaxOutputTokens])
	r.Choices = choices(api, ints[fieldN], ints[fieldBestOf])
	return r, nil
}

var utf8BOM = []byte("\xef\xbb\xbf")

// maxChoices caps n: OpenAI allows 128, and a larger n only multiplies a
// reservation that could never be admitted anyway.
const maxChoices = 128

// choices is how many completions a request makes the upstream generate.
// A missing, zero or negative n is the upstream's default of one.
func choices(api API, n, bestOf int64) int64 {
	switch api {
	case ChatCompletions:
	case Completions:
		n = max(n, bestOf)
	default:
		return 1
	}
	return min(max(n, 1), maxChoices)
}

// readIncludeUsage reads stream_options.include_usage as the upstream
// does: that exact key, the last of repeated ones. "INCLUDE_USAGE": true
// asks the upstream for nothing, so it must not stop the injection either.
func readIncludeUsage(v []byte) (bool, error) {
	if isNull(v) {
		return false, nil
	}
	if v[0] != '{' {
		return false, errors.New("not an object")
	}
	include, found, err := topLevel(v, "include_usage")
	if err != nil || !found {
		return false, err
	}
	return readBool(include)
}

// PromptTokens estimates the prompt the way the model will count it.
// model is the request's model, or the deployment standing for it. Prompt
// fields of the wrong type count as nothing: the upstream will refuse them.
func (r *Request) PromptTokens(model string) int64 {
	n, _ := r.PromptTokensWithin(model, 0)
	return n
}

// maxExactBytes is the largest single text tokenized exactly; a larger one
// (megabytes of pasted logs) is bounded at once.
const maxExactBytes = 8 << 20

// PromptTokensWithin is PromptTokens with a time budget (0: none). Once the
// budget is spent, the texts not yet counted are bounded by their length in
// bytes, plus each message's framing: no token is shorter than a byte, so
// the bound never undercounts. bounded reports that it was used.
func (r *Request) PromptTokensWithin(model string, budget time.Duration) (n int64, bounded bool) {
	msgs, texts, err := r.prompt()
	if err != nil {
		r.promptErr = fmt.Errorf("llm: %s prompt: %w", r.api, err)
		return 0, false
	}
	start := time.Now()
	spent := func(size int) bool {
		if size > maxExactBytes || (budget > 0 && time.Since(start) > budget) {
			bounded = true
		}
		return bounded
	}
	if len(msgs) > 0 {
		empty := int64(tokenize.Chat(model, nil)) // the reply priming
		n = empty
		for _, m := range msgs {
			if spent(len(m.Content)) {
				n += int64(len(m.Role)+len(m.Name)+len(m.Content)) + chatFramingBound
				continue
			}
			n += int64(tokenize.Chat(model, []tokenize.Message{m})) - empty
		}
	}
	for _, t := range texts {
		if spent(len(t)) {
			n += int64(len(t))
			continue
		}
		n += int64(tokenize.Text(model, t))
	}
	return n, bounded
}

// prompt reads the texts to count: by the scanner, or where it cannot be
// sure of reading what encoding/json would, by decodePrompt.
func (r *Request) prompt() ([]tokenize.Message, []string, error) {
	body := r.body
	if !json.Valid(body) {
		if b, changed := pythonNumbers(body); changed && json.Valid(b) {
			body = b // what Python-served upstreams read
		}
	}
	if json.Valid(body) {
		if msgs, texts, ok := scanPrompt(r.api, body); ok {
			return msgs, texts, nil
		}
	}
	return decodePrompt(r.api, body)
}

// decodePrompt reads the texts to count with encoding/json.
func decodePrompt(api API, body []byte) (msgs []tokenize.Message, texts []string, err error) {
	var w wirePrompt
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, nil, err
	}
	switch api {
	case ChatCompletions:
		msgs = messagesOf(w.Messages)
	case Completions:
		texts = stringsOf(w.Prompt)
	case Embeddings:
		texts = stringsOf(w.Input)
	case Responses:
		if w.Instructions != "" {
			msgs = append(msgs, tokenize.Message{Role: "system", Content: w.Instructions})
		}
		if m := messagesOf(w.Input); m != nil {
			msgs = append(msgs, m...)
		} else {
			texts = stringsOf(w.Input)
		}
	}
	return msgs, texts, nil
}

// chatFramingBound covers a message's framing tokens (and its name's).
const chatFramingBound = 8

func firstPositive(vs ...int64) int64 {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

// contentText flattens a message's content: a string, or an array of parts
// of which only the text parts are counted.
func contentText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String()
}

// stringsOf reads a prompt or input that is a string or an array of
// strings. Arrays of token ids are not text and are left out.
func stringsOf(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil {
		return ss
	}
	return nil
}

// messagesOf reads a list of chat messages: Chat Completions' messages, or
// the Responses API's input when it is one.
func messagesOf(raw json.RawMessage) []tokenize.Message {
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	var ms []wireMessage
	if json.Unmarshal(raw, &ms) != nil {
		return nil
	}
	out := make([]tokenize.Message, 0, len(ms))
	for _, m := range ms {
		out = append(out, tokenize.Message{Role: m.Role, Name: m.Name, Content: contentText(m.Content)})
	}
	return out
}
