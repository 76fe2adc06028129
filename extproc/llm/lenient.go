package llm

import "bytes"

// Most self-hosted OpenAI-compatible servers (vLLM, SGLang, LiteLLM, any
// FastAPI app) read request bodies with Python's json module, which also
// takes the literals NaN, Infinity and -Infinity as numbers. Go's
// encoding/json refuses them, so a body carrying "temperature": NaN would
// be unreadable here and served there. pythonNumbers writes each such
// literal outside a string as 0 padded with spaces to the same length, so
// the body keeps its offsets and reads as the upstream reads it, as far as
// any count is concerned.

var pythonLiterals = [][]byte{[]byte("-Infinity"), []byte("Infinity"), []byte("NaN")}

// pythonNumbers returns b with Python's non-finite literals neutralised,
// and whether there were any (b itself is returned untouched when not).
func pythonNumbers(b []byte) ([]byte, bool) {
	var out []byte
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			end, err := skipString(b, i)
			if err != nil {
				return b, out != nil
			}
			i = end - 1
		case c == '-' || c == 'I' || c == 'N':
			for _, lit := range pythonLiterals {
				if bytes.HasPrefix(b[i:], lit) && (i+len(lit) == len(b) || endsScalar(b[i+len(lit)])) {
					if out == nil {
						out = bytes.Clone(b)
					}
					out[i] = '0'
					for j := i + 1; j < i+len(lit); j++ {
						out[j] = ' '
					}
					i += len(lit) - 1
					break
				}
			}
		}
	}
	if out == nil {
		return b, false
	}
	return out, true
}
