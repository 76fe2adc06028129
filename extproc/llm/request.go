package llm

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Request is what tokengate needs from a request body.
type Request struct {
	Model        string
	Stream       bool
	IncludeUsage bool
	// MaxOutput is the largest of max_tokens, max_completion_tokens and
	// max_output_tokens that the request sets; 0 when none. Servers differ
	// in which they obey when given several (vLLM and SGLang take
	// max_completion_tokens first, others max_tokens), so a reservation
	// holds the largest.
	MaxOutput int64
	// Choices is how many completions the upstream generates, and bills,
	// for the request: n for Chat Completions; for legacy Completions the
	// larger of n and best_of (best_of candidates are generated and
	// billed, n of them returned) for each prompt of a prompt array; 1 for
	// APIs without either.
	Choices int64
	// Background is a Responses request run in the background: answered
	// at once, its output fetched later by a GET tokengate does not
	// count.
	Background bool

	api       API
	body      []byte // kept to read the prompt only when a policy estimates
	promptErr error
}

// PromptErr says why the prompt could not be read for an estimate (nil
// when it could): the request still goes on, estimated at nothing.
func (r *Request) PromptErr() error { return r.promptErr }

// The request fields ParseRequest reads, by index into its last-value
// table. Gemini's and Bedrock's output limits sit one level down, in
// generationConfig and inferenceConfig.
const (
	fieldModel = iota
	fieldStream
	fieldStreamOptions
	fieldMaxTokens
	fieldMaxCompletionTokens
	fieldMaxOutputTokens
	fieldN
	fieldBestOf
	fieldGenerationConfig
	fieldGenerationConfigSnake
	fieldInferenceConfig
	fieldPrompt
	fieldBackground
	numFields
)

var fieldNames = [numFields]string{"model", "stream", "stream_options", "max_tokens",
	"max_completion_tokens", "max_output_tokens", "n", "best_of", "generationConfig", "generation_config", "inferenceConfig", "prompt", "background"}

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
		case fieldBackground:
			r.Background, err = readBool(v)
			r.Background = r.Background && api == Responses
		case fieldStreamOptions:
			r.IncludeUsage, err = readIncludeUsage(v)
		case fieldGenerationConfig, fieldGenerationConfigSnake, fieldInferenceConfig, fieldPrompt:
			// read below, for the APIs that have them
		default:
			ints[i], err = readInt(v)
		}
		if err != nil {
			return nil, fmt.Errorf("llm: %s request: %s: %w", api, fieldNames[i], err)
		}
	}
	switch api {
	case GenerateContent:
		// The Gemini API reads JSON by proto3's mapping, in which a field
		// has two names. Which one wins when a body gives both is the
		// parser's; the larger of the two is what a reservation may need.
		for _, gc := range [][]byte{last[fieldGenerationConfig], last[fieldGenerationConfigSnake]} {
			out, n, err := nestedInts(gc, "maxOutputTokens", "max_output_tokens", "candidateCount", "candidate_count")
			if err != nil {
				return nil, fmt.Errorf("llm: %s request: generationConfig: %w", api, err)
			}
			ints[fieldMaxOutputTokens], ints[fieldN] = max(ints[fieldMaxOutputTokens], out), max(ints[fieldN], n)
		}
	case Converse:
		if ints[fieldMaxTokens], _, err = nestedInts(last[fieldInferenceConfig], "maxTokens", "", "", ""); err != nil {
			return nil, fmt.Errorf("llm: %s request: inferenceConfig: %w", api, err)
		}
	}
	r.MaxOutput = max(0, ints[fieldMaxTokens], ints[fieldMaxCompletionTokens], ints[fieldMaxOutputTokens])
	r.Choices = choices(api, ints[fieldN], ints[fieldBestOf])
	if api == Completions {
		r.Choices = min(r.Choices*prompts(last[fieldPrompt]), maxCompletions)
	}
	// Only OpenAI's streams leave usage out unless asked.
	r.IncludeUsage = r.IncludeUsage || api.Provider() != OpenAI
	return r, nil
}

// nestedInts reads two integers of a configuration object, each under
// either of two names (the larger, when both are given); absent or null
// is 0.
func nestedInts(v []byte, a, aAlt, b, bAlt string) (x, y int64, err error) {
	var f [4][]byte
	if err := lastMembers(v, []string{a, aAlt, b, bAlt}, f[:]); err != nil {
		return 0, 0, err
	}
	read := func(v, alt []byte) (int64, error) {
		x, err := readInt(v)
		if err != nil {
			return 0, err
		}
		y, err := readInt(alt)
		return max(x, y), err
	}
	if x, err = read(f[0], f[1]); err != nil {
		return 0, 0, err
	}
	y, err = read(f[2], f[3])
	return x, y, err
}

var utf8BOM = []byte("\xef\xbb\xbf")

// maxChoices caps n: OpenAI allows 128, and a larger n only multiplies a
// reservation that could never be admitted anyway.
const maxChoices = 128

// maxCompletions caps Choices for a prompt array: OpenAI takes up to
// 2,048 prompts, each given the request's n.
const maxCompletions = 2048 * maxChoices

// prompts is how many prompts a legacy Completions prompt is: the
// length of an array of strings or of token arrays, one for a string or
// a single array of tokens (or anything else, which the upstream
// refuses).
func prompts(v []byte) int64 {
	var n, numbers int64
	if array(v, func(elem []byte) error {
		n++
		if c := elem[0]; c == '-' || c >= '0' && c <= '9' {
			numbers++
		}
		return nil
	}) != nil || numbers > 0 {
		return 1
	}
	return max(n, 1)
}

// choices is how many completions a request makes the upstream generate.
// A missing, zero or negative n is the upstream's default of one.
func choices(api API, n, bestOf int64) int64 {
	switch api {
	case ChatCompletions, GenerateContent: // Gemini's candidateCount
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
	msgs, texts, ids, err := r.prompt()
	if err != nil {
		r.promptErr = fmt.Errorf("llm: %s prompt: %w", r.api, err)
		return 0, false
	}
	n = ids
	start := time.Now()
	spent := func(size int) bool {
		if size > maxExactBytes || (budget > 0 && time.Since(start) > budget) {
			bounded = true
		}
		return bounded
	}
	if len(msgs) > 0 {
		empty := int64(tokenize.Chat(model, nil)) // the reply priming
		n += empty
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

// prompt reads the texts to count, what the upstream bills beside the
// messages (promptExtras) among them, and the token ids of a prompt
// given as ids. Python-served upstreams read NaN and Infinity as
// numbers, so a body carrying them is read as they read it.
func (r *Request) prompt() (msgs []tokenize.Message, texts []string, ids int64, err error) {
	body := r.body
	if b, changed := pythonNumbers(body); changed {
		body = b
	}
	f, err := readPromptMembers(body)
	if err != nil {
		return nil, nil, 0, err
	}
	var calls []string
	if msgs, texts, err = promptFrom(r.api, &f, &calls); err != nil {
		return nil, nil, 0, err
	}
	extra, ids := promptExtras(r.api, &f)
	return msgs, append(append(texts, calls...), extra...), ids, nil
}

// chatFramingBound covers a message's framing tokens (and its name's).
const chatFramingBound = 8
