package bpe

import (
	"strings"
	"testing"
)

const maxFuzzLen = 512

// FuzzEncode checks pieces, token ids and Count against the reference on
// random input, for both encodings. Seeds: testdata/fuzz/FuzzEncode and
// the corpus lines.
//
//	go test -run '^$' -fuzz FuzzEncode -fuzztime 60s ./extproc/tokenize/bpe/
func FuzzEncode(f *testing.F) {
	for _, text := range corpus(f) {
		for _, line := range strings.SplitAfter(text, "\n") {
			f.Add(line)
		}
	}
	es := make([]*Encoding, len(encodingNames))
	rs := make([]*ref, len(encodingNames))
	for i, name := range encodingNames {
		es[i], rs[i] = mustGet(f, name), reference(f, name)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The reference merges in O(n²) and its regex engine backtracks:
		// kilobytes of one byte take it a second. Longer inputs are the
		// deterministic tests' business.
		s = s[:min(len(s), maxFuzzLen)]
		for _, in := range []string{s, spell(s)} {
			for i := range es {
				if d := diff(es[i], rs[i], in); d != "" {
					t.Errorf("%q: %s", in, d)
				}
			}
		}
	})
}

// alphabet holds the characters where the split patterns' alternatives
// meet: case classes (Lu, Ll, Lt, Lm, Lo, marks), apostrophes and the
// letters of contractions (with the non-ASCII runes that lower-case near
// them), digits of several scripts, every kind of space, slashes,
// punctuation, emoji parts and an invalid byte.
var alphabet = []string{
	"a", "A", "s", "S", "t", "l", "L", "e", "r", "v", "d", "m", "'", "'", "ǅ", "ʰ", "\u0301", "\u093f", "日", "ー", "ſ", "\u212a", "İ", "ß",
	"1", "٣", "Ⅻ", "½", " ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\v", ".", "/", "-", "!", "😀", "\u200d", "\ufe0f", "\xff",
}

// spell maps each byte of s to a character of alphabet, so that random
// input lands on the interesting boundaries far more often.
func spell(s string) string {
	var b strings.Builder
	for i := range len(s) {
		b.WriteString(alphabet[int(s[i])%len(alphabet)])
	}
	return b.String()
}
