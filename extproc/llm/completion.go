package llm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Some OpenAI-compatible servers and proxies answer without usage. Such an
// answer is not free: its completion is counted from what it carries, the
// way a stream without usage is counted from its deltas. Only the answer's
// own top-level members are read (choices, output), never what it echoes
// of the request.

// CompletionText gathers the generated text of a buffered answer: for
// OpenAI, every choice's content, refusal, reasoning and tool-call
// arguments, or every output item's text, refusal, arguments and reasoning
// summary; for Anthropic, every content block's text, thinking and tool
// input; for Gemini, every candidate's parts; for Bedrock, the output
// message's content. Embeddings generate nothing. An answer whose members
// are not of their API's shape is an error.
func CompletionText(api API, body []byte) (string, error) {
	if api == Embeddings {
		return "", nil
	}
	var t answerText
	var err error
	switch api.Provider() {
	case OpenAI:
		err = t.openAI(body)
	case Anthropic:
		var content []byte
		if content, _, err = topLevel(body, "content"); err == nil {
			err = t.blocks(content)
		}
	case Gemini:
		err = t.gemini(body)
	case Bedrock:
		msg := memberOf(memberOf(body, "output"), "message")
		err = t.blocks(memberOf(msg, "content"))
	}
	if err != nil {
		return "", fmt.Errorf("llm: %s answer: %w", api, err)
	}
	return t.b.String(), nil
}

// answerText collects an answer's texts.
type answerText struct{ b strings.Builder }

func (t *answerText) str(v []byte) error {
	if v == nil {
		return nil
	}
	s, err := readString(v)
	t.b.WriteString(s)
	return err
}

func (t *answerText) openAI(body []byte) error {
	var f [2][]byte
	if err := lastMembers(body, []string{"choices", "output"}, f[:]); err != nil {
		return err
	}
	err := array(f[0], func(choice []byte) error {
		var c [2][]byte
		if err := lastMembers(choice, []string{"text", "message"}, c[:]); err != nil {
			return err
		}
		var m [6][]byte
		if err := lastMembers(c[1], []string{"content", "refusal", "reasoning_content", "tool_calls", "function_call"}, m[:5]); err != nil {
			return err
		}
		errs := []error{t.str(c[0]), t.content(m[0]), t.str(m[1]), t.str(m[2])}
		errs = append(errs, array(m[3], func(call []byte) error {
			return t.str(memberOf(memberOf(call, "function"), "arguments"))
		}))
		errs = append(errs, t.str(memberOf(m[4], "arguments")))
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	return array(f[1], func(item []byte) error {
		var o [4][]byte
		if err := lastMembers(item, []string{"content", "summary", "arguments", "input"}, o[:]); err != nil {
			return err
		}
		err := array(o[0], func(part []byte) error {
			return errors.Join(t.str(memberOf(part, "text")), t.str(memberOf(part, "refusal")))
		})
		err = errors.Join(err, array(o[1], func(s []byte) error { return t.str(memberOf(s, "text")) }))
		return errors.Join(err, t.str(o[2]), t.str(o[3]))
	})
}

// content reads a message's content: a string, or an array of parts of
// which the text parts count.
func (t *answerText) content(v []byte) error {
	if len(v) > 0 && v[0] == '[' {
		return array(v, func(part []byte) error { return t.str(memberOf(part, "text")) })
	}
	return t.str(v)
}

// blocks reads Anthropic's content blocks, or Bedrock's: text, thinking
// and reasoning text, and a tool call's input as its JSON.
func (t *answerText) blocks(v []byte) error {
	return array(v, func(block []byte) error {
		var f [5][]byte
		if err := lastMembers(block, []string{"text", "thinking", "input", "toolUse", "reasoningContent"}, f[:]); err != nil {
			return err
		}
		t.b.Write(f[2]) // Anthropic's tool_use input: an object
		t.b.Write(memberOf(f[3], "input"))
		return errors.Join(t.str(f[0]), t.str(f[1]), t.str(memberOf(memberOf(f[4], "reasoningText"), "text")))
	})
}

func (t *answerText) gemini(body []byte) error {
	cands, found, err := topLevel(body, "candidates")
	if err != nil || !found {
		return err
	}
	return array(cands, func(cand []byte) error {
		return array(memberOf(memberOf(cand, "content"), "parts"), func(part []byte) error {
			var f [2][]byte
			if err := lastMembers(part, []string{"text", "functionCall"}, f[:]); err != nil {
				return err
			}
			t.b.Write(memberOf(f[1], "args"))
			return t.str(f[0])
		})
	})
}

// CompletionTokens counts a buffered answer's generated text as the model
// does; a text past maxExactBytes is bounded by its length, as prompts are.
func CompletionTokens(api API, model string, body []byte) (int64, error) {
	text, err := CompletionText(api, body)
	if err != nil {
		return 0, err
	}
	if len(text) > maxExactBytes {
		return int64(len(text)), nil
	}
	return int64(tokenize.Text(model, text)), nil
}
