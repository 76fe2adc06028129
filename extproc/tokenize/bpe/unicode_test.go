package bpe

import "unicode"

// unicodeIs and isSpace are how github.com/dlclark/regexp2 decides \p{..}
// and \s (syntax/charclass.go, CharSet.CharIn).
func unicodeIs(cat string, r rune) bool { return unicode.Is(unicode.Categories[cat], r) }

func isSpace(r rune) bool { return unicode.IsSpace(r) }
