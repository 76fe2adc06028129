package llm

import (
	"errors"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// promptOf reads the texts to count from a request body of api: the
// messages (with their roles, for the chat framing) and plain texts. The
// prompt members are read where the upstream reads them, at the top level
// and case-sensitively; a message or part of a shape the API does not
// have counts as nothing (the upstream refuses it). An error means the
// body is not an object, or a member the prompt needs is of the wrong
// type.
func promptOf(api API, body []byte) (msgs []tokenize.Message, texts []string, err error) {
	f, err := readPromptMembers(body)
	if err != nil {
		return nil, nil, err
	}
	return promptFrom(api, &f, nil)
}

// promptMembers are a request's top-level members a prompt may live in,
// by promptFields' index: one walk over the body finds them all, for
// promptFrom and promptExtras alike.
type promptMembers [numPromptFields][]byte

func readPromptMembers(body []byte) (f promptMembers, err error) {
	if isNull(body) {
		// The body is the request: null is none (lastMembers reads a
		// null member as an object without members, as nested readers want).
		return f, errNotObject
	}
	err = lastMembers(body, promptFields[:], f[:])
	return f, err
}

// promptFrom is promptOf on the members already read. With calls set, it
// also appends to it the tool calls of earlier turns and their outputs,
// found as the messages are walked (see promptExtras).
func promptFrom(api API, f *promptMembers, calls *[]string) (msgs []tokenize.Message, texts []string, err error) {
	system := func(v []byte) error {
		if v == nil {
			return nil
		}
		s, err := flatten(v)
		if err == nil && s != "" {
			msgs = append(msgs, tokenize.Message{Role: "system", Content: s})
		}
		return err
	}
	switch api {
	case ChatCompletions:
		msgs, err = messagesOf(f[pMessages], "content", chatCalls, calls)
	case Completions:
		texts, err = stringsOf(f[pPrompt])
	case Embeddings:
		texts, err = stringsOf(f[pInput])
	case Responses:
		if f[pInstructions] != nil {
			var s string
			if s, err = readString(f[pInstructions]); err != nil {
				return nil, nil, err
			}
			if s != "" {
				msgs = append(msgs, tokenize.Message{Role: "system", Content: s})
			}
		}
		if len(f[pInput]) > 0 && f[pInput][0] == '[' && !stringArray(f[pInput]) {
			var m []tokenize.Message
			m, err = messagesOf(f[pInput], "content", responsesCalls, calls)
			msgs = append(msgs, m...)
		} else {
			texts, err = stringsOf(f[pInput])
		}
	case Messages:
		err = system(f[pSystem])
		var m []tokenize.Message
		m, err2 := messagesOf(f[pMessages], "content", nil, nil)
		msgs, err = append(msgs, m...), errors.Join(err, err2)
	case GenerateContent:
		si := f[pSystemInstruction]
		if si == nil {
			si = f[pSystemInstructionSnake]
		}
		err = system(memberOf(si, "parts"))
		var m []tokenize.Message
		m, err2 := messagesOf(f[pContents], "parts", nil, nil)
		msgs, err = append(msgs, m...), errors.Join(err, err2)
	case Converse:
		err = system(f[pSystem])
		var m []tokenize.Message
		m, err2 := messagesOf(f[pMessages], "content", nil, nil)
		msgs, err = append(msgs, m...), errors.Join(err, err2)
	}
	return msgs, texts, err
}

// The top-level members a prompt may live in, across APIs.
const (
	pMessages = iota
	pPrompt
	pInput
	pInstructions
	pSystem
	pContents
	pSystemInstruction
	pSystemInstructionSnake
	pTools // read by promptExtras, as are the three below
	pFunctions
	pToolConfig
	numPromptFields
)

var promptFields = [numPromptFields]string{"messages", "prompt", "input", "instructions", "system",
	"contents", "systemInstruction", "system_instruction", "tools", "functions", "toolConfig"}

// messagesOf reads a list of messages, each with a role and its text under
// contentKey ("content", or Gemini's "parts"), and appends to calls (when
// set) each message's members named callKeys (at most two), as text. Absent or null is no
// messages, and so is a list the upstream refuses: one whose element is
// not an object, or whose role or name is not a string.
func messagesOf(raw []byte, contentKey string, callKeys []string, calls *[]string) ([]tokenize.Message, error) {
	if raw == nil {
		return nil, nil
	}
	out := []tokenize.Message{} // an empty array is not "no messages"
	names := append([]string{"role", "name", contentKey}, callKeys...)
	err := array(raw, func(v []byte) error {
		var f [5][]byte
		var m tokenize.Message
		if !isNull(v) {
			if err := lastMembers(v, names, f[:len(names)]); err != nil {
				return err
			}
		}
		var err1, err2 error
		m.Role, err1 = readString(f[0])
		m.Name, err2 = readString(f[1])
		m.Content, _ = flatten(f[2])
		if calls != nil {
			for _, c := range f[3:len(names)] {
				appendRawText(calls, c)
			}
		}
		out = append(out, m)
		return errors.Join(err1, err2)
	})
	if err != nil {
		return nil, nil
	}
	return out, nil
}

// flatten reads the text of a message's content, whichever API's shape
// it has: a string, or an array of parts or blocks of which every text
// the model reads counts — text, thinking, a tool call's input or
// arguments, a tool result's content (as a string, as blocks or as JSON).
// Images and other media count as nothing.
func flatten(v []byte) (string, error) {
	var buf []byte
	err := appendFlat(&buf, v, 0)
	return string(buf), err
}

// maxFlatDepth bounds how deep tool results nest in each other.
const maxFlatDepth = 8

var blockFields = []string{"text", "thinking", "input", "content", "toolUse", "toolResult", "json",
	"functionCall", "functionResponse", "reasoningContent"}

func appendFlat(buf *[]byte, v []byte, depth int) error {
	if len(v) == 0 || isNull(v) || depth > maxFlatDepth {
		return nil
	}
	switch v[0] {
	case '"':
		b, err := appendString(*buf, v)
		*buf = b
		return err
	case '[':
		return elements(v, func(e []byte) error { return appendFlat(buf, e, depth+1) })
	case '{':
		var f [10][]byte
		if err := lastMembers(v, blockFields, f[:]); err != nil {
			return err
		}
		for i, fv := range f {
			switch blockFields[i] {
			case "text", "thinking":
				if len(fv) > 0 && fv[0] == '"' {
					_ = appendFlat(buf, fv, depth+1)
				}
			case "input", "json":
				appendRaw(buf, fv) // a tool's input: its JSON is what the model reads
			case "content":
				_ = appendFlat(buf, fv, depth+1)
			case "toolUse":
				appendRaw(buf, memberOf(fv, "input"))
			case "toolResult":
				_ = appendFlat(buf, memberOf(fv, "content"), depth+1)
			case "functionCall":
				appendRaw(buf, memberOf(fv, "args"))
			case "functionResponse":
				appendRaw(buf, memberOf(fv, "response"))
			case "reasoningContent":
				_ = appendFlat(buf, memberOf(memberOf(fv, "reasoningText"), "text"), depth+1)
			}
		}
		return nil
	}
	return errors.New("not a text, a list of parts or a part")
}

// appendRaw appends a JSON value as its text; a string is its contents.
func appendRaw(buf *[]byte, v []byte) {
	if len(v) == 0 || isNull(v) {
		return
	}
	if v[0] == '"' {
		if b, err := appendString(*buf, v); err == nil {
			*buf = b
		}
		return
	}
	*buf = append(*buf, v...)
}

// stringsOf reads a prompt or input that is a string or an array of
// strings. Arrays of token ids are not text and count as nothing.
func stringsOf(raw []byte) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		s, err := readString(raw)
		return []string{s}, err
	case '[':
	default:
		return nil, nil
	}
	out := []string{}
	err := elements(raw, func(v []byte) error {
		if len(v) > 0 && v[0] != '"' && !isNull(v) {
			return errTokenIDs
		}
		s, err := readString(v)
		out = append(out, s)
		return err
	})
	if errors.Is(err, errTokenIDs) {
		return nil, nil
	}
	return out, err
}

var errTokenIDs = errors.New("token ids")

// stringArray reports whether an array holds strings only (the Responses
// API's input as a list of texts, not of messages).
func stringArray(raw []byte) bool {
	only := true
	_ = elements(raw, func(v []byte) error {
		if len(v) == 0 || v[0] != '"' {
			only = false
		}
		return nil
	})
	return only
}
