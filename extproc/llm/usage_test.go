package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":5}}}`,
			Usage{Prompt: 30, Completion: 12, Total: 42, Cached: 8, Reasoning: 5}, true},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}`, Usage{Prompt: 7, Total: 7}, true},
		{"responses", `{"usage":{"input_tokens":10,"output_tokens":4,"total_tokens":14,"input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":1}}}`,
			Usage{Prompt: 10, Completion: 4, Total: 14, Cached: 2, Reasoning: 1}, true},
		{"total missing", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, Usage{Prompt: 3, Completion: 4, Total: 7}, true},
		{"negative clamped", `{"usage":{"prompt_tokens":-30,"completion_tokens":5,"total_tokens":-25}}`, Usage{Completion: 5, Total: 5}, true},
		{"exponents and floats", `{"usage":{"prompt_tokens":1e3,"completion_tokens":2.9,"total_tokens":"1002"}}`, Usage{Prompt: 1000, Completion: 2, Total: 1002}, true},
		{"NaN and absurd", `{"usage":{"prompt_tokens":"NaN","completion_tokens":1e300,"total_tokens":"Infinity"}}`, Usage{Completion: MaxCount, Total: MaxCount}, true},
		{"garbage counts", `{"usage":{"prompt_tokens":"lots","completion_tokens":[1],"total_tokens":{}}}`, Usage{}, true},
		{"no usage", `{"error":{"message":"bad"}}`, Usage{}, false},
		{"null usage", `{"usage":null}`, Usage{}, false},
		{"usage last, after a big body", `{"choices":[{"message":{"content":"` + strings.Repeat("x", 1<<16) + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}`, Usage{Prompt: 5, Completion: 6, Total: 11}, true},
		{"pretty printed", "{\n  \"usage\" :\n  {\"total_tokens\": 3, \"prompt_tokens\": 3}\n}", Usage{Prompt: 3, Total: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseUsage([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if u, ok, err := ParseUsage([]byte(`{"choices":[{"message":{"content":"the \"usage\": {\"total_tokens\": 99}"}}]}`)); ok || err != nil {
		t.Errorf("usage in a string: got %+v %v %v, want no usage", u, ok, err)
	}
	if u, ok, err := ParseUsage([]byte("<html>")); ok || err == nil {
		t.Errorf("an HTML page: got %+v %v %v, want no usage and why", u, ok, err)
	}
	if _, _, err := ParseUsage([]byte(`{"usage":{"prompt_tokens":1,}}`)); err == nil {
		t.Error("malformed usage: want error")
	}
}

// decodedUsage is ParseUsage done by encoding/json: the body into a map
// (case-sensitive keys, the last of repeated ones, as the upstream reads
// them), its usage member into the wire struct. The scan must agree with it
// on every valid JSON body.
func decodedUsage(body []byte) (Usage, bool, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return Usage{}, false, err
	}
	if top == nil {
		return Usage{}, false, errors.New("not an object")
	}
	v, found := top["usage"]
	if !found {
		return Usage{}, false, nil
	}
	return decodeUsage(v)
}

func TestParseUsageAgreesWithDecoding(t *testing.T) {
	for _, body := range []string{
		`{"usage":{"Prompt_Tokens":4,"completion_tokens":1}}`,                // case folded: encoding/json matches it
		`{"usage":{"prompt\u005ftokens":4}}`,                                 // escaped key
		"{\"usage\":{\"prompt_tokens_details\":{\"cached_to\u212Aens\":2}}}", // Kelvin sign folds to k
		`{"usage":{"prompt_tokens_details":3}}`,                              // type error
		`{"usage":[1,2]}`,
		`{"usage":"none"}`,
		`{"usage":{"prompt_tokens":1,"x":[1,,2]}}`, // malformed inside a skipped value
		`{"usage":{"prompt_tokens":5,"prompt_tokens":null,"total_tokens":2}}`,
		`{"usage":{"prompt_tokens_details":{"cached_tokens":5},"prompt_tokens_details":null}}`,
		`{"usage":{"prompt_tokens":7} trailing garbage`,
	} {
		got, ok, err := ParseUsage([]byte(body))
		want, wantOK, wantErr := decodedUsage([]byte(body))
		if got != want || ok != wantOK || (err == nil) != (wantErr == nil) {
			t.Errorf("%s:\n scan   %+v %v %v\n decode %+v %v %v", body, got, ok, err, want, wantOK, wantErr)
		}
	}
}

func FuzzParseUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}`))
	f.Add([]byte(`{"usage":{"input_tokens":1e3,"output_tokens":-1}}`))
	f.Add([]byte(`{"usage":{"PROMPT_TOKENS":"9","prompt_tokens_details":{"cached_tokens":1},"output_tokens_details":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		u, ok, err := ParseUsage(body)
		if json.Valid(body) {
			// The walk skips what it does not read without judging it:
			// only valid bodies have one right answer to agree on.
			want, wantOK, wantErr := decodedUsage(body)
			if u != want || ok != wantOK || (err == nil) != (wantErr == nil) {
				t.Fatalf("scan %+v %v %v, decode %+v %v %v", u, ok, err, want, wantOK, wantErr)
			}
		}
		if err != nil {
			return
		}
		if u.Prompt < 0 || u.Completion < 0 || u.Total < u.Prompt+u.Completion {
			t.Fatalf("usage out of bounds: %+v", u)
		}
	})
}

// BenchmarkParseUsage reads the usage of a buffered chat completion, as the
// response_body phase does, next to decoding it with encoding/json.
func BenchmarkParseUsage(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("The time in Lisbon is noon. ", 30) + `"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":260,"completion_tokens":100,"total_tokens":360,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_1"}`)
	for _, parse := range []struct {
		name string
		fn   func([]byte) (Usage, bool, error)
	}{{"scan", ParseUsage}, {"decode", decodedUsage}} {
		b.Run(parse.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if u, ok, err := parse.fn(body); !ok || err != nil || u.Total != 360 {
					b.Fatal(u, ok, err)
				}
			}
		})
	}
}
