package llm

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// referenceRequest reads the fields ParseRequest reads as the upstream
// does (Python's json, like Go's into a map: keys case-sensitive and
// unescaped, the last of repeated ones): the scanner must agree wherever
// it succeeds. ok is false when a field is not of its type.
func referenceRequest(body []byte) (model string, stream, include bool, maxOut int64, ok bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return "", false, false, 0, false
	}
	field := func(name string, dst any) bool {
		v, has := top[name]
		return !has || json.Unmarshal(v, dst) == nil
	}
	var opts map[string]json.RawMessage
	var max [3]int64
	ok = field("model", &model) && field("stream", &stream) && field("stream_options", &opts) &&
		field("max_tokens", &max[0]) && field("max_completion_tokens", &max[1]) && field("max_output_tokens", &max[2])
	if v, has := opts["include_usage"]; has && ok {
		ok = json.Unmarshal(v, &include) == nil
	}
	return model, stream, include, slices.Max(append([]int64{0}, max[:]...)), ok
}

func checkAgainstJSON(t *testing.T, body []byte) {
	model, stream, include, maxOut, ok := referenceRequest(body)
	if !ok {
		return
	}
	r, err := ParseRequest(ChatCompletions, body)
	if err != nil {
		t.Fatalf("json reads %s, the scanner fails: %v", body, err)
	}
	if r.Model != model || r.Stream != stream || r.IncludeUsage != include || r.MaxOutput != maxOut {
		t.Fatalf("%s:\nscanner %q %v %v %d\n   json %q %v %v %d", body, r.Model, r.Stream, r.IncludeUsage, r.MaxOutput, model, stream, include, maxOut)
	}
}

func TestScannerAgreesWithJSON(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":10}`,
		` { "messages" : [ {"role":"user","content":"a \"}{][ b"} ] , "model" : "m\"x" , "max_completion_tokens": 7 } `,
		`{"model":null,"stream":null,"stream_options":null,"max_tokens":null}`,
		`{"max_tokens":5,"max_tokens":9,"model":"a","model":"b"}`,
		`{"nested":{"model":"inner","a":[1,{"b":[[]]}]},"model":"outer"}`,
		`{}`,
		`{"max_tokens":-3,"max_output_tokens":12,"x":[true,false,null,1.5e3]}`,
		`{"stream":true,"stream_options":{"INCLUDE_USAGE":true},"Model":"x","STREAM":false}`,
		`{"str\u0065am":true,"stream_options":{"include\u005fusage":true},"m\u006fdel":"esc"}`,
		`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
		`{"stream_options":{"include_usage":true,"include_usage":false},"stream":false,"stream":true}`,
		`{"metadata":{"stream":false,"model":"inner"},"stream":true,"model":"outer"}`,
	} {
		checkAgainstJSON(t, []byte(body))
	}
	for _, body := range []string{`{"model":`, `{"model":"a"} x`, `[]`, `{"stream":"maybe"}`, `{"stream":2}`, `{"max_tokens":"ten"}`, `{"max_tokens":""}`, `{"a" 1}`, `{"a":1,}`} {
		if _, err := ParseRequest(ChatCompletions, []byte(body)); err == nil {
			t.Errorf("%s: want an error", body)
		}
	}
	// Nesting is read as deep as encoding/json reads it, and no deeper:
	// a body past that is one the upstream refuses too.
	deep := strings.Repeat("[", 9999) + strings.Repeat("]", 9999)
	if r, err := ParseRequest(ChatCompletions, []byte(`{"messages":`+deep+`,"model":"m"}`)); err != nil || r.Model != "m" {
		t.Errorf("deep nesting: %v", err)
	}
	deeper := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	if _, err := ParseRequest(ChatCompletions, []byte(`{"messages":`+deeper+`,"model":"m"}`)); err == nil {
		t.Error("nesting 200,000 deep: read, want an error")
	}
	checkAgainstJSON(t, []byte(`{"messages":`+deeper+`,"model":"m"}`))
}

func FuzzScannerAgreesWithJSON(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":10,"messages":[{"content":"}"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) { checkAgainstJSON(t, body) })
}
