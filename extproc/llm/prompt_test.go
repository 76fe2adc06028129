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
	{Messages, `{"model":"claude-sonnet-4","max_tokens":1024,"system":"Be brief.","messages":[{"role":"user","content":"Hello, Claude"}]}`},
	{Messages, `{"model":"claude-sonnet-4","max_tokens":64,"system":[{"type":"text","text":"cached","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","data":"AAAA"}}]},{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"tool_use","id":"t","name":"f","input":{"city":"Lisbon"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"noon"}]}]}]}`},
	{GenerateContent, `{"systemInstruction":{"parts":[{"text":"Be brief."}]},"contents":[{"role":"user","parts":[{"text":"Hi"},{"inlineData":{"mimeType":"image/png","data":"AA"}}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{"a":1}}}]}],"generationConfig":{"maxOutputTokens":50}}`},
	{GenerateContent, `{"system_instruction":{"parts":{"text":"snake"}},"contents":[{"parts":[{"text":"x"}]}]}`},
	{Converse, `{"system":[{"text":"Be brief."}],"messages":[{"role":"user","content":[{"text":"Hi"},{"toolResult":{"toolUseId":"t","content":[{"text":"noon"},{"json":{"t":12}}]}}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"f","input":{"q":"x"}}},{"reasoningContent":{"reasoningText":{"text":"why"}}}]}],"inferenceConfig":{"maxTokens":100}}`},
}

var apis = []API{ChatCompletions, Completions, Embeddings, Responses, Messages, GenerateContent, Converse}

func TestPromptReadsSDKRequests(t *testing.T) {
	for _, seed := range promptSeeds {
		msgs, texts, err := promptOf(seed.api, []byte(seed.body))
		if err != nil || (len(msgs)+len(texts) == 0 && !strings.Contains(seed.body, `"messages":[]`)) {
			t.Errorf("%s: read %q %q (%v) of %s", seed.api, msgs, texts, err, seed.body)
		}
		for _, api := range apis {
			checkPromptAgrees(t, api, []byte(seed.body))
		}
	}
	// What each API's prompt holds, text by text.
	for _, c := range []struct {
		api  API
		body string
		want string
	}{
		{Messages, promptSeeds[11].body, `cached|look|hm{"city":"Lisbon"}|noon`},
		{GenerateContent, promptSeeds[12].body, `Be brief.|Hi|{"a":1}`},
		{GenerateContent, promptSeeds[13].body, `snake|x`},
		{Converse, promptSeeds[14].body, `Be brief.|Hinoon{"t":12}|{"q":"x"}why`},
	} {
		msgs, _, _ := promptOf(c.api, []byte(c.body))
		var got []string
		for _, m := range msgs {
			got = append(got, m.Content)
		}
		if strings.Join(got, "|") != c.want {
			t.Errorf("%s: read %q, want %q", c.api, strings.Join(got, "|"), c.want)
		}
	}
}

// The prompt is read as the upstream reads it: case-sensitively, the last
// of repeated members, escaped keys unescaped.
func TestPromptAsTheUpstreamReadsIt(t *testing.T) {
	for _, c := range []struct {
		api  API
		body string
		want int // messages read
	}{
		{ChatCompletions, `{"Messages":[{"role":"user","content":"folded"}]}`, 0},
		{ChatCompletions, `{"messages":[{"ROLE":"user","CONTENT":"folded"}]}`, 1},
		{ChatCompletions, `{"messages":[],"messages":[{"role":"user","content":"twice"}]}`, 1},
		{ChatCompletions, `{"messages":[{"role":"user","c\u006fntent":"escaped"}]}`, 1},
		{Messages, `{"System":"folded","messages":[]}`, 0},
	} {
		msgs, _, err := promptOf(c.api, []byte(c.body))
		if err != nil || len(msgs) != c.want {
			t.Errorf("%s: %s: %d messages (%v), want %d", c.api, c.body, len(msgs), err, c.want)
		}
		checkPromptAgrees(t, c.api, []byte(c.body))
	}
	if msgs, _, _ := promptOf(ChatCompletions, []byte(`{"messages":[{"role":"user","c\u006fntent":"escaped"}]}`)); msgs[0].Content != "escaped" {
		t.Errorf("escaped key: %+v", msgs)
	}
	if _, _, err := promptOf(Responses, []byte(`{"instructions":3,"input":"x"}`)); err == nil {
		t.Error("instructions of another type: want an error")
	}
}

// checkPromptAgrees holds promptOf to the reference on a valid body.
func checkPromptAgrees(t *testing.T, api API, body []byte) {
	t.Helper()
	top, err := ref(body)
	if err != nil || hasRawJSON(top) {
		// A tool's input is read as its raw JSON, which a decoded map
		// cannot give back byte for byte.
		return
	}
	msgs, texts, err := promptOf(api, body)
	m, isObj := top.(map[string]any)
	if !isObj {
		if err == nil {
			t.Fatalf("%s: %s is not an object, promptOf took it", api, body)
		}
		return
	}
	if err != nil {
		return // a prompt member of the wrong type: the reference has no answer to compare
	}
	var wantMsgs []tokenize.Message
	var wantTexts []string
	sys := func(v any) {
		if s := refFlatten(v, 0); s != "" {
			wantMsgs = append(wantMsgs, tokenize.Message{Role: "system", Content: s})
		}
	}
	switch api {
	case ChatCompletions:
		wantMsgs = refMessages(m["messages"], "content")
	case Completions:
		wantTexts = refStrings(m["prompt"], m)
	case Embeddings:
		wantTexts = refStrings(m["input"], m)
	case Responses:
		if s, _ := m["instructions"].(string); s != "" {
			wantMsgs = append(wantMsgs, tokenize.Message{Role: "system", Content: s})
		}
		if l, ok := m["input"].([]any); ok && !allStrings(l) {
			wantMsgs = append(wantMsgs, refMessages(l, "content")...)
		} else {
			wantTexts = refStrings(m["input"], m)
		}
	case Messages, Converse:
		sys(m["system"])
		wantMsgs = append(wantMsgs, refMessages(m["messages"], "content")...)
	case GenerateContent:
		si, has := m["systemInstruction"]
		if !has || si == nil {
			si = m["system_instruction"]
		}
		sys(get(si, "parts"))
		wantMsgs = append(wantMsgs, refMessages(m["contents"], "parts")...)
	}
	if len(msgs) == 0 && len(wantMsgs) == 0 {
		msgs, wantMsgs = nil, nil
	}
	if len(texts) == 0 && len(wantTexts) == 0 {
		texts, wantTexts = nil, nil
	}
	if !reflect.DeepEqual(msgs, wantMsgs) || !reflect.DeepEqual(texts, wantTexts) {
		t.Fatalf("%s: %s\n scan %q %q\n  ref %q %q", api, body, msgs, texts, wantMsgs, wantTexts)
	}
}

func refStrings(v any, _ map[string]any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := []string{}
		for _, e := range x {
			switch s := e.(type) {
			case string:
				out = append(out, s)
			case nil:
				out = append(out, "")
			default:
				return nil // token ids
			}
		}
		return out
	}
	return nil
}

func allStrings(l []any) bool {
	for _, e := range l {
		if _, ok := e.(string); !ok {
			return false
		}
	}
	return true
}

// hasRawJSON reports a member read as raw JSON holding an object or array.
func hasRawJSON(v any) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if hasRawJSON(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			switch k {
			case "input", "json", "args", "response":
				switch e.(type) {
				case map[string]any, []any, json.Number, bool:
					return true
				}
			}
			if hasRawJSON(e) {
				return true
			}
		}
	}
	return false
}

func FuzzPromptAgreesWithReference(f *testing.F) {
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
			msgs, texts, _, err := r.prompt()
			return msgs, texts, err
		},
	}
	for _, name := range []string{"scan"} {
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
