package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// Issue 21: most self-hosted OpenAI-compatible servers (vLLM, SGLang,
// LiteLLM, any FastAPI or Starlette app) read a request body with Python's
// json.loads on the body's bytes. For every body it accepts, tokengate must
// read the same model, stream flag, stream_options.include_usage, max_*
// tokens and n, wherever those are of the types such a server takes (a
// string model, boolean flags, integer counts, or null for any of them).
//
// The bodies are generated (a fixed seed) to lean on what JSON readers
// disagree about — Python's NaN and Infinity, repeated keys, escaped keys,
// the same names nested deeper, case variants, unicode escapes, surrogates,
// numbers past int64, whitespace — plus the committed fuzz corpora of the
// request readers. One python3 process reads them all.

// pyReader reads JSON lines {"b": base64 body} and writes, per line, what
// json.loads made of the body: rejected (and why), or the fields tokengate
// reads with their Python types. Strings go back as the base64 of their
// UTF-8 bytes (lone surrogates kept, surrogatepass, and flagged), integers
// as decimal text (Python's are unbounded).
const pyReader = `
import base64, json, sys

def describe(v):
    if v is None:
        return {"t": "null"}
    if isinstance(v, bool):
        return {"t": "bool", "v": v}
    if isinstance(v, int):
        return {"t": "int", "v": str(v)}
    if isinstance(v, float):
        return {"t": "float", "v": repr(v), "integral": v == v and v not in (float("inf"), float("-inf")) and v.is_integer(),
                "int": str(int(v)) if v == v and v not in (float("inf"), float("-inf")) else ""}
    if isinstance(v, str):
        return {"t": "str", "v": base64.b64encode(v.encode("utf-8", "surrogatepass")).decode(),
                "surrogate": any(0xD800 <= ord(c) <= 0xDFFF for c in v)}
    return {"t": type(v).__name__}

FIELDS = ("model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens", "n")

out = sys.stdout
for line in sys.stdin:
    body = base64.b64decode(json.loads(line)["b"])
    try:
        doc = json.loads(body)
    except Exception as e:  # JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError (int digits)
        out.write(json.dumps({"accept": False, "why": type(e).__name__ + ": " + str(e)[:120]}) + "\n")
        continue
    rec = {"accept": True, "object": isinstance(doc, dict), "fields": {}}
    if isinstance(doc, dict):
        for k in FIELDS:
            if k in doc:
                rec["fields"][k] = describe(doc[k])
        so = doc.get("stream_options")
        if isinstance(so, dict) and "include_usage" in so:
            rec["fields"]["include_usage"] = describe(so["include_usage"])
    out.write(json.dumps(rec) + "\n")
out.flush()
`

// pyValue is one field as Python read it.
type pyValue struct {
	T         string          `json:"t"`
	V         json.RawMessage `json:"v"`
	Surrogate bool            `json:"surrogate"`
	Integral  bool            `json:"integral"`
	Int       string          `json:"int"`
}

type pyReading struct {
	Accept bool               `json:"accept"`
	Why    string             `json:"why"`
	Object bool               `json:"object"`
	Fields map[string]pyValue `json:"fields"`
}

// runPython reads every body with one python3 process.
func runPython(t *testing.T, py string, bodies [][]byte) []pyReading {
	t.Helper()
	var in bytes.Buffer
	for _, b := range bodies {
		line, _ := json.Marshal(map[string]string{"b": base64.StdEncoding.EncodeToString(b)})
		in.Write(line)
		in.WriteByte('\n')
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -I: isolated, so no user site-packages or PYTHON* variable changes
	// what json is.
	cmd := exec.CommandContext(ctx, py, "-I", "-c", pyReader)
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.Bytes())
	}
	var readings []pyReading
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r pyReading
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("python3 wrote %q: %v", sc.Bytes(), err)
		}
		readings = append(readings, r)
	}
	if len(readings) != len(bodies) {
		t.Fatalf("python3 read %d bodies of %d", len(readings), len(bodies))
	}
	return readings
}

// pyExpect is what tokengate must read from a body Python accepted, in
// ParseRequest's terms; skip says why the body is not compared (a field
// of a type no OpenAI-compatible server takes), "" when it is.
type pyExpect struct {
	model                string
	stream, includeUsage bool
	maxOutput, choices   int64
	skip                 string
}

func expectFrom(r pyReading) pyExpect {
	var e pyExpect
	skip := func(format string, args ...any) pyExpect {
		e.skip = fmt.Sprintf(format, args...)
		return e
	}
	if !r.Object {
		return skip("not an object")
	}
	f := r.Fields
	if v, ok := f["model"]; ok {
		switch v.T {
		case "null":
		case "str":
			if v.Surrogate {
				// Python keeps a lone surrogate (\ud800) in the str;
				// encoding/json turns it into U+FFFD. Neither names a model
				// a server has or a policy can list (config files are
				// UTF-8), and pydantic refuses such a str.
				return skip("model has a lone surrogate")
			}
			var s string
			_ = json.Unmarshal(v.V, &s)
			b, _ := base64.StdEncoding.DecodeString(s)
			e.model = string(b)
		default:
			return skip("model is %s", v.T)
		}
	}
	boolField := func(name string) (bool, bool) {
		v, ok := f[name]
		if !ok || v.T == "null" {
			return false, true
		}
		if v.T != "bool" {
			return false, false
		}
		return string(v.V) == "true", true
	}
	var ok bool
	if e.stream, ok = boolField("stream"); !ok {
		return skip("stream is %s", f["stream"].T)
	}
	if v, has := f["stream_options"]; has && v.T != "null" && v.T != "dict" {
		return skip("stream_options is %s", v.T)
	}
	if e.includeUsage, ok = boolField("include_usage"); !ok {
		return skip("include_usage is %s", f["include_usage"].T)
	}
	// Integers as a server takes them: Python ints, and floats that are
	// whole numbers (pydantic's lax mode turns 1e3 into 1000). tokengate
	// keeps int64 and saturates past it.
	intField := func(name string) (int64, bool) {
		v, has := f[name]
		if !has || v.T == "null" {
			return 0, true
		}
		var digits string
		switch {
		case v.T == "int":
			_ = json.Unmarshal(v.V, &digits)
		case v.T == "float" && v.Integral:
			digits = v.Int
		default:
			return 0, false
		}
		n, ok := new(big.Int).SetString(digits, 10)
		if !ok {
			return 0, false
		}
		switch {
		case n.IsInt64():
			return n.Int64(), true
		case n.Sign() > 0:
			return math.MaxInt64, true
		}
		return math.MinInt64, true
	}
	var max [3]int64
	for i, name := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		if max[i], ok = intField(name); !ok {
			return skip("%s is %s", name, f[name].T)
		}
	}
	e.maxOutput = slices.Max(append([]int64{0}, max[:]...)) // the largest given
	n, ok := intField("n")
	if !ok {
		return skip("n is %s", f["n"].T)
	}
	e.choices = choices(ChatCompletions, n, 0)
	return e
}

// fuzzCorpus reads the []byte arguments of the committed corpus files of
// the named fuzz targets.
func fuzzCorpus(t *testing.T, targets ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, target := range targets {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no committed corpus for %s", target)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				lit, ok := strings.CutPrefix(strings.TrimSpace(line), "[]byte(")
				if !ok {
					continue
				}
				s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
				if err != nil {
					t.Fatalf("%s: %q: %v", file, line, err)
				}
				out = append(out, []byte(s))
			}
		}
	}
	return out
}

// bodyGen writes request bodies byte by byte, so that whitespace, escapes,
// repeated keys and number spellings are what the test chose.
type bodyGen struct{ r *rand.Rand }

func (g bodyGen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g bodyGen) ws() string {
	if g.r.IntN(3) > 0 {
		return ""
	}
	return g.pick(" ", "  ", "\n", "\t", "\r\n", " \n\t ", "\n    ")
}

// key spells name the ways a client might: plain, or with a character
// escaped (the same key to any JSON reader).
func (g bodyGen) key(name string) string {
	if g.r.IntN(6) > 0 || name == "" {
		return `"` + name + `"`
	}
	i := g.r.IntN(len(name))
	esc := fmt.Sprintf(`\u%04x`, name[i])
	if g.r.IntN(2) == 0 {
		esc = fmt.Sprintf(`\u%04X`, name[i])
	}
	if name[i] == '/' {
		esc = `\/`
	}
	return `"` + name[:i] + esc + name[i+1:] + `"`
}

// decoyKey is a key a reader must not take for name: another case,
// a space, an underscore changed.
func (g bodyGen) decoyKey(name string) string {
	switch g.r.IntN(5) {
	case 0:
		return `"` + strings.ToUpper(name[:1]) + name[1:] + `"`
	case 1:
		return `"` + strings.ToUpper(name) + `"`
	case 2:
		return `"` + name + ` "`
	case 3:
		return `"` + strings.ReplaceAll(name, "_", "-") + `"`
	}
	return `"` + name + `\u0000"`
}

func (g bodyGen) str() string {
	return g.pick(`"gpt-4o"`, `"gpt-4o-mini"`, `""`, `"llama-3.1-8b"`, `"Qwen/Qwen2.5-7B-Instruct"`,
		`"\u0067pt-4o"`, `"gpt\/4o"`, `"m\"odel\\"`, `"mod\u00e8le"`, `"modèle"`, `"日本語モデル"`,
		`"\ud83d\ude00 emoji"`, `"😀 raw emoji"`, `"lone \ud800 surrogate"`, `"tab\tescaped"`,
		`"a\u0000b"`, `"\u2028line sep"`, `"gpt-4o\ufeff"`, `"}\"{]["`,
		// A surrogate as raw (CESU-8) bytes: json.loads decodes bodies with
		// surrogatepass and takes it; a stray \xff it refuses.
		"\"raw \xed\xa0\x80 surrogate\"", "\"raw \xff byte\"")
}

// number is an integer as a client might spell it, or a value that is not
// one.
func (g bodyGen) number() string {
	switch g.r.IntN(4) {
	case 0:
		return strconv.Itoa(g.r.IntN(5000))
	case 1:
		return strconv.Itoa(-g.r.IntN(50))
	}
	return g.pick("0", "-0", "1", "128", "129", "9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "-9223372036854775809", "99999999999999999999999999", "1"+strings.Repeat("0", 400),
		"1.0", "1.5", "1e3", "1E+2", "2.5e1", "1e400", "-1e400", "-0.0", "0.5", "1e-2", "100.000",
		"NaN", "Infinity", "-Infinity", `"100"`, "true", "false", "null", "[]", "{}", "[1]")
}

func (g bodyGen) boolean() string {
	if g.r.IntN(5) > 0 {
		return g.pick("true", "false", "null")
	}
	return g.pick("0", "1", `"true"`, "NaN", "[]", "{}", `"false"`)
}

// filler is a value of a field tokengate does not read: Python's
// non-finite literals, prompts with tricky text, nested objects that
// repeat the names read at the top level.
func (g bodyGen) filler(depth int) string {
	switch n := g.r.IntN(12); {
	case n < 3:
		return g.pick("NaN", "Infinity", "-Infinity", "0.7", "1e-5", "-2", "null", "true")
	case n < 5:
		return g.str()
	case n < 7 && depth < 4:
		var b strings.Builder
		b.WriteString("[" + g.ws())
		for i := range g.r.IntN(4) {
			if i > 0 {
				b.WriteString("," + g.ws())
			}
			b.WriteString(g.filler(depth + 1))
		}
		b.WriteString(g.ws() + "]")
		return b.String()
	case depth < 4:
		var b strings.Builder
		b.WriteString("{" + g.ws())
		for i := range g.r.IntN(4) {
			if i > 0 {
				b.WriteString("," + g.ws())
			}
			name := g.pick("model", "stream", "max_tokens", "n", "include_usage", "stream_options",
				"role", "content", "text", "x")
			b.WriteString(g.key(name) + g.ws() + ":" + g.ws() + g.filler(depth+1))
		}
		b.WriteString(g.ws() + "}")
		return b.String()
	}
	return `"deep"`
}

func (g bodyGen) messages() string {
	var b strings.Builder
	b.WriteString("[")
	for i := range 1 + g.r.IntN(3) {
		if i > 0 {
			b.WriteString("," + g.ws())
		}
		fmt.Fprintf(&b, `{"role":%s,"content":%s}`, g.pick(`"user"`, `"system"`, `"assistant"`),
			g.pick(`"Hello"`, `"a \"quoted\" {brace} [bracket]"`, `"\\\"tricky\\\\"`, `"é \u00e9 \ud83d\ude00"`,
				`[{"type":"text","text":"part"},{"type":"image_url","image_url":{"url":"data:,x"}}]`, `null`, `"NaN"`))
	}
	b.WriteString("]")
	return b.String()
}

// streamOptions is stream_options' value: an object with include_usage
// spelled, repeated or decoyed, or something else.
func (g bodyGen) streamOptions() string {
	if g.r.IntN(6) == 0 {
		return g.pick("null", "[]", `"include_usage"`, "true", "NaN")
	}
	var members []string
	for range g.r.IntN(4) {
		switch g.r.IntN(4) {
		case 0, 1:
			members = append(members, g.key("include_usage")+g.ws()+":"+g.ws()+g.boolean())
		case 2:
			members = append(members, g.decoyKey("include_usage")+":"+g.boolean())
		default:
			members = append(members, `"continuous_usage_stats"`+":"+g.filler(2))
		}
	}
	return "{" + g.ws() + strings.Join(members, ","+g.ws()) + g.ws() + "}"
}

// body writes one request body.
func (g bodyGen) body() []byte {
	type member struct{ k, v string }
	var ms []member
	add := func(name string, value func() string) {
		switch g.r.IntN(10) {
		case 0, 1, 2, 3: // absent
		case 4:
			ms = append(ms, member{g.decoyKey(name), value()})
		case 5:
			// Repeated: the last one counts, to Python as to Go maps.
			ms = append(ms, member{g.key(name), value()}, member{g.key(name), value()})
		default:
			ms = append(ms, member{g.key(name), value()})
		}
	}
	add("model", g.str)
	add("stream", g.boolean)
	add("stream_options", g.streamOptions)
	add("max_tokens", g.number)
	add("max_completion_tokens", g.number)
	add("max_output_tokens", g.number)
	add("n", g.number)
	if g.r.IntN(4) > 0 {
		ms = append(ms, member{`"messages"`, g.messages()})
	}
	for range g.r.IntN(4) {
		ms = append(ms, member{g.key(g.pick("temperature", "top_p", "presence_penalty", "metadata", "tools",
			"logit_bias", "user", "seed")), g.filler(0)})
	}
	g.r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	var b strings.Builder
	b.WriteString(g.ws() + "{" + g.ws())
	for i, m := range ms {
		if i > 0 {
			b.WriteString(g.ws() + "," + g.ws())
		}
		b.WriteString(m.k + g.ws() + ":" + g.ws() + m.v)
	}
	b.WriteString(g.ws() + "}" + g.ws())
	return []byte(b.String())
}

// handwritten are bodies worth having whatever the generator does.
var handwritten = []string{
	`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":10,"temperature":NaN,"top_p":Infinity}`,
	`{"model":"a","model":"b","stream":true,"stream":false,"max_tokens":5,"max_tokens":0,"max_completion_tokens":9}`,
	`{"str\u0065am":true,"m\u006fdel":"esc","stream_options":{"include\u005fusage":true},"\u006ex":3}`,
	`{"Stream":true,"MODEL":"x","Max_tokens":7,"stream_options":{"Include_usage":true}}`,
	`{"metadata":{"model":"inner","stream":true,"max_tokens":9},"messages":[{"model":"m2","stream":true}],"model":"outer"}`,
	`{"max_tokens":99999999999999999999,"n":99999999999999999999}`,
	`{"max_tokens":-99999999999999999999,"max_completion_tokens":12,"n":-5}`,
	`{"max_tokens":1e3,"n":2.0,"max_output_tokens":1.5}`,
	`{"temperature":-Infinity,"stream":true,"logprobs":NaN,"n":130}`,
	"\t\r\n {\n\t\"model\"\r\n:\n\"spaced\"\t,\"stream\" : true } \n",
	`{"model":"\ud83d\ude00","stream":null,"stream_options":null,"max_tokens":null,"n":null}`,
	`{"model":"raw é 😀"}`,
	`{}`,
	`{"stream_options":{"include_usage":true,"include_usage":false},"stream_options":{"include_usage":true}}`,
}

func TestParseRequestAgreesWithPython(t *testing.T) {
	py := needPython(t)
	var bodies [][]byte
	for _, s := range handwritten {
		bodies = append(bodies, []byte(s))
	}
	corpus := fuzzCorpus(t, "FuzzParseRequest", "FuzzScannerAgreesWithJSON")
	bodies = append(bodies, corpus...)
	g := bodyGen{rand.New(rand.NewPCG(21, 2026))}
	const generated = 4000
	for range generated {
		bodies = append(bodies, g.body())
	}

	readings := runPython(t, py, bodies)
	var accepted, compared int
	skipped := map[string]int{}
	failures := 0
	for i, body := range bodies {
		r := readings[i]
		if !r.Accept {
			continue
		}
		accepted++
		want := expectFrom(r)
		if want.skip != "" {
			skipped[want.skip]++
			continue
		}
		compared++
		got, err := ParseRequest(ChatCompletions, body)
		if err != nil {
			failures++
			if failures <= 20 {
				t.Errorf("body %d: Python reads it (model %q stream %v include_usage %v max %d n %d), ParseRequest fails: %v\nbody: %q",
					i, want.model, want.stream, want.includeUsage, want.maxOutput, want.choices, err, body)
			}
			continue
		}
		if got.Model != want.model || got.Stream != want.stream || got.IncludeUsage != want.includeUsage ||
			got.MaxOutput != want.maxOutput || got.Choices != want.choices {
			failures++
			if failures <= 20 {
				t.Errorf("body %d: %q\n python model %q stream %v include_usage %v max %d choices %d\ntokengate model %q stream %v include_usage %v max %d choices %d",
					i, body, want.model, want.stream, want.includeUsage, want.maxOutput, want.choices,
					got.Model, got.Stream, got.IncludeUsage, got.MaxOutput, got.Choices)
			}
		}
	}
	reasons := make([]string, 0, len(skipped))
	for k, n := range skipped {
		reasons = append(reasons, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(reasons)
	t.Logf("%d bodies (%d handwritten, %d from the fuzz corpora, %d generated): Python accepted %d, %d compared, %d disagreements; not compared: %s",
		len(bodies), len(handwritten), len(corpus), generated, accepted, compared, failures, strings.Join(reasons, ", "))
	// The generator must keep exercising what it is for: a change that
	// made most bodies invalid, or all fields mistyped, would pass empty.
	if compared < generated/4 {
		t.Errorf("only %d bodies compared; the generator no longer makes enough bodies Python reads with well-typed fields", compared)
	}
}

// TestParseRequestOtherUnicodeEncodings pins down the one family of bodies
// json.loads accepts that tokengate does not read: JSON in UTF-16 or
// UTF-32 (Python detects them from the leading bytes). UTF-8 behind a byte
// order mark is read, the mark skipped. ParseRequest refuses the others, so the processor treats
// them as unreadable bodies (refused, or held by their bytes, per
// unreadable_body) rather than reading something else than the upstream.
func TestParseRequestOtherUnicodeEncodings(t *testing.T) {
	py := needPython(t)
	const doc = `{"model":"gpt-4o","stream":true,"max_tokens":5}`
	u16 := utf16.Encode([]rune(doc))
	le, be := make([]byte, 0, 2*len(u16)), make([]byte, 0, 2*len(u16))
	for _, c := range u16 {
		le = append(le, byte(c), byte(c>>8))
		be = append(be, byte(c>>8), byte(c))
	}
	var le32 []byte
	for _, c := range doc {
		le32 = append(le32, byte(c), byte(c>>8), byte(c>>16), byte(c>>24))
	}
	bodies := map[string][]byte{
		"utf-8 with BOM": append([]byte("\xef\xbb\xbf"), doc...),
		"utf-16-le":      le,
		"utf-16-be":      be,
		"utf-16 BOM":     append([]byte{0xff, 0xfe}, le...),
		"utf-32-le":      le32,
	}
	names := make([]string, 0, len(bodies))
	list := make([][]byte, 0, len(bodies))
	for name := range bodies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		list = append(list, bodies[name])
	}
	readings := runPython(t, py, list)
	for i, name := range names {
		if !readings[i].Accept {
			t.Errorf("%s: Python refuses it (%s); this test is about bodies it reads", name, readings[i].Why)
			continue
		}
		if want := expectFrom(readings[i]); want.model != "gpt-4o" || !want.stream || want.maxOutput != 5 {
			t.Errorf("%s: Python reads %+v", name, want)
		}
		r, err := ParseRequest(ChatCompletions, list[i])
		if name == "utf-8 with BOM" {
			// The one other encoding tokengate reads: the mark is skipped.
			if err != nil || r.Model != "gpt-4o" || !r.Stream || r.MaxOutput != 5 {
				t.Errorf("%s: ParseRequest reads %+v (%v), want what Python reads", name, r, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: ParseRequest reads model %q stream %v max %d: update this test and README's body rules", name, r.Model, r.Stream, r.MaxOutput)
		}
	}
}

// TestParseRequestReadsTheLastRepeatedField is the disagreement the
// differential test found, kept without Python: json.loads (like a Go
// map) keeps the last of repeated keys, so an earlier one of another type
// is nothing to the upstream, and must be nothing to tokengate.
func TestParseRequestReadsTheLastRepeatedField(t *testing.T) {
	for _, tt := range []struct {
		body    string
		model   string
		stream  bool
		include bool
		max     int64
		choices int64
	}{
		{`{"stream_options":true,"stream_options":{"include_usage":true},"stream":true}`, "", true, true, 0, 1},
		{`{"max_tokens":false,"max_tokens":2040,"stream":"yes","stream":true}`, "", true, false, 2040, 1},
		{`{"model":7,"model":"gpt-4o","n":{},"n":3,"max_completion_tokens":NaN,"max_completion_tokens":9}`, "gpt-4o", false, false, 9, 3},
		{`{"stream_options":{"include_usage":0},"stream_options":{"include_usage":false,"include_usage":true}}`, "", false, true, 0, 1},
	} {
		r, err := ParseRequest(ChatCompletions, []byte(tt.body))
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		if r.Model != tt.model || r.Stream != tt.stream || r.IncludeUsage != tt.include || r.MaxOutput != tt.max || r.Choices != tt.choices {
			t.Errorf("%s: got model %q stream %v include %v max %d choices %d", tt.body, r.Model, r.Stream, r.IncludeUsage, r.MaxOutput, r.Choices)
		}
	}
	// The last one still decides: of a wrong type, the body is unreadable.
	for _, body := range []string{`{"stream":true,"stream":"maybe"}`, `{"max_tokens":5,"max_tokens":"five"}`, `{"stream_options":{},"stream_options":[]}`} {
		if _, err := ParseRequest(ChatCompletions, []byte(body)); err == nil {
			t.Errorf("%s: want an error", body)
		}
	}
}

// needPython finds python3; without it the test skips, saying so, and in
// CI (where .ci/run installs it) fails.
func needPython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 is not on PATH in CI: .ci/run installs it")
		}
		t.Skip("python3 is not on PATH: the differential test against Python's json.loads needs it (.ci/run installs it)")
	}
	return py
}
