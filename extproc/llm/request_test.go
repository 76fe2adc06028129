package llm

import (
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

func TestParseRequest(t *testing.T) {
	lab := []tokenize.Message{
		{Role: "system", Content: "You are a sarcastic unhelpful assistant."},
		{Role: "user", Content: "Can you tell me the time, please?"},
	}
	tests := []struct {
		name       string
		api        API
		body       string
		model      string
		stream     bool
		include    bool
		maxOut     int64
		wantPrompt int64
	}{
		{"chat string content", ChatCompletions,
			`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a sarcastic unhelpful assistant."},{"role":"user","content":"Can you tell me the time, please?"}],"max_tokens":50}`,
			"gpt-4o", false, false, 50, int64(tokenize.Chat("gpt-4o", lab))},
		{"chat parts content and stream", ChatCompletions,
			`{"model":"gpt-4","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":9,"messages":[{"role":"system","content":[{"type":"text","text":"You are a sarcastic unhelpful assistant."}]},{"role":"user","content":[{"type":"text","text":"Can you tell me "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"the time, please?"}]}]}`,
			"gpt-4", true, true, 9, int64(tokenize.Chat("gpt-4", lab))},
		{"completions prompt array", Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":["hello world","again"]}`,
			"gpt-3.5-turbo-instruct", false, false, 0, int64(tokenize.Text("gpt-3.5", "hello world") + tokenize.Text("gpt-3.5", "again"))},
		{"completions token ids", Completions, `{"prompt":[1,2,3]}`, "", false, false, 0, 3}, // ids count as themselves
		{"embeddings input", Embeddings, `{"model":"text-embedding-3-small","input":"hello world"}`,
			"text-embedding-3-small", false, false, 0, int64(tokenize.Text("text-embedding-3-small", "hello world"))},
		{"responses string input", Responses, `{"model":"gpt-5","input":"hello world","instructions":"be brief","max_output_tokens":7}`,
			"gpt-5", false, false, 7, int64(tokenize.Chat("gpt-5", []tokenize.Message{{Role: "system", Content: "be brief"}}) + tokenize.Text("gpt-5", "hello world"))},
		{"responses message input", Responses, `{"model":"gpt-5","input":[{"role":"user","content":"hello world"}]}`,
			"gpt-5", false, false, 0, int64(tokenize.Chat("gpt-5", []tokenize.Message{{Role: "user", Content: "hello world"}}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest(tt.api, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Model != tt.model || r.Stream != tt.stream || r.IncludeUsage != tt.include || r.MaxOutput != tt.maxOut {
				t.Errorf("got model %q stream %v include %v max %d", r.Model, r.Stream, r.IncludeUsage, r.MaxOutput)
			}
			if got := r.PromptTokens(tt.model); got != tt.wantPrompt {
				t.Errorf("PromptTokens = %d, want %d", got, tt.wantPrompt)
			}
		})
	}
}

func TestParseRequestMalformed(t *testing.T) {
	for _, body := range []string{``, `{`, `not json`, `[1,2]`, `{"max_tokens":"ten"}`} {
		if _, err := ParseRequest(ChatCompletions, []byte(body)); err == nil {
			t.Errorf("ParseRequest(%q) succeeded, want error", body)
		}
	}
	for _, body := range []string{`{"messages":"x"}`, `{"messages":[{"role":1}]}`, `{"messages":[1,2]}`} {
		r, err := ParseRequest(ChatCompletions, []byte(body))
		if err != nil {
			t.Fatalf("ParseRequest(%q): %v", body, err)
		}
		if n := r.PromptTokens("gpt-4o"); n != 0 {
			t.Errorf("PromptTokens(%q) = %d, want 0 for a prompt of the wrong type", body, n)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"input":[{"role":"user","content":[{"type":"input_text","text":"hé"}]}]}`))
	f.Add([]byte(`{"prompt":["a","\xff\xfe"]}`))
	f.Add([]byte(`{"stream":"true","max_tokens":" 100 ","n":"2","prompt":[[1,2],[3]],"best_of":1e1}`))
	f.Add([]byte(`{"messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}],"tools":[{"type":"function"}],"input":[{"output":"x","arguments":3}],"toolConfig":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, api := range []API{ChatCompletions, Completions, Embeddings, Responses} {
			r, err := ParseRequest(api, body)
			if err != nil {
				continue
			}
			if n := r.PromptTokens(r.Model); n < 0 {
				t.Fatalf("negative prompt tokens %d", n)
			}
		}
	})
}

func TestPromptTokensWithinBudget(t *testing.T) {
	long := strings.Repeat("the quick brown fox jumps over the lazy dog ", 2000)
	body := `{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"` + long + `"},{"role":"user","content":"` + long + `"}]}`
	r, err := ParseRequest(ChatCompletions, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	exact, bounded := r.PromptTokensWithin("gpt-4o", 0)
	if bounded || exact != r.PromptTokens("gpt-4o") {
		t.Fatalf("no budget: %d bounded %v", exact, bounded)
	}
	// A budget already spent: every text is bounded by its bytes.
	n, bounded := r.PromptTokensWithin("gpt-4o", time.Nanosecond)
	if !bounded || n < exact || n > int64(len(body))+3*chatFramingBound {
		t.Errorf("spent budget: %d (exact %d, body %d bytes) bounded %v: want an upper bound", n, exact, len(body), bounded)
	}
	c, _ := ParseRequest(Completions, []byte(`{"prompt":["`+long+`","x"]}`))
	if n, bounded := c.PromptTokensWithin("gpt-4o", time.Nanosecond); !bounded || n != int64(len(long)+1) {
		t.Errorf("completions bound %d, want %d", n, len(long)+1)
	}
}

// The request fields are read where and as the upstream reads them: at the
// top level (stream_options one level down), case-sensitively, unescaped,
// the last of repeated keys.
func TestRequestFieldsAsTheUpstreamReadsThem(t *testing.T) {
	tests := []struct {
		body    string
		model   string
		stream  bool
		include bool
		maxOut  int64
	}{
		{`{"stream":true,"stream_options":{"INCLUDE_USAGE":true}}`, "", true, false, 0},
		{`{"Stream":true,"MODEL":"x","Max_Tokens":5}`, "", false, false, 0},
		{`{"str\u0065am":true,"stream_options":{"include\u005fusage":true},"m\u006fdel":"esc"}`, "esc", true, true, 0},
		{`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`, "", true, false, 0},
		{`{"stream_options":{"include_usage":true,"include_usage":false},"stream":true}`, "", true, false, 0},
		{`{"stream":false,"stream":true,"model":"a","model":"b","max_tokens":3,"max_tokens":9}`, "b", true, false, 9},
		{`{"metadata":{"stream":false,"model":"inner","max_tokens":1},"stream":true,"model":"outer"}`, "outer", true, false, 0},
		{`{"stream":true,"stream_options":{"x":{"include_usage":true}}}`, "", true, false, 0},
	}
	for _, tt := range tests {
		r, err := ParseRequest(ChatCompletions, []byte(tt.body))
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		if r.Model != tt.model || r.Stream != tt.stream || r.IncludeUsage != tt.include || r.MaxOutput != tt.maxOut {
			t.Errorf("%s: got model %q stream %v include %v max %d", tt.body, r.Model, r.Stream, r.IncludeUsage, r.MaxOutput)
		}
	}
}

// Choices is what a strict reservation multiplies the completion budget
// by: every completion the upstream generates is billed.
func TestRequestChoices(t *testing.T) {
	tests := []struct {
		api  API
		body string
		want int64
	}{
		{ChatCompletions, `{"n":4,"max_tokens":500}`, 4},
		{ChatCompletions, `{}`, 1},
		{ChatCompletions, `{"n":null}`, 1},
		{ChatCompletions, `{"n":0}`, 1},
		{ChatCompletions, `{"n":-3}`, 1},
		{ChatCompletions, `{"n":1e12}`, maxChoices},
		{ChatCompletions, `{"best_of":5}`, 1}, // chat has no best_of
		{ChatCompletions, `{"metadata":{"n":9},"n":2}`, 2},
		{Completions, `{"n":2,"best_of":5}`, 5},
		{Completions, `{"n":3}`, 3},
		{Completions, `{"best_of":3}`, 3},
		{Responses, `{"n":4}`, 1},
		{Embeddings, `{"n":4}`, 1},
	}
	for _, tt := range tests {
		r, err := ParseRequest(tt.api, []byte(tt.body))
		if err != nil || r.Choices != tt.want {
			t.Errorf("%s %s: choices %v (%v), want %d", tt.api, tt.body, r, err, tt.want)
		}
	}
}

// Python's json reads NaN, Infinity and -Infinity as numbers: a body the
// upstream serves is estimated as one without them.
func TestPromptReadsPythonNumbers(t *testing.T) {
	plain := `{"model":"gpt-4o","temperature":0.5,"messages":[{"role":"user","content":"NaN Infinity -Infinity"}]}`
	want := mustRequest(t, plain).PromptTokens("gpt-4o")
	for _, lit := range []string{"NaN", "Infinity", "-Infinity"} {
		body := strings.Replace(plain, "0.5", lit, 1)
		body = strings.Replace(body, `"messages"`, `"top_p":`+lit+`,"logit_bias":{"1":[`+lit+`]},"messages"`, 1)
		r := mustRequest(t, body)
		if got := r.PromptTokens("gpt-4o"); got != want || r.PromptErr() != nil {
			t.Errorf("%s: estimated %d (%v), want %d", lit, got, r.PromptErr(), want)
		}
	}
	if b, changed := pythonNumbers([]byte(`{"a":"NaN","b":NaNx,"c":[Infinity]}`)); !changed || string(b) != `{"a":"NaN","b":NaNx,"c":[0       ]}` {
		t.Errorf("pythonNumbers: %s %v", b, changed)
	}
}

func mustRequest(t *testing.T, body string) *Request {
	t.Helper()
	r, err := ParseRequest(ChatCompletions, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Each API's budget fields, where its upstream reads them; a body without
// them is readable and asks for no particular budget.
func TestParseRequestProviders(t *testing.T) {
	tests := []struct {
		api             API
		body            string
		maxOut, choices int64
		stream          bool
	}{
		{Messages, `{"model":"claude-sonnet-4","max_tokens":300,"stream":true,"messages":[]}`, 300, 1, true},
		{GenerateContent, `{"contents":[{"parts":[{"text":"hi"}]}]}`, 0, 1, false},
		{GenerateContent, `{"contents":[],"generationConfig":{"maxOutputTokens":500}}`, 500, 1, false},
		{GenerateContent, `{"contents":[],"generationConfig":{"maxOutputTokens":50,"candidateCount":3}}`, 50, 3, false},
		{GenerateContent, `{"contents":[],"generation_config":{"max_output_tokens":70,"candidate_count":2}}`, 70, 2, false},
		{GenerateContent, `{"generationConfig":{"maxOutputTokens":1},"generationConfig":{"maxOutputTokens":9}}`, 9, 1, false},
		{Converse, `{"messages":[]}`, 0, 1, false},
		{Converse, `{"messages":[],"inferenceConfig":{"maxTokens":256,"temperature":0.5}}`, 256, 1, false},
	}
	for _, tt := range tests {
		r, err := ParseRequest(tt.api, []byte(tt.body))
		if err != nil || r.MaxOutput != tt.maxOut || r.Choices != tt.choices || r.Stream != tt.stream || !r.IncludeUsage {
			t.Errorf("%s %s: %+v %v, want max %d choices %d stream %v", tt.api, tt.body, r, err, tt.maxOut, tt.choices, tt.stream)
		}
	}
	for _, bad := range []struct {
		api  API
		body string
	}{
		{GenerateContent, `{"generationConfig":{"maxOutputTokens":"many"}}`},
		{GenerateContent, `{"generationConfig":7}`},
		{Converse, `{"inferenceConfig":{"maxTokens":true}}`},
	} {
		if _, err := ParseRequest(bad.api, []byte(bad.body)); err == nil {
			t.Errorf("%s %s: want an error", bad.api, bad.body)
		}
	}
}

// TestRequestReadAsPydanticReadsIt: Python-served upstreams (vLLM,
// SGLang, LiteLLM) validate a request with pydantic in its lax mode,
// which takes "true" for true and "100" for 100 (and Gemini's JSON
// mapping takes integers as strings): tokengate reads them as those
// upstreams do, so that "stream": "true" is a stream it asks for usage,
// not an unreadable body passed unread.
func TestRequestReadAsPydanticReadsIt(t *testing.T) {
	for _, tt := range []struct {
		body          string
		stream, usage bool
		max, choices  int64
	}{
		{`{"stream":"true","stream_options":{"include_usage":"True"}}`, true, true, 0, 1},
		{`{"stream":" YES ","max_tokens":" 100 "}`, true, false, 100, 1},
		{`{"stream":1,"n":"3"}`, true, false, 0, 3},
		{`{"stream":"off","max_completion_tokens":"2e3"}`, false, false, 2000, 1},
		{`{"stream":0,"stream_options":{"include_usage":"n"}}`, false, false, 0, 1},
	} {
		r, err := ParseRequest(ChatCompletions, []byte(tt.body))
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		if r.Stream != tt.stream || r.IncludeUsage != tt.usage || r.MaxOutput != tt.max || r.Choices != tt.choices {
			t.Errorf("%s: stream %v include_usage %v max %d choices %d", tt.body, r.Stream, r.IncludeUsage, r.MaxOutput, r.Choices)
		}
	}
	r, err := ParseRequest(GenerateContent, []byte(`{"generationConfig":{"maxOutputTokens":"512","candidateCount":"2"}}`))
	if err != nil || r.MaxOutput != 512 || r.Choices != 2 {
		t.Errorf("Gemini's integers as strings: %+v, %v", r, err)
	}
}

// TestReservationReadsEveryLimit: of several output limits, a reservation
// holds the largest (servers differ in which they obey), and a legacy
// Completions request generates its n for each prompt of a prompt array.
func TestReservationReadsEveryLimit(t *testing.T) {
	for _, tt := range []struct {
		api          API
		body         string
		max, choices int64
	}{
		{ChatCompletions, `{"max_tokens":1,"max_completion_tokens":5000}`, 5000, 1},
		{ChatCompletions, `{"max_completion_tokens":7,"max_tokens":90}`, 90, 1},
		{ChatCompletions, `{"max_tokens":-5,"max_output_tokens":0}`, 0, 1},
		{Completions, `{"prompt":["a","b","c","d"],"max_tokens":500}`, 500, 4},
		{Completions, `{"prompt":["a","b"],"n":3,"best_of":5}`, 0, 10},
		{Completions, `{"prompt":[[1,2],[3],[4]],"n":2}`, 0, 6},
		{Completions, `{"prompt":[1,2,3,4],"n":2}`, 0, 2}, // one prompt, as tokens
		{Completions, `{"prompt":"a","n":2}`, 0, 2},
		{Completions, `{"prompt":[],"n":2}`, 0, 2},
		{ChatCompletions, `{"prompt":["a","b"],"n":2}`, 0, 2}, // not Chat's field
	} {
		r, err := ParseRequest(tt.api, []byte(tt.body))
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		if r.MaxOutput != tt.max || r.Choices != tt.choices {
			t.Errorf("%v %s: max %d choices %d, want %d and %d", tt.api, tt.body, r.MaxOutput, r.Choices, tt.max, tt.choices)
		}
	}
	many := `{"prompt":[` + strings.Repeat(`"a",`, 5000) + `"a"],"n":128}`
	if r, err := ParseRequest(Completions, []byte(many)); err != nil || r.Choices != maxCompletions {
		t.Errorf("5,001 prompts of n 128: choices %d, %v; want the cap %d", r.Choices, err, maxCompletions)
	}
}

// TestBackgroundIsTheResponsesAPIs: "background" runs a Responses
// request in the background; other APIs have no such field.
func TestBackgroundIsTheResponsesAPIs(t *testing.T) {
	for _, tt := range []struct {
		api  API
		body string
		want bool
	}{
		{Responses, `{"background":true}`, true},
		{Responses, `{"background":"true"}`, true},
		{Responses, `{"background":true,"background":false}`, false},
		{Responses, `{"metadata":{"background":true}}`, false},
		{ChatCompletions, `{"background":true}`, false},
	} {
		r, err := ParseRequest(tt.api, []byte(tt.body))
		if err != nil || r.Background != tt.want {
			t.Errorf("%v %s: background %v, %v; want %v", tt.api, tt.body, r != nil && r.Background, err, tt.want)
		}
	}
}

// TestGeminiBothNames: proto3's JSON mapping gives a field two names;
// given both, whichever the parser keeps, the larger is what may be
// generated.
func TestGeminiBothNames(t *testing.T) {
	for _, body := range []string{
		`{"generationConfig":{"maxOutputTokens":1},"generation_config":{"max_output_tokens":8000}}`,
		`{"generation_config":{"max_output_tokens":8000},"generationConfig":{"maxOutputTokens":1}}`,
		`{"generationConfig":{"maxOutputTokens":1,"max_output_tokens":8000}}`,
		`{"generationConfig":{"max_output_tokens":8000,"maxOutputTokens":1}}`,
	} {
		r, err := ParseRequest(GenerateContent, []byte(body))
		if err != nil || r.MaxOutput != 8000 {
			t.Errorf("%s: max output %v, %v; want 8000", body, r != nil && r.MaxOutput == 8000, err)
		}
	}
	r, err := ParseRequest(GenerateContent, []byte(`{"generationConfig":{"candidateCount":1,"candidate_count":3}}`))
	if err != nil || r.Choices != 3 {
		t.Errorf("candidateCount 1 and candidate_count 3: %v, %v; want 3 choices", r, err)
	}
}
