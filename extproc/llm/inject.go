package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
)

const includeUsage = `{"include_usage":true}`

// InjectIncludeUsage rewrites a streamed request so the upstream ends the
// stream with a usage chunk. The rest of the body is kept byte for byte:
// only stream_options is added, or set inside when the request has one.
// A byte-order mark, which ParseRequest reads past as Python does, stays
// where it is.
func InjectIncludeUsage(body []byte) ([]byte, error) {
	if rest, ok := bytes.CutPrefix(body, utf8BOM); ok {
		out, err := InjectIncludeUsage(rest)
		if err != nil {
			return nil, err
		}
		return append(utf8BOM[:len(utf8BOM):len(utf8BOM)], out...), nil
	}
	start, end, found, err := topLevelValue(body, "stream_options")
	if err != nil {
		return nil, err
	}
	if !found {
		open := bytes.IndexByte(body, '{')
		rest := body[open+1:]
		sep := ","
		if len(bytes.TrimSpace(rest)) > 0 && bytes.TrimSpace(rest)[0] == '}' {
			sep = ""
		}
		out := make([]byte, 0, len(body)+40)
		out = append(out, body[:open+1]...)
		out = append(out, `"stream_options":`+includeUsage+sep...)
		return append(out, rest...), nil
	}
	value := includeUsage
	if old := bytes.TrimSpace(body[start:end]); !bytes.Equal(old, []byte("null")) {
		var opts map[string]json.RawMessage
		if err := json.Unmarshal(old, &opts); err != nil {
			return nil, fmt.Errorf("llm: stream_options: %w", err)
		}
		opts["include_usage"] = json.RawMessage("true")
		b, err := json.Marshal(opts)
		if err != nil {
			return nil, err
		}
		value = string(b)
	}
	out := make([]byte, 0, len(body)+len(value))
	out = append(out, body[:start]...)
	out = append(out, value...)
	return append(out, body[end:]...), nil
}

// topLevelValue finds the byte span of a top-level member's value: the
// last one of that name, which is the one the upstream reads.
func topLevelValue(body []byte, name string) (start, end int, found bool, err error) {
	v, found, err := topLevel(body, name)
	if err != nil {
		return 0, 0, false, fmt.Errorf("llm: request body: %w", err)
	}
	if !found {
		return 0, 0, false, nil
	}
	// v is a slice of body: its offset is what its capacity lacks.
	start = cap(body) - cap(v)
	return start, start + len(v), true, nil
}
