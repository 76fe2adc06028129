package llm

// promptExtras is what an upstream bills as prompt beside the messages and
// texts promptFrom reads: the tools a request offers (their definitions,
// as JSON: the upstream renders them into the prompt its own way), and a
// prompt given as token ids, whose count is its count. (The tool calls of
// earlier turns and their outputs, which live in the messages, promptFrom
// finds as it walks them: chatCalls, responsesCalls.) Left out, a
// request could carry most of its prompt where an estimate does not
// look. Members are read where the upstream reads them, as promptFrom's;
// one of an unexpected shape counts as nothing.
func promptExtras(api API, f *promptMembers) (texts []string, ids int64) {
	switch api {
	case ChatCompletions:
		appendRawText(&texts, f[pTools])
		appendRawText(&texts, f[pFunctions])
	case Responses, Messages, GenerateContent:
		appendRawText(&texts, f[pTools])
	case Converse:
		appendRawText(&texts, f[pToolConfig])
	case Completions:
		ids = tokenIDs(f[pPrompt])
	case Embeddings:
		ids = tokenIDs(f[pInput])
	}
	return texts, ids
}

// The members of a message holding an earlier turn's tool calls, or a
// tool's output: Chat Completions' assistant messages, the Responses
// API's function_call and function_call_output items.
var (
	chatCalls      = []string{"tool_calls", "function_call"}
	responsesCalls = []string{"arguments", "output"}
)

// appendRawText appends a JSON value's text (a string's contents) to
// texts, unless it is absent, null or empty.
func appendRawText(texts *[]string, v []byte) {
	var buf []byte
	appendRaw(&buf, v)
	if len(buf) > 0 {
		*texts = append(*texts, string(buf))
	}
}

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
