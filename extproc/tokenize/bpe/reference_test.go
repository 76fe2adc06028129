package bpe

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// The reference: github.com/pkoukk/tiktoken-go with the same offline
// vocabularies, and its split patterns (copied from its encoding.go) for
// comparing pieces directly.

var encodingNames = []string{"o200k_base", "cl100k_base"}

var patterns = map[string]string{
	"o200k_base": strings.Join([]string{
		`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
		`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
		`\p{N}{1,3}`,
		` ?[^\s\p{L}\p{N}]+[\r\n/]*`,
		`\s*[\r\n]+`,
		`\s+(?!\S)`,
		`\s+`,
	}, "|"),
	"cl100k_base": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
}

type ref struct {
	enc *tiktoken.Tiktoken
	re  *regexp2.Regexp
}

var (
	refOnce sync.Once
	refs    = map[string]*ref{}
	refErr  error
)

func reference(tb testing.TB, name string) *ref {
	tb.Helper()
	refOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader()) // never download
		for _, n := range encodingNames {
			enc, err := tiktoken.GetEncoding(n)
			if err != nil {
				refErr = err
				return
			}
			refs[n] = &ref{enc: enc, re: regexp2.MustCompile(patterns[n], regexp2.None)}
		}
	})
	if refErr != nil {
		tb.Fatalf("reference: %v", refErr)
	}
	return refs[name]
}

func mustGet(tb testing.TB, name string) *Encoding {
	tb.Helper()
	e, err := Get(name)
	if err != nil {
		tb.Fatalf("Get(%q): %v", name, err)
	}
	return e
}

// refPieces splits s with the reference's regex.
func (r *ref) pieces(s string) []string {
	s = strings.ToValidUTF8(s, "") // callers pass valid UTF-8; keep the conversion honest
	runes := []rune(s)
	offs := make([]int, 0, len(runes)+1) // byte offset of each rune
	for i := range s {
		offs = append(offs, i)
	}
	offs = append(offs, len(s))
	var out []string
	m, _ := r.re.FindStringMatch(s)
	for m != nil {
		out = append(out, s[offs[m.Index]:offs[m.Index+m.Length]])
		m, _ = r.re.FindNextMatch(m)
	}
	return out
}

func (e *Encoding) pieces(s string) []string {
	var out []string
	for p := 0; p < len(s); {
		q := e.next(s, p)
		out = append(out, s[p:q])
		p = q
	}
	return out
}

// diff compares pieces and token ids of s with the reference's and
// describes the first difference, or returns "".
func diff(e *Encoding, r *ref, s string) string {
	v := validUTF8(s)
	if got, want := e.pieces(v), r.pieces(v); !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		return fmt.Sprintf("%s: piece %d: got %q, want %q", e.name, i, window(got, i), window(want, i))
	}
	got, want := e.encode(s), r.enc.EncodeOrdinary(s)
	if !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		return fmt.Sprintf("%s: token %d: got %v, want %v", e.name, i, window(got, i), window(want, i))
	}
	if n := e.Count(s); n != len(want) {
		return fmt.Sprintf("%s: Count = %d, want %d", e.name, n, len(want))
	}
	return ""
}

func window[T any](s []T, i int) []T {
	return s[max(0, i-2):min(len(s), i+3)]
}

func corpus(tb testing.TB) map[string]string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.txt"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("corpus: %v (%d files)", err, len(files))
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(f)] = string(b)
	}
	return out
}

// TestMatchesReference runs the committed corpus through both encoders:
// each file whole, line by line, and in 61-byte windows every 7 bytes,
// which start and end mid-word, mid-run and mid-rune.
func TestMatchesReference(t *testing.T) {
	for _, name := range encodingNames {
		e, r := mustGet(t, name), reference(t, name)
		for file, text := range corpus(t) {
			t.Run(name+"/"+file, func(t *testing.T) {
				if d := diff(e, r, text); d != "" {
					t.Fatalf("whole file: %s", d)
				}
				for i, line := range strings.SplitAfter(text, "\n") {
					if d := diff(e, r, line); d != "" {
						t.Errorf("line %d %q: %s", i+1, line, d)
					}
				}
				for i := 0; i < len(text); i += 7 {
					w := text[i:min(len(text), i+61)]
					if d := diff(e, r, w); d != "" {
						t.Errorf("bytes %d+61 %q: %s", i, w, d)
					}
				}
			})
		}
	}
}

// TestEdgeCases pins inputs where the regexes' backtracking or the
// reference's rune conversion decides the answer.
func TestEdgeCases(t *testing.T) {
	cases := []string{
		"", " ", "  ", "\n", "\r\n", " \n ", "a", "A", "'", "''", "'s", "'S", "x'LL", "x'lL", "'re", "'ve'", "a'ſ", "a'\u212a",
		"hello  world", "hello   ", "hello \n", " \t\n \t", "\t\tx", "x\r\n\r\ny", "  \r\n  x", "a\u00a0\u00a0b", "a \u00a0b",
		"\u0301", " \u0301", "\u0301ABC", ".\u0301ABC", "\u0301\u0301A", "A\u0301", "AB\u0301C", "ǅA", "Aǅ", "ʰ", "Aʰ", "AʰB", "ABʰC d",
		"123", "1234567", "١٢٣٤", "12a34", "a1", "½¾", "Ⅻ", "x/y//z\n/", " !!\n\n", " /\r\n/",
		"<|endoftext|>", "hello<|endoftext|>world", "\xff", "\xff\xfe", "a\xffb", "\xed\xa0\x80", "\xf0\x9f\x98", "'\xff", "\xc3",
		"😀", "👨‍👩‍👧‍👦", "🏳️‍🌈x", "a\u200db", "\ufeff", strings.Repeat(" ", 1000), strings.Repeat("\u3042", 500),
		strings.Repeat("ab", 300), strings.Repeat("-", 1000) + "\n", strings.Repeat("x", 10000), strings.Repeat("😀", 300),
	}
	for _, name := range encodingNames {
		e, r := mustGet(t, name), reference(t, name)
		for _, s := range cases {
			if d := diff(e, r, s); d != "" {
				t.Errorf("%q: %s", s, d)
			}
		}
		if n := e.Count(""); n != 0 {
			t.Errorf("%s: Count(\"\") = %d, want 0", name, n)
		}
	}
}

// TestClasses checks the rune class table against the definitions the
// reference's regex engine uses, for every rune.
func TestClasses(t *testing.T) {
	tab := classes()
	is := func(r rune, names ...string) bool {
		for _, n := range names {
			if unicodeIs(n, r) {
				return true
			}
		}
		return false
	}
	for r := rune(0); r <= utf8.MaxRune; r++ {
		want := uint8(0)
		set := func(bit uint8, ok bool) {
			if ok {
				want |= bit
			}
		}
		set(cL, is(r, "L"))
		set(cN, is(r, "N"))
		set(cS, isSpace(r))
		set(cU, is(r, "Lu", "Lt", "Lm", "Lo", "M"))
		set(cW, is(r, "Ll", "Lm", "Lo", "M"))
		set(cM, is(r, "M"))
		set(cNL, r == '\r' || r == '\n')
		if tab[r] != want {
			t.Fatalf("class of %U = %08b, want %08b", r, tab[r], want)
		}
	}
}

// TestVocabMatchesLoader checks every token against the offline loader's
// own map.
func TestVocabMatchesLoader(t *testing.T) {
	for _, name := range encodingNames {
		want, err := tiktokenloader.NewOfflineLoader().LoadTiktokenBpe(name + ".tiktoken")
		if err != nil {
			t.Fatal(err)
		}
		v := mustGet(t, name).v
		if got := len(v.off) - 1; got != len(want) {
			t.Fatalf("%s: %d tokens, want %d", name, got, len(want))
		}
		for tok, rank := range want {
			if r, ok := v.rank(tok); !ok || int(r) != rank {
				t.Fatalf("%s: rank(%q) = %d, %v; want %d", name, tok, r, ok, rank)
			}
		}
		longest := 0 // probe length: a poor hash would show here
		for r := range len(v.off) - 1 {
			tok := v.arena[v.off[r]:v.off[r+1]]
			_, h := keyHash(tok)
			d := 0
			for i := h & v.mask; v.slots[i].rank != uint32(r+1); i = (i + 1) & v.mask {
				d++
			}
			longest = max(longest, d)
		}
		if longest > 64 {
			t.Errorf("%s: a token sits %d slots from its hash's", name, longest)
		}
		t.Logf("%s: %d tokens in %d slots, longest probe %d", name, len(v.off)-1, len(v.slots), longest)
		for _, s := range []string{"", "\x00\x00\x00\x00\x00\x00\x00\x00\x00", "not a single token at all", strings.Repeat("z", 129)} {
			if r, ok := v.rank(s); ok {
				t.Errorf("%s: rank(%q) = %d, want none", name, s, r)
			}
		}
	}
}

// TestCountDoesNotAllocate: no allocation per piece nor per call, once the
// scratch buffers are pooled, for valid UTF-8.
func TestCountDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers under the race detector")
	}
	text := corpus(t)["english.txt"] + corpus(t)["cjk.txt"] + corpus(t)["whitespace.txt"]
	for _, name := range encodingNames {
		e := mustGet(t, name)
		e.Count(text)
		if n := testing.AllocsPerRun(20, func() { e.Count(text) }); n != 0 {
			t.Errorf("%s: %v allocations per Count, want 0", name, n)
		}
	}
}

func TestUnknownEncoding(t *testing.T) {
	if _, err := Get("p50k_base"); err == nil {
		t.Fatal("Get(p50k_base): no error")
	}
}

// TestConcurrentCount: one Encoding, many goroutines, the same answers.
func TestConcurrentCount(t *testing.T) {
	texts := corpus(t)
	for _, name := range encodingNames {
		e := mustGet(t, name)
		want := map[string]int{}
		for f, s := range texts {
			want[f] = e.Count(s)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					for f, s := range texts {
						if got := e.Count(s); got != want[f] {
							t.Errorf("%s %s: Count = %d, want %d", name, f, got, want[f])
						}
					}
				}
			})
		}
		wg.Wait()
	}
}
