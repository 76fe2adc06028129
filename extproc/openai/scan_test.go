package openai

import (
	"encoding/json"
	"strings"
	"testing"
)

// referenceRequest is what encoding/json makes of the fields ParseRequest
// reads: the scanner must agree wherever json succeeds.
type referenceRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           int64 `json:"max_tokens"`
	MaxCompletionTokens int64 `json:"max_completion_tokens"`
	MaxOutputTokens     int64 `json:"max_output_tokens"`
}

// comparable reports whether json and the scanner read the same keys:
// json matches keys case-insensitively and unescapes them, the scanner
// (like the OpenAI API) takes them as written.
func comparable(body []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || m == nil {
		// json reads null into a struct as nothing; the scanner refuses
		// anything but an object, which lets the request through as well.
		return false
	}
	for k := range m {
		if strings.ContainsRune(k, '\\') || (k != strings.ToLower(k) && strings.Contains("model stream stream_options max_tokens max_completion_tokens max_output_tokens", strings.ToLower(k))) {
			return false
		}
	}
	return !strings.Contains(string(body), `\u`)
}

func checkAgainstJSON(t *testing.T, body []byte) {
	var ref referenceRequest
	if !comparable(body) || json.Unmarshal(body, &ref) != nil {
		return
	}
	r, err := ParseRequest(ChatCompletions, body)
	if err != nil {
		t.Fatalf("json reads %s, the scanner fails: %v", body, err)
	}
	include := ref.StreamOptions != nil && ref.StreamOptions.IncludeUsage
	max := firstPositive(ref.MaxTokens, ref.MaxCompletionTokens, ref.MaxOutputTokens)
	if r.Model != ref.Model || r.Stream != ref.Stream || r.IncludeUsage != include || r.MaxOutput != max {
		t.Fatalf("%s:\nscanner %q %v %v %d\n   json %q %v %v %d", body, r.Model, r.Stream, r.IncludeUsage, r.MaxOutput, ref.Model, ref.Stream, include, max)
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
	} {
		checkAgainstJSON(t, []byte(body))
	}
	for _, body := range []string{`{"model":`, `{"model":"a"} x`, `[]`, `{"stream":"yes"}`, `{"max_tokens":"ten"}`, `{"a" 1}`, `{"a":1,}`} {
		if _, err := ParseRequest(ChatCompletions, []byte(body)); err == nil {
			t.Errorf("%s: want an error", body)
		}
	}
	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	if r, err := ParseRequest(ChatCompletions, []byte(`{"messages":`+deep+`,"model":"m"}`)); err != nil || r.Model != "m" {
		t.Errorf("deep nesting: %v", err)
	}
}

func FuzzScannerAgreesWithJSON(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":10,"messages":[{"content":"}"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) { checkAgainstJSON(t, body) })
}
