package llm

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestInjectIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"model":"gpt-4o","stream":true}`, `{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true}`},
		{` { } `, ` {"stream_options":{"include_usage":true} } `},
		{`{"stream":true,"stream_options":null,"n":1}`, `{"stream":true,"stream_options":{"include_usage":true},"n":1}`},
		{`{"stream":true, "stream_options" : {"include_usage":false,"x":1} ,"n":1}`, `{"stream":true, "stream_options" : {"include_usage":true,"x":1} ,"n":1}`},
		{`{"messages":[{"content":"{\"stream_options\":1}"}],"stream":true}`, `{"stream_options":{"include_usage":true},"messages":[{"content":"{\"stream_options\":1}"}],"stream":true}`},
	}
	for i, tt := range tests {
		got, err := InjectIncludeUsage([]byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("step %d: got %s (%v), want %s", i, got, err, tt.want)
			continue
		}
		r, err := ParseRequest(ChatCompletions, got)
		if err != nil || !r.IncludeUsage {
			t.Errorf("step %d: rewritten body does not ask for usage: %v", i, err)
		}
	}
	for _, bad := range []string{`[]`, `{"stream_options":"x"}`, `{"a":`} {
		if _, err := InjectIncludeUsage([]byte(bad)); err == nil {
			t.Errorf("%s: want error", bad)
		}
	}
}

func FuzzInjectIncludeUsage(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"stream_options":{"x":[1]}}`))
	f.Add([]byte("\xef\xbb\xbf{\"stream\":\"true\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		// A byte-order mark before the JSON is read past, and kept.
		json0, bom := bytes.CutPrefix(body, utf8BOM)
		if !json.Valid(json0) {
			return
		}
		out, err := InjectIncludeUsage(body)
		if err != nil {
			return
		}
		if rest, ok := bytes.CutPrefix(out, utf8BOM); ok != bom || !json.Valid(rest) {
			t.Fatalf("out of %q: %q", body, out)
		}
	})
}

// The upstream reads the last of repeated stream_options: that is the one
// the injection must set.
func TestInjectIncludeUsageSetsTheOptionsTheUpstreamReads(t *testing.T) {
	for _, body := range []string{
		`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
		`{"stream":true,"stream_options":{"INCLUDE_USAGE":true}}`,
		`{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`,
		`{"stream":true,"stream_options":{},"stream_options":null}`,
	} {
		r, err := ParseRequest(ChatCompletions, []byte(body))
		if err != nil || r.IncludeUsage {
			t.Fatalf("%s: include_usage read as %v (%v), want false", body, r != nil && r.IncludeUsage, err)
		}
		out, err := InjectIncludeUsage([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		var top map[string]json.RawMessage // the last of repeated keys, as the upstream
		var opts map[string]json.RawMessage
		if json.Unmarshal(out, &top) != nil || json.Unmarshal(top["stream_options"], &opts) != nil || string(opts["include_usage"]) != "true" {
			t.Errorf("%s: rewritten to %s, which the upstream reads without include_usage", body, out)
		}
	}
}
