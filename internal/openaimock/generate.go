package openaimock

import (
	"strings"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// words are each one token, with their leading space, in both o200k_base and
// cl100k_base. Tokenizers never merge across a space-led word, so the text's
// count is the sum of its pieces; completion aims at the target exactly.
var words = []string{
	" the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog",
	" and", " runs", " away", " from", " a", " small", " red", " cat",
}

// completion is generated answer text, kept in pieces so streams can send
// it a few tokens at a time.
type completion struct {
	pieces []string
	tokens int
	// capped reports that the caller's max tokens, not the configured
	// length, ended the text: finish_reason "length".
	capped bool
}

func (c completion) text() string { return strings.Join(c.pieces, "") }

// finish names how the completion ended, in an API's words: stop when it
// ran its course, capped when the caller's max tokens ended it.
func (c completion) finish(stop, capped string) string {
	if c.capped {
		return capped
	}
	return stop
}

// generate makes deterministic text of want tokens, or of limit tokens when
// limit is not negative and smaller. The count reported is that of the final
// text, so the usage is exact even for an unusual model's encoding.
func generate(model string, want, limit int) completion {
	return generateChoice(model, want, limit, 0)
}

// generateChoice is generate for the k-th choice of a request asking for
// several: the same length, its words taken from k further along the
// list, so that each choice is its own text. Choice 0 is generate's text.
func generateChoice(model string, want, limit, k int) completion {
	target := want
	capped := false
	if limit >= 0 && limit < want {
		target, capped = limit, true
	}
	var c completion
	c.capped = capped
	for i, n := 0, 0; n < target; i++ {
		p := words[(i+k)%len(words)]
		if i == 0 {
			p = "The"
		}
		k := tokenize.Text(model, p)
		if n+k > target {
			break
		}
		c.pieces = append(c.pieces, p)
		n += k
	}
	c.tokens = tokenize.Text(model, c.text())
	for c.tokens > target && len(c.pieces) > 0 {
		c.pieces = c.pieces[:len(c.pieces)-1]
		c.tokens = tokenize.Text(model, c.text())
	}
	return c
}

// chunks groups the pieces for streaming, per pieces (tokens) a chunk.
func (c completion) chunks(per int) []string {
	var out []string
	for i := 0; i < len(c.pieces); i += per {
		out = append(out, strings.Join(c.pieces[i:min(i+per, len(c.pieces))], ""))
	}
	return out
}

// limitOf picks the tightest of the request's max-token fields; -1 means
// the request set none.
func limitOf(fields ...*int) int {
	limit := -1
	for _, f := range fields {
		if f != nil && (limit < 0 || max(*f, 0) < limit) {
			limit = max(*f, 0)
		}
	}
	return limit
}

// generateChoices makes n choices (n ≥ 1) with generateChoice, and their
// completion tokens summed, as the usage bills them.
func generateChoices(model string, want, limit, n int) ([]completion, int) {
	out := make([]completion, n)
	sum := 0
	for k := range out {
		out[k] = generateChoice(model, want, limit, k)
		sum += out[k].tokens
	}
	return out, sum
}
