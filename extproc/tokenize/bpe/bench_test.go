package bpe

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// promptSize is the prompt of SPEC §9: 590 KB in ≤ 30 ms, ≥ 20 MB/s.
const promptSize = 590_000

// BenchmarkCount counts the 590 KB prompt with this package and with the
// reference, in the same run.
//
//	go test -run '^$' -bench Count ./extproc/tokenize/bpe/
func BenchmarkCount(b *testing.B) {
	prompt := benchPrompt(promptSize)
	for _, name := range encodingNames {
		e, r := mustGet(b, name), reference(b, name)
		b.Run(name+"/bpe", func(b *testing.B) {
			b.SetBytes(int64(len(prompt)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n = e.Count(prompt)
			}
			b.ReportMetric(float64(n), "tokens")
		})
		b.Run(name+"/reference", func(b *testing.B) {
			b.SetBytes(int64(len(prompt)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n = len(r.enc.EncodeOrdinary(prompt))
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

// BenchmarkCountCorpus counts the committed test corpus, repeated to
// 590 KB: much CJK, Thai, marks, emoji and long runs, the hard cases.
func BenchmarkCountCorpus(b *testing.B) {
	var all strings.Builder
	for all.Len() < promptSize {
		for _, name := range slices.Sorted(maps.Keys(corpus(b))) {
			all.WriteString(corpus(b)[name])
		}
	}
	text := all.String()
	for _, name := range encodingNames {
		e, r := mustGet(b, name), reference(b, name)
		b.Run(name+"/bpe", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				e.Count(text)
			}
		})
		b.Run(name+"/reference", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				r.enc.EncodeOrdinary(text)
			}
		})
	}
}

// BenchmarkCountMessage counts a 1 KB chat message: the per-call cost.
func BenchmarkCountMessage(b *testing.B) {
	msg := benchPrompt(1 << 10)
	for _, name := range encodingNames {
		e := mustGet(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				e.Count(msg)
			}
		})
	}
}

// BenchmarkLoad measures loading a vocabulary (what the first Get does,
// besides the rune class table measured apart).
func BenchmarkLoad(b *testing.B) {
	for _, name := range encodingNames {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := loadVocab(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("classes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buildClasses()
		}
	})
}
