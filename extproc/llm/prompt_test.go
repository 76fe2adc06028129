package llm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Prompts as SDKs send them: the scan must read these itself.
var promptSeeds = []struct {
	api  API
	body string
}{
	{ChatCompletions, `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","name":"ana","content":"What time is it in Lisbon? \"now\" \u00e9"}],"stream":true,"max_tokens":50}`},
	{ChatCompletions, `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"Describe "},{"type":"image_url","image_url":{"url":"data:,"}},{"type":"text","text":"this."}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`},
	{ChatCompletions, `{"model":"gpt-4o","messages":[]}`},
	{ChatCompletions, `{"model":"gpt-4o","messages":[null,{"role":"user"}]}`},
	{Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test"}`},
	{Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":["one","two",null]}`},
	{Embeddings, `{"model":"text-embedding-3-small","input":"The food was delicious"}`},
	{Embeddings, `{"model":"text-embedding-3-small","input":["a","b"]}`},
	{Responses, `{"model":"gpt-4.1","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"hé"}]}]}`},
	{Responses, `{"model":"gpt-4.1","input":"Tell me a story"}`},
}

var apis = []API{ChatCompletions, Completions, Embeddings, Responses}

func TestPromptScanReadsSDKRequests(t *testing.T) {
	for _, seed := range promptSeeds {
		if _, _, ok := scanPrompt(seed.api, []byte(seed.body)); !ok {
			t.Errorf("%s: scan left an ordinary request to encoding/json: %s", seed.api, seed.body)
		}
		for _, api := range apis {
			checkPromptAgrees(t, api, []byte(seed.body))
		}
	}
}

// The scan gives up, and encoding/json decides, where they could differ.
func TestPromptScanLeavesDoubtToJSON(t *testing.T) {
	for _, c := range []struct {
		api  API
		body string
	}{
		{ChatCompletions, `{"Messages":[{"role":"user","content":"folded"}]}`},
		{ChatCompletions, `{"messages":[{"ROLE":"user","content":"folded"}]}`},
		{ChatCompletions, `{"messages":[],"messages":[{"role":"user","content":"twice"}]}`},
		{ChatCompletions, `{"messages":[{"role":1,"content":"x"}]}`},
		{ChatCompletions, `{"messages":[1,2]}`},
		{ChatCompletions, `{"messages":[{"content":{"text":"object"}}]}`},
		{ChatCompletions, `{"messages":[{"content":[{"type":"text","text":5}]}]}`},
		{Completions, `{"prompt":[1,2,3]}`},
		{Embeddings, `{"input":7}`},
		{Responses, `{"input":["a","b"]}`},
		{Responses, `{"instructions":3,"input":"x"}`},
	} {
		if _, _, ok := scanPrompt(c.api, []byte(c.body)); ok {
			t.Errorf("%s: scan read a request only encoding/json can judge: %s", c.api, c.body)
		}
		checkPromptAgrees(t, c.api, []byte(c.body))
	}
	// An escaped key is unescaped by the scan as by every JSON parser.
	escaped := []byte(`{"messages":[{"role":"user","c\u006fntent":"escaped"}]}`)
	if msgs, _, ok := scanPrompt(ChatCompletions, escaped); !ok || len(msgs) != 1 || msgs[0].Content != "escaped" {
		t.Errorf("escaped key: scan read %+v %v", msgs, ok)
	}
	checkPromptAgrees(t, ChatCompletions, escaped)
}

// checkPromptAgrees fails when the scan accepts body and reads other texts
// than decodePrompt does.
func checkPromptAgrees(t *testing.T, api API, body []byte) {
	t.Helper()
	if !json.Valid(body) {
		return
	}
	msgs, texts, ok := scanPrompt(api, body)
	if !ok {
		return // decoded: agrees by construction
	}
	wantMsgs, wantTexts, err := decodePrompt(api, body)
	if err != nil {
		t.Fatalf("%s: scan read a request encoding/json rejects (%v): %s", api, err, body)
	}
	if len(msgs) == 0 && len(wantMsgs) == 0 {
		msgs, wantMsgs = nil, nil
	}
	if len(texts) == 0 && len(wantTexts) == 0 {
		texts, wantTexts = nil, nil
	}
	if !reflect.DeepEqual(msgs, wantMsgs) || !reflect.DeepEqual(texts, wantTexts) {
		t.Fatalf("%s: %s\n scan   %q %q\n decode %q %q", api, body, msgs, texts, wantMsgs, wantTexts)
	}
}

func FuzzPromptScanAgreesWithJSON(f *testing.F) {
	for _, seed := range promptSeeds {
		f.Add([]byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, api := range apis {
			checkPromptAgrees(t, api, body)
		}
	})
}

// BenchmarkPrompt reads the prompt of a 1 KB chat request, as the
// request_body phase does with estimation on before tokenizing it, next to
// reading it with encoding/json.
func BenchmarkPrompt(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` +
		strings.Repeat("What time is it in Lisbon? ", 38) + `"}],"max_tokens":100}`)
	read := map[string]func() ([]tokenize.Message, []string, error){
		"scan": func() ([]tokenize.Message, []string, error) {
			r := &Request{api: ChatCompletions, body: body}
			return r.prompt()
		},
		"decode": func() ([]tokenize.Message, []string, error) { return decodePrompt(ChatCompletions, body) },
	}
	for _, name := range []string{"scan", "decode"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if msgs, _, err := read[name](); err != nil || len(msgs) != 2 {
					b.Fatal(msgs, err)
				}
			}
		})
	}
}
