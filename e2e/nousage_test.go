package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Buffered answers without usage (issue 19): some OpenAI-compatible
// servers and proxies leave usage out. Such an answer is counted as a
// stream without usage is (TestStreamCharges' "upstream sends no usage"
// cases): the prompt from the request, the completion from what the
// answer carries (every choice's content, refusal and tool-call
// arguments; every output item's text and arguments), source "counted".

// noUsageConfig estimates nothing up front: the prompt is counted when the
// answer settles.
const noUsageConfig = `store: {backend: memory}
estimate_budget: 1s
policies:
- name: nousage
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
`

// nuRig is a stack on noUsageConfig, with a second front before an
// upstream of the test's own that answers scripted bodies (x-nu-answer
// names one), for answer shapes openai-mock does not make: tool calls,
// refusals, function_call output items, echoed request fields.
type nuRig struct {
	*harness.Stack
	admin     string
	up        *nuUpstream
	custom    *front.Front
	customURL string
}

func startNoUsage(t *testing.T) *nuRig {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: noUsageConfig, FakeClock: labClock})
	r := &nuRig{Stack: s, admin: s.Tokengate.Field("admin"), up: &nuUpstream{answers: map[string][]byte{}}}
	r.custom, r.customURL = startCustomFront(t, s, r.up)
	return r
}

// nuUpstream answers 200 with the JSON body registered under the
// request's x-nu-answer.
type nuUpstream struct {
	mu      sync.Mutex
	answers map[string][]byte
}

func (u *nuUpstream) script(name string, body []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers[name] = body
}

func (u *nuUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	body, ok := u.answers[r.Header.Get("x-nu-answer")]
	u.mu.Unlock()
	if !ok {
		http.Error(w, "no such answer", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// nuStory is English prose of about n tokens (o200k_base or cl100k_base),
// with numbers, punctuation and a few non-ASCII characters, unlike the
// mock's one-token words.
func nuStory(model string, n int, seed int) string {
	var b strings.Builder
	for i := 0; tokenize.Text(model, b.String()) < n; i++ {
		fmt.Fprintf(&b, "In chapter %d the fox — whom the people of Lyon called Renard — counted %d stones by the river, then %d more; "+
			"«encore», she said, and the heron (who had seen %d winters) laughed at her arithmetic. ", seed*100+i, 3*i+seed, 7*i+1, 11+i)
	}
	return b.String()
}

// nuJSON marshals v, failing the test if it cannot.
func nuJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nuCounts is what tokengate's metrics say of the policy's settlements.
type nuCounts struct {
	allowed            float64
	prompt, completion map[string]float64 // by source
}

var nuSources = []string{"counted", "estimated", "reported", "unanswered", "none"}

func (r *nuRig) counts(t *testing.T) nuCounts {
	t.Helper()
	c := nuCounts{prompt: map[string]float64{}, completion: map[string]float64{}}
	c.allowed = faultMetric(t, r.admin, "tokengate_requests_total", "policy", "nousage", "decision", "allowed")
	for _, src := range nuSources {
		c.prompt[src] = faultMetric(t, r.admin, "tokengate_tokens_total", "policy", "nousage", "kind", "prompt", "source", src)
		c.completion[src] = faultMetric(t, r.admin, "tokengate_tokens_total", "policy", "nousage", "kind", "completion", "source", src)
	}
	return c
}

// nuCase is one answer without usage, and what its request's prompt and
// its content count in the model's encoding.
type nuCase struct {
	name, path, model string
	request           []byte
	// answer is the scripted body (own upstream); nil for openai-mock,
	// which is asked with x-mock-no-usage.
	answer []byte
	prompt int64
	// content returns the texts the answer generated, read from the
	// answer the client got.
	content func(t *testing.T, answer []byte) []string
	// sources are the acceptable sources: "counted", or for embeddings
	// (nothing generated) "counted" or "estimated".
	sources []string
}

// exchange sends one request through the front f at base and returns the
// answer and the front's record of it.
func (r *nuRig) exchange(t *testing.T, f *front.Front, base, path, key string, body []byte, headers ...string) (int, []byte, front.RequestStats) {
	t.Helper()
	n := len(f.Completed())
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: reading the answer: %v", path, err)
	}
	recs, err := f.WaitCompleted(n+1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := recs[n]
	if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" || rec.StreamLeftOpen || rec.RejectedMutations > 0 || rec.IgnoredModeOverrides > 0 {
		t.Errorf("protocol trouble on %s: %+v", path, rec)
	}
	return resp.StatusCode, got, rec
}

// run sends tc and checks its charge: the exact prompt count plus the
// content's, within ±2 % (the content is counted as one text, the pieces
// here one by one), under one source of tc.sources, in the metadata, the
// metrics and the key's window, settled once.
func (r *nuRig) run(t *testing.T, tc nuCase, f *front.Front, base, key string, headers ...string) {
	t.Helper()
	before := r.counts(t)
	status, got, rec := r.exchange(t, f, base, tc.path, key, tc.request, headers...)
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %.300s", status, got)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(got, &top); err != nil {
		t.Fatalf("the answer is not JSON: %v; %.300s", err, got)
	}
	if u, ok := top["usage"]; ok {
		t.Fatalf("the answer carries usage %s: the upstream was asked for an answer without it", u)
	}
	if tc.answer != nil && !bytes.Equal(got, tc.answer) {
		t.Errorf("the client got %d bytes, the upstream sent %d: the answer was changed on the way", len(got), len(tc.answer))
	}
	pieces := tc.content(t, got)
	var completion int64
	var chars int
	for _, p := range pieces {
		completion += int64(tokenize.Text(tc.model, p))
		chars += len(p)
	}
	want := tc.prompt + completion
	md := metadataOf(t, rec)
	after := r.counts(t)
	moved := func(m, m0 map[string]float64, src string) float64 { return m[src] - m0[src] }
	used := faultUsage(t, r.admin, "nousage", key).GetUsedTokens()
	dev := 0.0
	if want > 0 {
		dev = 100 * float64(int64(md.total)-want) / float64(want)
	}
	t.Logf("%s: prompt %d + content %d tokens (%d texts, %d bytes) = %d; tokengate charged %d prompt + %d completion = %d (%+.2f %%), source %q; metrics: prompt %v, completion %v under %q; window %d; settlements +%v",
		tc.name, tc.prompt, completion, len(pieces), chars, want, md.prompt, md.completion, md.total, dev, md.source,
		moved(after.prompt, before.prompt, md.source), moved(after.completion, before.completion, md.source), md.source, used, after.allowed-before.allowed)

	if md.decision != "allowed" || !slices.Contains(tc.sources, md.source) {
		t.Errorf("metadata decision %q source %q, want allowed, source one of %v", md.decision, md.source, tc.sources)
	}
	if int64(md.prompt) != tc.prompt {
		t.Errorf("charged %d prompt tokens, want the request's %d exactly", md.prompt, tc.prompt)
	}
	if md.prompt+md.completion != md.total {
		t.Errorf("metadata %+v: the parts do not add up", md)
	}
	if !withinPct(md.total, int(want), 2) || (completion == 0) != (md.completion == 0) {
		t.Errorf("charged %d (%d prompt + %d completion), want within 2 %% of %d: the prompt's %d plus the %d tokens of the content",
			md.total, md.prompt, md.completion, want, tc.prompt, completion)
	}
	for _, src := range nuSources {
		wantP, wantC := 0.0, 0.0
		if src == md.source {
			wantP, wantC = float64(md.prompt), float64(md.completion)
		}
		if p, c := moved(after.prompt, before.prompt, src), moved(after.completion, before.completion, src); p != wantP || c != wantC {
			t.Errorf("tokengate_tokens_total{source=%q} moved by %v prompt + %v completion, want %v + %v", src, p, c, wantP, wantC)
		}
	}
	if after.allowed-before.allowed != 1 {
		t.Errorf("%v settlements, want 1", after.allowed-before.allowed)
	}
	if used != int64(md.total) {
		t.Errorf("the window holds %d, the metadata says %d were charged", used, md.total)
	}
}

// nuChatPrompt is tokengate's (and the API's) count of one user message.
func nuChatPrompt(model, content string) int64 {
	return int64(tokenize.Chat(model, []tokenize.Message{{Role: "user", Content: content}}))
}

// The readers of generated text in an answer, as a client reads it.
func nuChatContent(t *testing.T, answer []byte) []string {
	t.Helper()
	var a struct {
		Choices []struct {
			Message struct {
				Content   *string `json:"content"`
				Refusal   *string `json:"refusal"`
				ToolCalls []struct {
					Function struct {
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || len(a.Choices) == 0 {
		t.Fatalf("not a chat completion: %v; %.300s", err, answer)
	}
	var out []string
	for _, c := range a.Choices {
		if c.Message.Content != nil {
			out = append(out, *c.Message.Content)
		}
		if c.Message.Refusal != nil {
			out = append(out, *c.Message.Refusal)
		}
		for _, tc := range c.Message.ToolCalls {
			out = append(out, tc.Function.Arguments)
		}
	}
	return out
}

func nuCompletionsContent(t *testing.T, answer []byte) []string {
	t.Helper()
	var a struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || len(a.Choices) == 0 {
		t.Fatalf("not a completion: %v; %.300s", err, answer)
	}
	var out []string
	for _, c := range a.Choices {
		out = append(out, c.Text)
	}
	return out
}

func nuResponsesContent(t *testing.T, answer []byte) []string {
	t.Helper()
	var a struct {
		Output []struct {
			Type      string `json:"type"`
			Arguments string `json:"arguments"`
			Content   []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || len(a.Output) == 0 {
		t.Fatalf("not a response: %v; %.300s", err, answer)
	}
	var out []string
	for _, o := range a.Output {
		for _, c := range o.Content {
			out = append(out, c.Text)
		}
		if o.Arguments != "" {
			out = append(out, o.Arguments)
		}
	}
	return out
}

func nuNothing(*testing.T, []byte) []string { return nil }

// nuEmbedding is a short vector, as an embeddings answer carries.
func nuEmbedding(seed int) []float64 {
	v := make([]float64, 16)
	for i := range v {
		v[i] = math.Round(math.Sin(float64(seed*16+i))*1e6) / 1e6
	}
	return v
}

func TestNoUsageBufferedCounted(t *testing.T) {
	r := startNoUsage(t)

	t.Run("own upstream", func(t *testing.T) {
		const gpt, instruct, embed = "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"
		ask := "Tell me a long story about the fox and the heron."
		story := nuStory(gpt, 1000, 1)

		weatherArgs := string(nuJSON(t, map[string]any{"city": "Lyon", "days": 5, "units": "metric",
			"notes": "Include the river level at the Pont Bonaparte, the wind on the Fourvière hill, and whether the heron should fly south before the frost."}))
		routeArgs := string(nuJSON(t, map[string]any{"from": "Lyon Part-Dieu", "to": "Genève Cornavin", "depart_after": "2026-01-05T08:30:00+01:00",
			"avoid": []string{"tolls", "ferries"}, "stops": []map[string]any{{"name": "Annecy", "minutes": 45}, {"name": "Bellegarde", "minutes": 10}}}))
		refusal := "I'm sorry, but I can't help with planning how to trap the heron. If you are worried about the fish in your pond, " +
			"I can suggest humane deterrents such as netting, decoys or motion-activated sprinklers."
		chatTools := nuJSON(t, map[string]any{
			"id": "chatcmpl-nu-tools", "object": "chat.completion", "created": 0, "model": gpt,
			"choices": []any{
				map[string]any{"index": 0, "finish_reason": "tool_calls", "message": map[string]any{
					"role": "assistant", "content": "I'll look both up.", "refusal": nil,
					"tool_calls": []any{
						map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": weatherArgs}},
						map[string]any{"id": "call_2", "type": "function", "function": map[string]any{"name": "plan_route", "arguments": routeArgs}},
					}}},
				map[string]any{"index": 1, "finish_reason": "stop", "message": map[string]any{
					"role": "assistant", "content": nil, "refusal": refusal}},
			},
			"system_fingerprint": "fp_nu",
		})

		completions := []string{nuStory(instruct, 500, 2), nuStory(instruct, 450, 3)}
		instructPrompt := "Once upon a time, by the Rhône,"

		instructions := "You are a narrator who also checks the weather."
		responsesInput := "Tell me a story about the fox and check the weather in Lyon."
		responsesStory := nuStory(gpt, 800, 4)
		tools := []any{map[string]any{"type": "function", "name": "get_weather",
			"description": "Get the forecast for a city: temperature, wind, rain and river levels, day by day, for up to ten days ahead.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"city": map[string]any{"type": "string"}, "days": map[string]any{"type": "integer"}}}}}
		responsesAnswer := nuJSON(t, map[string]any{
			"id": "resp_nu", "object": "response", "created_at": 0, "status": "completed", "model": gpt,
			"output": []any{
				map[string]any{"type": "message", "id": "msg_nu", "status": "completed", "role": "assistant",
					"content": []any{map[string]any{"type": "output_text", "text": responsesStory, "annotations": []any{}}}},
				map[string]any{"type": "function_call", "id": "fc_nu", "call_id": "call_nu", "name": "get_weather",
					"arguments": weatherArgs, "status": "completed"},
			},
			// Echoes of the request, which generate nothing.
			"instructions": instructions, "tools": tools, "tool_choice": "auto", "text": map[string]any{"format": map[string]any{"type": "text"}},
		})

		embedInput := []string{"The fox crossed the Rhône at dawn.", "The heron counted the stones, twice, and then a third time."}

		cases := []nuCase{
			{
				name: "chat, ~1,000 tokens of content", path: "/v1/chat/completions", model: gpt,
				request: nuJSON(t, map[string]any{"model": gpt, "messages": []map[string]string{{"role": "user", "content": ask}}}),
				answer: nuJSON(t, map[string]any{
					"id": "chatcmpl-nu", "object": "chat.completion", "created": 0, "model": gpt,
					"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
						"message": map[string]any{"role": "assistant", "content": story, "refusal": nil}}},
				}),
				prompt: nuChatPrompt(gpt, ask), content: nuChatContent, sources: []string{"counted"},
			},
			{
				name: "chat, n=2: tool_calls arguments and a refusal", path: "/v1/chat/completions", model: gpt,
				request: nuJSON(t, map[string]any{"model": gpt, "n": 2, "messages": []map[string]string{{"role": "user", "content": ask}}}),
				answer:  chatTools, prompt: nuChatPrompt(gpt, ask), content: nuChatContent, sources: []string{"counted"},
			},
			{
				name: "legacy completions, n=2", path: "/v1/completions", model: instruct,
				request: nuJSON(t, map[string]any{"model": instruct, "prompt": instructPrompt, "n": 2, "max_tokens": 600}),
				answer: nuJSON(t, map[string]any{
					"id": "cmpl-nu", "object": "text_completion", "created": 0, "model": instruct,
					"choices": []any{
						map[string]any{"index": 0, "text": completions[0], "logprobs": nil, "finish_reason": "stop"},
						map[string]any{"index": 1, "text": completions[1], "logprobs": nil, "finish_reason": "stop"},
					},
				}),
				prompt: int64(tokenize.Text(instruct, instructPrompt)), content: nuCompletionsContent, sources: []string{"counted"},
			},
			{
				name: "responses: message text and function_call arguments", path: "/v1/responses", model: gpt,
				request: nuJSON(t, map[string]any{"model": gpt, "instructions": instructions, "input": responsesInput, "tools": tools}),
				answer:  responsesAnswer,
				// tokengate counts instructions as a system message, a
				// string input as text and the tools offered as their JSON
				// (extproc/llm PromptTokensWithin): the upstream bills
				// them all as prompt.
				prompt: int64(tokenize.Chat(gpt, []tokenize.Message{{Role: "system", Content: instructions}}) + tokenize.Text(gpt, responsesInput) +
					tokenize.Text(gpt, string(nuJSON(t, tools)))),
				content: nuResponsesContent, sources: []string{"counted"},
			},
			{
				name: "embeddings", path: "/v1/embeddings", model: embed,
				request: nuJSON(t, map[string]any{"model": embed, "input": embedInput}),
				answer: nuJSON(t, map[string]any{
					"object": "list", "model": embed,
					"data": []any{
						map[string]any{"object": "embedding", "index": 0, "embedding": nuEmbedding(0)},
						map[string]any{"object": "embedding", "index": 1, "embedding": nuEmbedding(1)},
					},
				}),
				prompt:  int64(tokenize.Text(embed, embedInput[0]) + tokenize.Text(embed, embedInput[1])),
				content: nuNothing, sources: []string{"counted", "estimated"},
			},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				name := fmt.Sprintf("nu-own-%d", i)
				r.up.script(name, tc.answer)
				r.run(t, tc, r.custom, r.customURL, name, "x-nu-answer", name)
			})
		}
	})

	t.Run("openai-mock x-mock-no-usage", func(t *testing.T) {
		const gpt, instruct, embed = "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"
		ask := "Tell me a long story about the fox and the heron."
		embedInput := "The fox crossed the Rhône at dawn."
		cases := []nuCase{
			{
				name: "chat, 1,000 completion tokens", path: "/v1/chat/completions", model: gpt,
				request: nuJSON(t, map[string]any{"model": gpt, "messages": []map[string]string{{"role": "user", "content": ask}}}),
				prompt:  nuChatPrompt(gpt, ask), content: nuChatContent, sources: []string{"counted"},
			},
			{
				name: "legacy completions, 1,000 completion tokens", path: "/v1/completions", model: instruct,
				request: nuJSON(t, map[string]any{"model": instruct, "prompt": ask}),
				prompt:  int64(tokenize.Text(instruct, ask)), content: nuCompletionsContent, sources: []string{"counted"},
			},
			{
				name: "responses, 1,000 completion tokens", path: "/v1/responses", model: gpt,
				request: nuJSON(t, map[string]any{"model": gpt, "input": ask}),
				prompt:  int64(tokenize.Text(gpt, ask)), content: nuResponsesContent, sources: []string{"counted"},
			},
			{
				name: "embeddings", path: "/v1/embeddings", model: embed,
				request: nuJSON(t, map[string]any{"model": embed, "input": embedInput}),
				prompt:  int64(tokenize.Text(embed, embedInput)), content: nuNothing, sources: []string{"counted", "estimated"},
			},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r.run(t, tc, r.Front, r.URL, fmt.Sprintf("nu-mock-%d", i), "x-mock-no-usage", "true", "x-mock-completion-tokens", "1000")
			})
		}
	})
}
