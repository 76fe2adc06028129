package llm

// promptExtras is what an upstream bills as prompt beside the messages and
// texts promptOf reads: the tools a request offers (their definitions, as
// JSON: the upstream renders them into the prompt its own way), the tool
// calls of earlier turns and their outputs, and a prompt given as token
// ids, whose count is its count. Left out, a request could carry most of
// its prompt where an estimate does not look. Members are read where the
// upstream reads them, as promptOf's; one of an unexpected shape counts
// as nothing.
func promptExtras(api API, body []byte) (texts []string, ids int64) {
	var f [numExtraFields][]byte
	if lastMembers(body, extraFields[:], f[:]) != nil {
		return nil, 0
	}
	raw := func(v []byte) {
		var buf []byte
		appendRaw(&buf, v)
		if len(buf) > 0 {
			texts = append(texts, string(buf))
		}
	}
	switch api {
	case ChatCompletions:
		raw(f[xTools])
		raw(f[xFunctions])
		_ = array(f[xMessages], func(m []byte) error {
			raw(memberOf(m, "tool_calls"))
			raw(memberOf(m, "function_call"))
			return nil
		})
	case Responses:
		raw(f[xTools])
		if len(f[xInput]) > 0 && f[xInput][0] == '[' {
			_ = elements(f[xInput], func(item []byte) error {
				if len(item) > 0 && item[0] == '{' {
					raw(memberOf(item, "arguments")) // a function_call's
					raw(memberOf(item, "output"))    // a function_call_output's
				}
				return nil
			})
		}
	case Messages, GenerateContent:
		raw(f[xTools])
	case Converse:
		raw(f[xToolConfig])
	case Completions:
		ids = tokenIDs(f[xPrompt])
	case Embeddings:
		ids = tokenIDs(f[xInput])
	}
	return texts, ids
}

const (
	xTools = iota
	xFunctions
	xMessages
	xInput
	xPrompt
	xToolConfig
	numExtraFields
)

var extraFields = [numExtraFields]string{"tools", "functions", "messages", "input", "prompt", "toolConfig"}

// tokenIDs counts the token ids of a prompt given as ids: an array of
// integers, or an array of such arrays; 0 for a prompt of text.
func tokenIDs(v []byte) int64 {
	var n int64
	_ = array(v, func(e []byte) error {
		switch {
		case len(e) == 0:
		case e[0] == '[':
			n += tokenIDs(e)
		case e[0] == '-' || e[0] >= '0' && e[0] <= '9':
			n++
		}
		return nil
	})
	return n
}
