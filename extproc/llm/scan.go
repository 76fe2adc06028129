package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The request path reads a handful of top-level fields from bodies that
// are mostly prompt. Decoding with encoding/json walks every byte twice
// (validate, then decode) and grows the goroutine's stack; the scanner
// below walks once, allocates nothing and skips the prompt. It is lax
// about what it skips — the upstream judges malformed JSON — but strict
// about the fields it reads.

// The scanner's errors, made once: readers meet them on the hot path
// (every absent string a stream event does not carry).
var (
	errSyntax    = errors.New("malformed JSON")
	errTrailing  = errors.New("data after the JSON object")
	errNotString = errors.New("not a string")
	errNotBool   = errors.New("not a boolean")
	errNotNumber = errors.New("not a number")
)

// maxDepth is the deepest nesting read, as encoding/json's and Python's
// parsers limit it (10,000 and about 1,000): a body nested deeper is one the
// upstream refuses, and unreadable here too.
const maxDepth = 10000

var errTooDeep = errors.New("JSON nested deeper than 10,000 levels")

// members calls fn with each top-level member of the object in b: the key,
// unescaped as the upstream's own JSON parser reads it (so "str\u0065am"
// is stream there as here), and the raw value.
func members(b []byte, fn func(key, value []byte) error) error {
	it := memberIter{b: b}
	for {
		key, value, ok := it.next()
		if !ok {
			return it.err
		}
		if err := fn(key, value); err != nil {
			return err
		}
	}
}

// memberIter walks the top-level members of an object as members does,
// one at a time: a reader that keeps values (lastMembers) holds them
// without handing b to a callback, which would send b to the heap.
type memberIter struct {
	b       []byte
	i       int
	started bool
	err     error
}

var errNotJSONObject = errors.New("not a JSON object")

// next returns the next member; ok is false at the end, with it.err set
// when the object is malformed.
func (it *memberIter) next() (key, value []byte, ok bool) {
	b := it.b
	if !it.started {
		it.started = true
		i := skipSpace(b, 0)
		if i >= len(b) || b[i] != '{' {
			it.err, it.i = errNotJSONObject, len(b)
			return nil, nil, false
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			it.err, it.i = trailing(b, i+1), -1
			return nil, nil, false
		}
		it.i = i
	}
	i := it.i
	if i < 0 || it.err != nil {
		return nil, nil, false
	}
	fail := func(err error) ([]byte, []byte, bool) {
		it.err, it.i = err, -1
		return nil, nil, false
	}
	if i >= len(b) || b[i] != '"' {
		return fail(errSyntax)
	}
	end, err := skipString(b, i)
	if err != nil {
		return fail(err)
	}
	key = b[i+1 : end-1]
	if bytes.IndexByte(key, '\\') >= 0 {
		if key, err = appendString(nil, b[i:end]); err != nil {
			return fail(errSyntax)
		}
	}
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return fail(errSyntax)
	}
	start := skipSpace(b, i+1)
	if end, err = skipValue(b, start); err != nil {
		return fail(err)
	}
	next, done, err := afterValue(b, end, '}')
	switch {
	case err != nil:
		return fail(err)
	case done:
		it.i = -1
	default:
		it.i = next
	}
	return key, b[start:end], true
}

// elements calls fn with each element of the array b, raw.
func elements(b []byte, fn func(value []byte) error) error {
	if len(b) == 0 || b[0] != '[' {
		return errNotArray
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return trailing(b, i+1)
	}
	for {
		end, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if err := fn(b[i:end]); err != nil {
			return err
		}
		var done bool
		if i, done, err = afterValue(b, end, ']'); err != nil || done {
			return err
		}
	}
}

// afterValue steps over what follows a member or element ending at i: a
// comma (the next one starts at next), or the container's closing byte
// (done, and nothing may follow but space).
func afterValue(b []byte, i int, closing byte) (next int, done bool, err error) {
	i = skipSpace(b, i)
	if i >= len(b) {
		return 0, false, errSyntax
	}
	switch b[i] {
	case ',':
		return skipSpace(b, i+1), false, nil
	case closing:
		return 0, true, trailing(b, i+1)
	}
	return 0, false, errSyntax
}

func trailing(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return errTrailing
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
// Completions are long strings: the closing quote is looked for with
// IndexByte, and a quote is escaped when an odd run of backslashes ends
// right before it.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; ; {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, errSyntax
		}
		q += j
		bs := 0
		for k := q - 1; k > i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q + 1, nil
		}
		j = q + 1
	}
}

// skipValue returns the index after the value starting at b[i]. Nesting
// is counted, not recursed into, so depth costs no stack.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
				if depth > maxDepth {
					return 0, errTooDeep
				}
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	}
	j := i
	for j < len(b) && !endsScalar(b[j]) {
		j++
	}
	if j == i {
		return 0, errSyntax
	}
	return j, nil
}

// readString reads a JSON string value, or "" for null or none.
func readString(v []byte) (string, error) {
	if len(v) == 0 || isNull(v) {
		return "", nil
	}
	if p, ok := plainString(v); ok {
		return string(p), nil
	}
	b, err := appendString(nil, v)
	return string(b), err
}

// appendString appends the JSON string v, decoded, to dst.
func appendString(dst, v []byte) ([]byte, error) {
	if p, ok := plainString(v); ok {
		return append(dst, p...), nil
	}
	if len(v) < 2 || v[0] != '"' {
		return dst, errNotString
	}
	var s string
	err := json.Unmarshal(v, &s)
	return append(dst, s...), err
}

// plainString returns the JSON string v's contents when they need no
// decoding (no escapes, valid UTF-8): its own bytes, unquoted.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 || !utf8.Valid(v) {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// readBool reads a request's boolean as the upstreams read it: true,
// false or null, and what Python-served ones (pydantic, in its default lax
// mode) also take for one: 0 and 1, and the strings "true", "false", "1",
// "0", "yes", "no", "on", "off", "t", "f", "y" and "n", in any case.
// Reading what one upstream would refuse costs nothing; refusing what one
// reads would leave the request unread ("stream": "true" an uncounted
// stream on vLLM).
func readBool(v []byte) (bool, error) {
	switch string(v) {
	case "true", "1", "1.0":
		return true, nil
	case "false", "null", "", "0", "0.0":
		return false, nil
	}
	if s, ok := laxString(v); ok {
		switch strings.ToLower(s) {
		case "true", "1", "yes", "on", "t", "y":
			return true, nil
		case "false", "0", "no", "off", "f", "n":
			return false, nil
		}
	}
	return false, errNotBool
}

// laxString is the JSON string v, decoded and trimmed of spaces, as
// pydantic reads a string standing for a number or a boolean.
func laxString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	s, err := readString(v)
	return strings.TrimSpace(s), err == nil
}

// readInt reads a number as an integer; exponents and fractions are
// accepted and rounded down, huge values capped. A string holding a
// number is read as that number, as pydantic's lax mode and protobuf's
// JSON mapping (Gemini's) read one.
func readInt(v []byte) (int64, error) {
	if len(v) == 0 || isNull(v) {
		return 0, nil
	}
	if s, ok := laxString(v); ok {
		v = []byte(s) // "" is no number: ParseFloat refuses it
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsNaN(f) {
		return 0, errNotNumber
	}
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64, nil
	case f <= math.MinInt64:
		return math.MinInt64, nil
	}
	return int64(f), nil
}

func isNull(v []byte) bool { return string(v) == "null" }

func endsScalar(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// The readers built on the scanner read a value as the upstream's parser
// does: a missing member and null are the same absence, the last of
// repeated keys wins, and a value of another type than the field's is an
// error the caller decides about (a request field: unreadable; a count:
// zero; a text: nothing to count).

var (
	errNotObject = errors.New("not a JSON object")
	errNotArray  = errors.New("not a JSON array")
)

// object walks an object value; null is none.
func object(v []byte, fn func(k, v []byte) error) error {
	if len(v) == 0 || isNull(v) {
		return nil
	}
	if v[0] != '{' {
		return errNotObject
	}
	return members(v, fn)
}

// array walks an array value; null is none.
func array(v []byte, fn func(elem []byte) error) error {
	if len(v) == 0 || isNull(v) {
		return nil
	}
	if v[0] != '[' {
		return errNotArray
	}
	return elements(v, fn)
}

// lastMembers sets dst[i] to the raw value of the object b's last member
// named names[i] (nil when there is none or it is null); b null or absent
// is an object without members.
func lastMembers(b []byte, names []string, dst [][]byte) error {
	if len(b) == 0 || isNull(b) {
		return nil
	}
	if b[0] != '{' {
		return errNotObject
	}
	it := memberIter{b: b}
	for {
		k, v, ok := it.next()
		if !ok {
			return it.err
		}
		for i, n := range names {
			if string(k) == n {
				dst[i] = v
				if isNull(v) {
					dst[i] = nil
				}
			}
		}
	}
}
