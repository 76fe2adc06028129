package bpe

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Character classes of the split patterns, one bit each. They follow the
// reference regex engine (github.com/dlclark/regexp2), which takes \p{..}
// from Go's unicode tables and \s from unicode.IsSpace, so the table below
// agrees with it whatever Unicode version the toolchain carries.
const (
	cL  uint8 = 1 << iota // \p{L}
	cN                    // \p{N}
	cS                    // \s
	cU                    // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], o200k's "upper" run
	cW                    // [\p{Ll}\p{Lm}\p{Lo}\p{M}], o200k's "lower" run
	cM                    // \p{M}
	cNL                   // \r or \n
)

var (
	classOnce sync.Once
	classTab  []uint8 // indexed by rune, 0 through unicode.MaxRune
)

// classes returns the rune class table, built on first use (about 1 MiB,
// a millisecond or two: it walks the range tables, not every rune).
func classes() []uint8 {
	classOnce.Do(func() { classTab = buildClasses() })
	return classTab
}

func buildClasses() []uint8 {
	t := make([]uint8, unicode.MaxRune+1)
	mark(t, unicode.L, cL)
	mark(t, unicode.N, cN)
	mark(t, unicode.M, cM|cU|cW)
	for _, tab := range []*unicode.RangeTable{unicode.Lu, unicode.Lt, unicode.Lm, unicode.Lo} {
		mark(t, tab, cU)
	}
	for _, tab := range []*unicode.RangeTable{unicode.Ll, unicode.Lm, unicode.Lo} {
		mark(t, tab, cW)
	}
	for r := rune(0); r < 0x100; r++ { // unicode.IsSpace special-cases Latin-1
		if unicode.IsSpace(r) {
			t[r] |= cS
		}
	}
	markFrom(t, unicode.White_Space, cS, 0x100)
	t['\r'] |= cNL
	t['\n'] |= cNL
	return t
}

func mark(t []uint8, tab *unicode.RangeTable, bit uint8) { markFrom(t, tab, bit, 0) }

// markFrom sets bit on every rune of tab from min on.
func markFrom(t []uint8, tab *unicode.RangeTable, bit uint8, min rune) {
	for _, r := range tab.R16 {
		for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
			if rune(c) >= min {
				t[c] |= bit
			}
		}
	}
	for _, r := range tab.R32 {
		for c := r.Lo; c <= r.Hi; c += r.Stride {
			if rune(c) >= min {
				t[c] |= bit
			}
		}
	}
}

// classAt returns the class and width of the rune at s[i]. s must be valid
// UTF-8 (Count and encode make it so first).
func classAt(t []uint8, s string, i int) (uint8, int) {
	if b := s[i]; b < utf8.RuneSelf {
		return t[b], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	return t[r], n
}
