package load

import (
	"math/rand/v2"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The harness sizes prompts in words; that is only a token count if every
// word is one token in the encodings the tests' models use.
func TestPromptWordsAreOneTokenEach(t *testing.T) {
	for _, model := range []string{"gpt-4o", "gpt-4"} {
		for _, w := range words {
			if n := tokenize.Text(model, w); n != 1 {
				t.Errorf("%s: %q is %d tokens, want 1", model, w, n)
			}
		}
		rng := rand.New(rand.NewPCG(3, 4))
		for _, n := range []int{1, 20, 600} {
			if got := tokenize.Text(model, promptText(rng, n)); got != n {
				t.Errorf("%s: a prompt of %d words is %d tokens", model, n, got)
			}
		}
	}
}
