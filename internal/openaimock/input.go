package openaimock

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The request fields below accept every shape the OpenAI API accepts, and
// count them with the same tokenizer calls tokengate makes, so the usage the
// mock reports equals tokengate's estimate.

// chatMessage is a chat or Responses message. Content stays raw because it
// is a string, an array of parts, or null.
type chatMessage struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Name    string          `json:"name"`
	Content json.RawMessage `json:"content"`
}

// contentPart is one element of an array content; only text parts count,
// images and audio are billed in ways the mock does not model.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

var errContent = errors.New("content must be a string, an array of parts, or null")

// contentText joins the text parts of a message's content.
func contentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []contentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errContent
	}
	var b []byte
	for _, p := range parts {
		switch p.Type {
		case "text", "input_text", "output_text":
			b = append(b, p.Text...)
		}
	}
	return string(b), nil
}

// chatTokens counts a list of messages as a chat prompt.
func chatTokens(model string, msgs []chatMessage) (int, error) {
	tm, err := chatMessages(msgs)
	if err != nil {
		return 0, err
	}
	return tokenize.Chat(model, tm), nil
}

// chatMessages reads messages as the tokenizer counts them: role, name
// and the text of the content.
func chatMessages(msgs []chatMessage) ([]tokenize.Message, error) {
	tm := make([]tokenize.Message, 0, len(msgs))
	for _, m := range msgs {
		text, err := contentText(m.Content)
		if err != nil {
			return nil, err
		}
		tm = append(tm, tokenize.Message{Role: m.Role, Name: m.Name, Content: text})
	}
	return tm, nil
}

// promptTokens counts the prompt of an API whose system text stands apart
// from its messages (Anthropic's system, Gemini's systemInstruction,
// Converse's system) the way chat counts one: the system text first, as a
// system message, when it is not empty. That is also how tokengate
// estimates these prompts.
func promptTokens(model, system string, msgs []tokenize.Message) int {
	if system != "" {
		msgs = append([]tokenize.Message{{Role: "system", Content: system}}, msgs...)
	}
	return tokenize.Chat(model, msgs)
}

// textPart is a Gemini part or a Converse content block: only its text
// counts, and it is the shape of the text they answer with.
type textPart struct {
	Text string `json:"text"`
}

// joinText is the text of parts, in order.
func joinText(parts []textPart) string {
	var b []byte
	for _, p := range parts {
		b = append(b, p.Text...)
	}
	return string(b)
}

// input is one prompt of a completions request or one text to embed:
// the text it stands for and its token count.
type input struct {
	text   string
	tokens int
}

var errInput = errors.New("must be a string, an array of strings, an array of token ids, or an array of token id arrays")

// splitInputs reads a completions prompt or an embeddings input. Token id
// arrays count one token per id; their JSON stands in for the text.
func splitInputs(model string, raw json.RawMessage) ([]input, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		in, ok := oneInput(model, raw)
		if !ok {
			return nil, errInput
		}
		return []input{in}, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, errInput
	}
	if len(elems) > 0 && isNumber(elems[0]) {
		// A flat array of numbers is one prompt already tokenized.
		in, ok := oneInput(model, raw)
		if !ok {
			return nil, errInput
		}
		return []input{in}, nil
	}
	ins := make([]input, 0, len(elems))
	for _, e := range elems {
		in, ok := oneInput(model, e)
		if !ok {
			return nil, errInput
		}
		ins = append(ins, in)
	}
	return ins, nil
}

func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// oneInput reads a string or a token id array. It looks at the first byte
// before decoding because encoding/json quietly accepts null as an empty
// string, an empty array or token 0.
func oneInput(model string, raw json.RawMessage) (input, bool) {
	if len(raw) == 0 {
		return input{}, false
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return input{}, false
		}
		return input{text: s, tokens: tokenize.Text(model, s)}, true
	}
	var elems []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
		return input{}, false
	}
	for _, e := range elems {
		var id int
		if !isNumber(e) || json.Unmarshal(e, &id) != nil {
			return input{}, false
		}
	}
	return input{text: string(raw), tokens: len(elems)}, true
}

func sumTokens(ins []input) int {
	n := 0
	for _, in := range ins {
		n += in.tokens
	}
	return n
}

// responsesInputTokens counts a Responses API input: a string is plain
// text, an array is a conversation whose message items count as chat.
// Other items (function calls, their outputs) are not messages and the
// mock does not count them.
func responsesInputTokens(model string, raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return tokenize.Text(model, s), nil
	}
	var items []chatMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return 0, errors.New("input must be a string or an array of items")
	}
	msgs := items[:0]
	for _, it := range items {
		if it.Type == "" || it.Type == "message" {
			msgs = append(msgs, it)
		}
	}
	return chatTokens(model, msgs)
}
