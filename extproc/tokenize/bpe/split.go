package bpe

import (
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizers below find the same pieces as the reference's
// backtracking regexes, in one forward pass with at most a rescan of a word.
// Each returns the end of the piece that starts at p (p < len(s)); every
// position starts some piece, so the pieces tile the text.
//
// The regexes try their alternatives in order and take the first that
// matches; greedy quantifiers give back characters one at a time. The
// comments name the alternative each branch stands for.

// o200k_base:
//
//	1 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	2 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	3 \p{N}{1,3}
//	4  ?[^\s\p{L}\p{N}]+[\r\n/]*
//	5 \s*[\r\n]+
//	6 \s+(?!\S)
//	7 \s+
func nextO200k(t []uint8, s string, p int) int {
	c, n := classAt(t, s, p)
	switch {
	case c&cL != 0: // no prefix: a letter is not [^\r\n\p{L}\p{N}]
		if e, ok := upperLower(t, s, p); ok { // 1
			return contraction(s, e)
		}
		e, _ := upperRun(t, s, p) // 2; a letter that fails 1 is Lu or Lt
		return contraction(s, e)
	case c&cN != 0:
		return numbers(t, s, p) // 3
	case c&cNL != 0:
		return spaces(t, s, p) // 5
	}
	// s[p] can be the optional prefix of 1 and 2.
	if e, ok := upperLower(t, s, p+n); ok { // 1, prefix taken
		return contraction(s, e)
	}
	if c&cM != 0 { // 1 without the prefix: a mark is in both runs
		e, _ := upperLower(t, s, p)
		return contraction(s, e)
	}
	if e, ok := upperRun(t, s, p+n); ok { // 2, prefix taken
		return contraction(s, e)
	}
	if c&cS == 0 {
		return punct(t, s, p, true) // 4 without the space
	}
	if s[p] == ' ' && p+1 < len(s) {
		if c2, _ := classAt(t, s, p+1); c2&(cS|cL|cN) == 0 {
			return punct(t, s, p+1, true) // 4 with the space
		}
	}
	return spaces(t, s, p) // 5, 6, 7
}

// cl100k_base:
//
//	1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
//	2 [^\r\n\p{L}\p{N}]?\p{L}+
//	3 \p{N}{1,3}
//	4  ?[^\s\p{L}\p{N}]+[\r\n]*
//	5 \s*[\r\n]+
//	6 \s+(?!\S)
//	7 \s+
func nextCl100k(t []uint8, s string, p int) int {
	if s[p] == '\'' {
		if e := contraction(s, p); e > p { // 1
			return e
		}
	}
	c, n := classAt(t, s, p)
	switch {
	case c&cL != 0:
		return letters(t, s, p+n) // 2
	case c&cN != 0:
		return numbers(t, s, p) // 3
	case c&cNL != 0:
		return spaces(t, s, p) // 5
	}
	if p+n < len(s) {
		if c2, n2 := classAt(t, s, p+n); c2&cL != 0 {
			return letters(t, s, p+n+n2) // 2, prefix taken
		}
	}
	if c&cS == 0 {
		return punct(t, s, p, false) // 4 without the space
	}
	if s[p] == ' ' && p+1 < len(s) {
		if c2, _ := classAt(t, s, p+1); c2&(cS|cL|cN) == 0 {
			return punct(t, s, p+1, false) // 4 with the space
		}
	}
	return spaces(t, s, p) // 5, 6, 7
}

// upperLower matches [U]*[W]+ at q, U and W being o200k's two runs: the
// greedy U* gives back characters until one of W can follow.
func upperLower(t []uint8, s string, q int) (int, bool) {
	i, lastW := q, -1
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&cU == 0 {
			if c&cW == 0 {
				break
			}
			// Ll after the U run: W+ runs on from here.
			for i += n; i < len(s); i += n {
				if c, n = classAt(t, s, i); c&cW == 0 {
					break
				}
			}
			return i, true
		}
		i += n
		if c&cW != 0 {
			lastW = i
		}
	}
	// Nothing of W follows the U run: U* gives back up to its last
	// character that is also in W (Lm, Lo or a mark), and W+ takes just
	// that one, as what follows it in the run is Lu or Lt.
	return lastW, lastW >= 0
}

// upperRun matches [U]+[W]* at q.
func upperRun(t []uint8, s string, q int) (int, bool) {
	i := q
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&cU == 0 {
			break
		}
		i += n
	}
	if i == q {
		return q, false
	}
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&cW == 0 {
			break
		}
		i += n
	}
	return i, true
}

// letters matches \p{L}* at i.
func letters(t []uint8, s string, i int) int {
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&cL == 0 {
			break
		}
		i += n
	}
	return i
}

// numbers matches \p{N}{1,3} at p, which holds one.
func numbers(t []uint8, s string, p int) int {
	i := p
	for k := 0; k < 3 && i < len(s); k++ {
		c, n := classAt(t, s, i)
		if c&cN == 0 {
			break
		}
		i += n
	}
	return i
}

// punct matches [^\s\p{L}\p{N}]+ at q, which holds one, then [\r\n]* (with
// slash, [\r\n/]*).
func punct(t []uint8, s string, q int, slash bool) int {
	i := q
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&(cS|cL|cN) != 0 {
			break
		}
		i += n
	}
	for i < len(s) && (s[i] == '\r' || s[i] == '\n' || slash && s[i] == '/') {
		i++
	}
	return i
}

// spaces matches at p, which holds a space, the first of \s*[\r\n]+,
// \s+(?!\S) and \s+ that matches:
//   - up to the last \r or \n of the run, if there is one;
//   - the whole run at the end of the text;
//   - all but its last character, which then prefixes the next piece;
//   - the single space before a non-space.
func spaces(t []uint8, s string, p int) int {
	i, last, nl := p, p, -1
	for i < len(s) {
		c, n := classAt(t, s, i)
		if c&cS == 0 {
			break
		}
		last = i
		i += n
		if c&cNL != 0 {
			nl = i
		}
	}
	switch {
	case nl >= 0:
		return nl
	case i == len(s) || last == p:
		return i
	}
	return last
}

// contraction matches (?i:'s|'t|'re|'ve|'m|'ll|'d)? at e. Case is folded
// as the reference does: the text's rune through unicode.ToLower.
func contraction(s string, e int) int {
	if e+1 >= len(s) || s[e] != '\'' {
		return e
	}
	r, n := lowerAt(s, e+1)
	switch r {
	case 's', 't', 'm', 'd':
		return e + 1 + n
	case 'r', 'v', 'l':
		if i := e + 1 + n; i < len(s) {
			want := 'e'
			if r == 'l' {
				want = 'l'
			}
			if r2, n2 := lowerAt(s, i); r2 == want {
				return i + n2
			}
		}
	}
	return e
}

func lowerAt(s string, i int) (rune, int) {
	if b := s[i]; b < utf8.RuneSelf {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		return rune(b), 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	return unicode.ToLower(r), n
}
