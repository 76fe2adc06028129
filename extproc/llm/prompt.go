package llm

import "github.com/tokengate/tokengate/extproc/tokenize"

// scanPrompt reads the texts to count from a valid JSON body, as
// decodePrompt would but in one pass over the prompt. ok is false when it
// cannot be sure of agreeing with decodePrompt (a key that matches only
// after case folding or unescaping, a repeated field, a value of another
// type than the usual), and decodePrompt must answer.
func scanPrompt(api API, body []byte) (msgs []tokenize.Message, texts []string, ok bool) {
	var messages, prompt, input []byte
	var instructions string
	var seen fieldSet
	err := members(body, func(k, v []byte) error {
		switch string(k) {
		case "messages":
			messages = v
			return seen.once(0)
		case "prompt":
			prompt = v
			return seen.once(1)
		case "input":
			input = v
			return seen.once(2)
		case "instructions":
			if err := seen.once(3); err != nil {
				return err
			}
			if isNull(v) {
				return nil
			}
			s, err := scanString(v)
			instructions = s
			return err
		}
		return unknownKey(k, "messages", "prompt", "input", "instructions")
	})
	if err != nil {
		return nil, nil, false
	}
	switch api {
	case ChatCompletions:
		msgs, err = scanMessages(messages)
	case Completions:
		texts, err = scanStrings(prompt)
	case Embeddings:
		texts, err = scanStrings(input)
	case Responses:
		if instructions != "" {
			msgs = append(msgs, tokenize.Message{Role: "system", Content: instructions})
		}
		if len(input) > 0 && input[0] == '[' {
			var m []tokenize.Message
			m, err = scanMessages(input)
			msgs = append(msgs, m...)
		} else {
			texts, err = scanStrings(input)
		}
	}
	return msgs, texts, err == nil
}

// scanString reads a JSON string; any other value is left to encoding/json.
func scanString(v []byte) (string, error) {
	s, err := readString(v)
	if err != nil {
		return "", errInexact
	}
	return s, nil
}

// scanMessages reads a messages array as messagesOf does; absent, null
// or not an array is no messages. Elements that are not objects, which
// messagesOf answers by dropping every message, are left to it.
func scanMessages(raw []byte) ([]tokenize.Message, error) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, nil
	}
	out := []tokenize.Message{} // an empty array is not "no messages"
	err := elements(raw, func(v []byte) error {
		var m tokenize.Message // a null element is an empty message
		var seen fieldSet
		err := object(v, func(k, v []byte) error {
			var dst *string
			switch string(k) {
			case "role":
				dst = &m.Role
			case "name":
				dst = &m.Name
			case "content":
				if err := seen.once(2); err != nil {
					return err
				}
				s, err := scanContent(v)
				m.Content = s
				return err
			default:
				return unknownKey(k, "role", "name", "content")
			}
			if isNull(v) {
				return nil
			}
			s, err := scanString(v)
			*dst = s
			return err
		})
		out = append(out, m)
		return err
	})
	return out, err
}

// scanContent reads a message's content as contentText does: a string, or
// the text parts of an array of parts.
func scanContent(v []byte) (string, error) {
	switch v[0] {
	case '"':
		return scanString(v)
	case 'n':
		return "", nil // null
	case '[':
	default:
		return "", errInexact
	}
	var buf []byte
	err := elements(v, func(part []byte) error {
		var seen fieldSet
		return object(part, func(k, v []byte) error {
			switch string(k) {
			case "text":
				if err := seen.once(0); err != nil {
					return err
				}
				var err error
				buf, err = appendStringField(buf, v)
				return err
			case "type":
				if !isNull(v) && v[0] != '"' {
					return errInexact // a type error for encoding/json
				}
				return nil
			}
			return unknownKey(k, "type", "text")
		})
	})
	return string(buf), err
}

// scanStrings reads a prompt or input that is a string or an array of
// strings, as stringsOf does; anything else is left to it.
func scanStrings(raw []byte) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		s, err := scanString(raw)
		return []string{s}, err
	case 'n':
		return []string{""}, nil // null decodes as the empty string
	case '[':
	default:
		return nil, errInexact
	}
	out := []string{}
	err := elements(raw, func(v []byte) error {
		if isNull(v) {
			out = append(out, "")
			return nil
		}
		s, err := scanString(v)
		out = append(out, s)
		return err
	})
	return out, err
}
