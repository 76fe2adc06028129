package llm

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
	"github.com/tokengate/tokengate/internal/config"
)

// Claude's and Gemini's prompts are estimated with o200k_base, their own
// tokenizers not being public. How far two real vocabularies disagree on
// the same text is the scale of that error: this test measures
// cl100k_base against o200k_base on a committed multilingual prompt set
// and logs it, per language, as the evidence behind estimate_margin's
// default. It fails only if the default would not cover the mean
// divergence of the set, which would make the default indefensible.
func TestEstimateDivergenceOnMultilingualPrompts(t *testing.T) {
	f, err := os.Open("testdata/multilingual.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sumO, sumC int
	var worst float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lang, text, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			continue
		}
		o, c := tokenize.Text("gpt-4o", text), tokenize.Text("gpt-4", text)
		ratio := float64(c)/float64(o) - 1
		worst = max(worst, ratio)
		sumO, sumC = sumO+o, sumC+c
		t.Logf("%-5s o200k_base %3d  cl100k_base %3d  %+6.1f%%", lang, o, c, 100*ratio)
	}
	mean := float64(sumC)/float64(sumO) - 1
	t.Logf("whole set: o200k_base %d, cl100k_base %d tokens: %+.1f%% (worst language %+.1f%%)", sumO, sumC, 100*mean, 100*worst)
	if mean > config.DefaultEstimateMargin {
		t.Errorf("the vocabularies diverge by %.1f%% on the set, more than the default estimate_margin of %.0f%%", 100*mean, 100*config.DefaultEstimateMargin)
	}
}
