// Package tokenize counts tokens the way OpenAI's models do, with the
// vocabularies embedded in the binary: nothing is downloaded at run time.
// The counting itself is package bpe's: exact, and fast enough for the
// request path.
package tokenize

import (
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize/bpe"
)

// Encoding names understood by EncodingFor.
const (
	O200kBase  = "o200k_base"
	Cl100kBase = "cl100k_base"
)

// Chat overheads from OpenAI's published counting recipe for gpt-3.5 and
// later: each message is framed by a few tokens, and every reply is primed
// with <|start|>assistant<|message|>.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	replyPriming     = 3
)

// EncodingFor names the encoding a model uses. Unknown models get
// o200k_base, the encoding of every current OpenAI model.
func EncodingFor(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 { // "openai/gpt-4", "azure/gpt-35-turbo"
		m = m[i+1:]
	}
	switch {
	case strings.HasPrefix(m, "gpt-4o"), strings.HasPrefix(m, "gpt-4.1"), strings.HasPrefix(m, "gpt-4.5"),
		strings.HasPrefix(m, "gpt-5"), strings.HasPrefix(m, "o1"), strings.HasPrefix(m, "o3"),
		strings.HasPrefix(m, "o4"), strings.HasPrefix(m, "chatgpt-4o"), strings.HasPrefix(m, "gpt-oss"):
		return O200kBase
	case strings.HasPrefix(m, "gpt-4"), strings.HasPrefix(m, "gpt-3.5"), strings.HasPrefix(m, "gpt-35"),
		strings.HasPrefix(m, "text-embedding-"):
		return Cl100kBase
	}
	return O200kBase
}

// Preload loads the named encodings now instead of on the first request.
func Preload(names ...string) error {
	for _, n := range names {
		if _, err := bpe.Get(n); err != nil {
			return err
		}
	}
	return nil
}

// Text counts the tokens of s in the model's encoding. Special-token text
// such as "<|endoftext|>" is counted as ordinary text, as the API does for
// user content.
func Text(model, s string) int {
	if s == "" {
		return 0
	}
	enc, err := bpe.Get(EncodingFor(model))
	if err != nil {
		return len(s) // an upper bound: no encoding yields more tokens than bytes
	}
	return enc.Count(s)
}

// Message is one chat message as far as counting goes.
type Message struct {
	Role    string
	Name    string
	Content string
}

// Chat counts a chat completion prompt: the messages' text plus the framing
// tokens the model sees.
func Chat(model string, msgs []Message) int {
	n := replyPriming
	for _, m := range msgs {
		n += tokensPerMessage + Text(model, m.Role) + Text(model, m.Content)
		if m.Name != "" {
			n += tokensPerName + Text(model, m.Name)
		}
	}
	return n
}
