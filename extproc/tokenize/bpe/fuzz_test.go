package bpe

import (
	"strings"
	"testing"
)

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
		for i := range es {
			if d := diff(es[i], rs[i], s); d != "" {
				t.Errorf("%q: %s", s, d)
			}
		}
	})
}
