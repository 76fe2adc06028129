package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// The provider suite (issue 15): Anthropic Messages, Gemini (both stream
// framings), Bedrock Converse and OpenAI chat, through the real binaries
// behind the front, under one policy that names no counter_key header, so
// each API's own key source applies. What the mock reports is read by the
// client from the answer itself; what tokengate charged from its metrics,
// its admin API (the key's window), the dynamic metadata the front kept
// and its decision log.

// pvPolicy is the suite's one policy.
const pvPolicy = "providers"

// pvLimit is large enough that nothing is refused.
const pvLimit = 100_000_000

// pvConfig names no counter_key header, so each API's own key source
// applies (README, "APIs and usage"): Anthropic's x-api-key, Gemini's
// x-goog-api-key, the access key ID of Bedrock's SigV4 authorization,
// OpenAI's api-key (the first of its default list).
var pvConfig = fmt.Sprintf(`store: {backend: memory}
estimate_budget: 1s
policies:
- name: %s
  tokens_per_minute: %d
`, pvPolicy, pvLimit)

// The prompt of every request: one system text, one user message.
const (
	pvSystem = "You are a patient narrator."
	pvUser   = "Tell me about the fox and the dog, slowly."
)

// pvPrompt is the prompt the mock reports for pvSystem and pvUser, and
// tokengate estimates: chat's count of a system message and the user's.
func pvPrompt(model string) int {
	return tokenize.Chat(model, []tokenize.Message{{Role: "system", Content: pvSystem}, {Role: "user", Content: pvUser}})
}

// pvFraming is how an answer comes: buffered, or a stream's framing.
type pvFraming int

const (
	pvBuffered pvFraming = iota
	pvSSE
	pvArray       // Gemini's streamed JSON array
	pvEventStream // Bedrock's eventstream frames
)

func (f pvFraming) String() string {
	return [...]string{"buffered", "sse", "json array", "eventstream"}[f]
}

// pvProvider is what the calls of one API share.
type pvProvider struct {
	name  string // openai, anthropic, gemini, bedrock: how events are read
	model string // as the mock counts it (unescaped)
	// setKey sets key where the API's callers send it.
	setKey func(h http.Header, key string)
	// decoy is a header some other API is keyed by but this one is not:
	// a request carries it, and its window must stay empty.
	decoy string
	// breakdown are the x-mock-* pairs of the breakdowns the mock
	// reports for this API.
	breakdown []string
}

// pvBedrockAuth is a SigV4 authorization header of access key ID akid.
func pvBedrockAuth(akid string) string {
	return "AWS4-HMAC-SHA256 Credential=" + akid + "/20261130/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=0"
}

var (
	pvOpenAI = &pvProvider{name: "openai", model: "gpt-4o",
		setKey: func(h http.Header, k string) { h.Set("api-key", k) }, decoy: "x-api-key"}
	pvAnthropic = &pvProvider{name: "anthropic", model: "claude-sonnet-4-5",
		setKey: func(h http.Header, k string) { h.Set("x-api-key", k); h.Set("anthropic-version", "2023-06-01") },
		decoy:  "api-key", breakdown: []string{"x-mock-cache-read", "5", "x-mock-cache-write", "3"}}
	pvGemini = &pvProvider{name: "gemini", model: "gemini-2.5-flash",
		setKey: func(h http.Header, k string) { h.Set("x-goog-api-key", k) },
		decoy:  "api-key", breakdown: []string{"x-mock-cache-read", "5", "x-mock-reasoning", "7"}}
	pvBedrock = &pvProvider{name: "bedrock", model: "amazon.nova-pro-v1:0",
		setKey: func(h http.Header, k string) { h.Set("authorization", pvBedrockAuth(k)) },
		decoy:  "api-key", breakdown: []string{"x-mock-cache-read", "5", "x-mock-cache-write", "3"}}
	// pvInvoke is Anthropic Messages on Bedrock (InvokeModel): SigV4 like
	// Bedrock, events like Anthropic's, base64 in eventstream chunks.
	pvInvoke = &pvProvider{name: "anthropic", model: "anthropic.claude-3-5-haiku-20241022-v1:0",
		setKey: func(h http.Header, k string) { h.Set("authorization", pvBedrockAuth(k)) }, decoy: "api-key"}
)

// pvCall is one kind of request: an API, a path, a body, and the framing
// of its answer.
type pvCall struct {
	name    string
	p       *pvProvider
	path    string
	framing pvFraming
	body    []byte
	// chunks: eventstream frames carry base64 Anthropic events
	// (InvokeModelWithResponseStream).
	chunks bool
}

func (c pvCall) stream() bool { return c.framing != pvBuffered }

// pvJSON marshals v, which cannot fail for the maps used here.
func pvJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// pvCalls are the suite's requests by name: each API buffered and
// streamed, Gemini in both stream framings.
func pvCalls() map[string]pvCall {
	anthropic := func(stream bool) []byte {
		return pvJSON(map[string]any{"model": pvAnthropic.model, "max_tokens": 500, "stream": stream, "system": pvSystem,
			"messages": []any{map[string]any{"role": "user", "content": pvUser}}})
	}
	gemini := pvJSON(map[string]any{
		"systemInstruction": map[string]any{"parts": []any{map[string]any{"text": pvSystem}}},
		"contents":          []any{map[string]any{"role": "user", "parts": []any{map[string]any{"text": pvUser}}}},
		"generationConfig":  map[string]any{"maxOutputTokens": 500}})
	converse := pvJSON(map[string]any{"system": []any{map[string]any{"text": pvSystem}},
		"messages":        []any{map[string]any{"role": "user", "content": []any{map[string]any{"text": pvUser}}}},
		"inferenceConfig": map[string]any{"maxTokens": 500}})
	openai := func(stream bool) []byte {
		return pvJSON(map[string]any{"model": pvOpenAI.model, "stream": stream,
			"messages": []any{map[string]any{"role": "system", "content": pvSystem}, map[string]any{"role": "user", "content": pvUser}}})
	}
	invoke := pvJSON(map[string]any{"anthropic_version": "bedrock-2023-05-31", "max_tokens": 500, "system": pvSystem,
		"messages": []any{map[string]any{"role": "user", "content": pvUser}}})
	const gem, bed = "/v1beta/models/gemini-2.5-flash:", "/model/amazon.nova-pro-v1%3A0/"
	calls := []pvCall{
		{name: "anthropic buffered", p: pvAnthropic, path: "/v1/messages", framing: pvBuffered, body: anthropic(false)},
		{name: "anthropic stream", p: pvAnthropic, path: "/v1/messages", framing: pvSSE, body: anthropic(true)},
		{name: "gemini buffered", p: pvGemini, path: gem + "generateContent", framing: pvBuffered, body: gemini},
		{name: "gemini sse", p: pvGemini, path: gem + "streamGenerateContent?alt=sse", framing: pvSSE, body: gemini},
		{name: "gemini array", p: pvGemini, path: gem + "streamGenerateContent", framing: pvArray, body: gemini},
		{name: "bedrock converse", p: pvBedrock, path: bed + "converse", framing: pvBuffered, body: converse},
		{name: "bedrock converse-stream", p: pvBedrock, path: bed + "converse-stream", framing: pvEventStream, body: converse},
		{name: "openai buffered", p: pvOpenAI, path: "/v1/chat/completions", framing: pvBuffered, body: openai(false)},
		{name: "openai stream", p: pvOpenAI, path: "/v1/chat/completions", framing: pvSSE, body: openai(true)},
		{name: "bedrock invoke-with-response-stream", p: pvInvoke,
			path: "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream", framing: pvEventStream, body: invoke, chunks: true},
	}
	m := map[string]pvCall{}
	for _, c := range calls {
		m[c.name] = c
	}
	return m
}

// pvPick returns the named calls, in order.
func pvPick(t *testing.T, names ...string) []pvCall {
	t.Helper()
	all := pvCalls()
	out := make([]pvCall, len(names))
	for i, n := range names {
		c, ok := all[n]
		if !ok {
			t.Fatalf("no call %q", n)
		}
		out[i] = c
	}
	return out
}

// pvRig is a stack on pvConfig, warmed up.
type pvRig struct {
	*harness.Stack
	admin string
	ids   int
}

// pvStart starts a stack and sends one streamed chat through it, so that
// the tests start on a warm tokengate (see startRig).
func pvStart(t *testing.T) *pvRig {
	return pvStartWith(t, nil)
}

// pvStartWith is pvStart with the ext_proc filter changed first.
func pvStartWith(t *testing.T, filter func(*extprocv3.ExternalProcessor)) *pvRig {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: pvConfig, FakeClock: labClock, Filter: filter})
	r := &pvRig{Stack: s, admin: s.Tokengate.Field("admin")}
	if filter != nil {
		// A changed filter is the test's subject: its warm-up would be
		// judged by envoy.yaml's filter.
		return r
	}
	resp, rid := r.send(t, pvPick(t, "openai stream")[0], "pv-warm-up", "x-mock-completion-tokens", "3")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.waitSettled(t, "warm-up", 1)
	r.record(t, rid)
	return r
}

// send posts c with key and the extra header pairs, each request with an
// x-request-id of its own (returned) by which the front's record is found.
// The body is returned unread; it is closed when the test ends.
func (r *pvRig) send(t *testing.T, c pvCall, key string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, r.URL+c.path, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c.p.setKey(req.Header, key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r.ids++
	rid := fmt.Sprintf("pv-%d", r.ids)
	req.Header.Set("x-request-id", rid)
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.name, c.path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, rid
}

// record waits for the front's record of request rid and checks that
// tokengate spoke the protocol as Envoy expects.
func (r *pvRig) record(t *testing.T, rid string) front.RequestStats {
	t.Helper()
	var rec front.RequestStats
	harness.Eventually(t, 10*time.Second, func() error {
		for _, x := range r.Front.Completed() {
			if x.RequestID == rid {
				rec = x
				return nil
			}
		}
		return fmt.Errorf("the front has no record of request %s yet", rid)
	})
	if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" || rec.StreamLeftOpen || rec.RejectedMutations > 0 || rec.IgnoredModeOverrides > 0 {
		t.Errorf("protocol trouble on %s %s: %+v", rec.Method, rec.Path, rec)
	}
	return rec
}

// pvCharge is what tokengate's metrics say it charged under the policy,
// per kind and source, and how many requests it finished.
type pvCharge struct {
	requests int
	// unreadable counts request bodies tokengate could not read: a
	// well-formed request of any API must be read.
	unreadable int
	// tokens[source][kind]
	tokens map[string]map[string]int
}

var (
	pvSources = []string{"reported", "counted", "estimated", "unanswered", "none"}
	pvKinds   = []string{"prompt", "completion", "cached", "cache_write", "reasoning"}
)

func (r *pvRig) charges(t *testing.T) pvCharge {
	t.Helper()
	c := pvCharge{requests: int(faultMetric(t, r.admin, "tokengate_requests_total", "policy", pvPolicy)),
		unreadable: int(faultMetric(t, r.admin, "tokengate_unreadable_bodies_total", "policy", pvPolicy)),
		tokens:     map[string]map[string]int{}}
	for _, src := range pvSources {
		c.tokens[src] = map[string]int{}
		for _, k := range pvKinds {
			c.tokens[src][k] = int(faultMetric(t, r.admin, "tokengate_tokens_total", "policy", pvPolicy, "kind", k, "source", src))
		}
	}
	return c
}

// minus is what moved since before; sources and kinds that did not move
// are left out, so a map prints as just what changed.
func (c pvCharge) minus(before pvCharge) pvCharge {
	d := pvCharge{requests: c.requests - before.requests, unreadable: c.unreadable - before.unreadable, tokens: map[string]map[string]int{}}
	for src, kinds := range c.tokens {
		for k, v := range kinds {
			if n := v - before.tokens[src][k]; n != 0 {
				if d.tokens[src] == nil {
					d.tokens[src] = map[string]int{}
				}
				d.tokens[src][k] = n
			}
		}
	}
	return d
}

// waitSettled waits until the policy has n decisions, failing at once on
// more: a request counted twice was settled twice.
func (r *pvRig) waitSettled(t *testing.T, step string, n int) {
	t.Helper()
	waitDecisions(t, step, r.admin, pvPolicy, float64(n))
}

// window is what key's window holds: charged plus held, read from the
// store through the admin API.
func (r *pvRig) window(t *testing.T, key string) int {
	t.Helper()
	return int(faultUsage(t, r.admin, pvPolicy, key).GetUsedTokens())
}

// decisions are tokengate's decision log lines for key (by its hash
// prefix, the only form in which a key is logged).
func (r *pvRig) decisions(key string) []string {
	h := sha256Hex([]byte(key))[:8]
	var out []string
	for line := range strings.Lines(r.Tokengate.Stderr()) {
		if strings.Contains(line, `"decision"`) && strings.Contains(line, fmt.Sprintf(`"key": %q`, h)) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// unreadableLines are key's log lines about a request body tokengate
// could not read.
func (r *pvRig) unreadableLines(key string) []string {
	h := sha256Hex([]byte(key))[:8]
	var out []string
	for line := range strings.Lines(r.Tokengate.Stderr()) {
		if strings.Contains(line, "not readable") && strings.Contains(line, fmt.Sprintf(`"key": %q`, h)) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// settledLines are key's log lines that give a settlement's source.
func (r *pvRig) settledLines(key string) []string {
	var out []string
	for _, l := range r.decisions(key) {
		if strings.Contains(l, `"source":`) {
			out = append(out, l)
		}
	}
	return out
}

// pvMD is the tokengate dynamic metadata of one request.
type pvMD struct {
	prompt, completion, total, cached, cacheWrite, reasoning int
	decision, source                                         string
}

func pvMetadata(t *testing.T, rec front.RequestStats) pvMD {
	t.Helper()
	f := rec.Metadata.GetFields()["tokengate"].GetStructValue().GetFields()
	if f == nil {
		t.Fatalf("record of %s has no tokengate metadata: %+v", rec.Path, rec)
	}
	n := func(k string) int { return int(f[k].GetNumberValue()) }
	md := pvMD{prompt: n("prompt_tokens"), completion: n("completion_tokens"), total: n("total_tokens"),
		cached: n("cached_tokens"), cacheWrite: n("cache_write_tokens"), reasoning: n("reasoning_tokens"),
		decision: f["decision"].GetStringValue(), source: f["source"].GetStringValue()}
	return md
}

// pvUsage is a reported usage in tokengate's terms (README's table):
// prompt is all the input, cache included; completion all the output,
// reasoning included; the rest are parts of them.
type pvUsage struct {
	prompt, completion, cacheRead, cacheWrite, reasoning int
}

func (u pvUsage) total() int { return u.prompt + u.completion }

// pvWireUsage is a usage object of any of the four APIs, its members
// named as each API names them.
type pvWireUsage struct {
	// OpenAI
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	// Anthropic
	InputTokens              int `json:"input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	// Gemini
	PromptTokenCount        int `json:"promptTokenCount"`
	ToolUsePromptTokenCount int `json:"toolUsePromptTokenCount"`
	CandidatesTokenCount    int `json:"candidatesTokenCount"`
	CachedContentTokenCount int `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int `json:"thoughtsTokenCount"`
	// Bedrock Converse
	BInputTokens           int `json:"inputTokens"`
	BOutputTokens          int `json:"outputTokens"`
	BCacheReadInputTokens  int `json:"cacheReadInputTokens"`
	BCacheWriteInputTokens int `json:"cacheWriteInputTokens"`
}

func (w pvWireUsage) normalize(provider string) pvUsage {
	switch provider {
	case "anthropic":
		return pvUsage{prompt: w.InputTokens + w.CacheReadInputTokens + w.CacheCreationInputTokens, completion: w.OutputTokens,
			cacheRead: w.CacheReadInputTokens, cacheWrite: w.CacheCreationInputTokens}
	case "gemini":
		return pvUsage{prompt: w.PromptTokenCount + w.ToolUsePromptTokenCount, completion: w.CandidatesTokenCount + w.ThoughtsTokenCount,
			cacheRead: w.CachedContentTokenCount, reasoning: w.ThoughtsTokenCount}
	case "bedrock":
		return pvUsage{prompt: w.BInputTokens + w.BCacheReadInputTokens + w.BCacheWriteInputTokens, completion: w.BOutputTokens,
			cacheRead: w.BCacheReadInputTokens, cacheWrite: w.BCacheWriteInputTokens}
	}
	return pvUsage{prompt: w.PromptTokens, completion: w.CompletionTokens,
		cacheRead: w.PromptTokensDetails.CachedTokens, reasoning: w.CompletionTokensDetails.ReasoningTokens}
}

// pvEvent is one event of a stream as a client reads it: an SSE event, a
// JSON array element, an eventstream frame.
type pvEvent struct {
	name      string // SSE event:, eventstream :event-type or :exception-type
	data      []byte
	exception bool // an eventstream exception frame
}

// pvReader reads a stream's events: io.EOF at a clean end.
type pvReader interface {
	next() (pvEvent, error)
}

func pvNewReader(f pvFraming, body io.Reader) pvReader {
	switch f {
	case pvSSE:
		return pvSSEReader{bufio.NewReader(body)}
	case pvArray:
		return &pvArrayReader{dec: json.NewDecoder(body)}
	case pvEventStream:
		return pvFrameReader{rd: body, dec: eventstream.NewDecoder()}
	}
	panic(fmt.Sprintf("no reader for %v", f))
}

type pvSSEReader struct{ rd *bufio.Reader }

func (r pvSSEReader) next() (pvEvent, error) {
	e, err := nextEvent(r.rd)
	return pvEvent{name: e.name, data: []byte(e.data)}, err
}

// pvArrayReader reads Gemini's streamed JSON array element by element,
// as the genai SDK does: each element is returned as soon as it is whole.
type pvArrayReader struct {
	dec     *json.Decoder
	started bool
}

func (r *pvArrayReader) next() (pvEvent, error) {
	if !r.started {
		tok, err := r.dec.Token()
		if err != nil {
			return pvEvent{}, err
		}
		if tok != json.Delim('[') {
			return pvEvent{}, fmt.Errorf("the stream starts with %v, not [", tok)
		}
		r.started = true
	}
	if !r.dec.More() {
		tok, err := r.dec.Token()
		if errors.Is(err, io.EOF) {
			return pvEvent{}, io.ErrUnexpectedEOF // the array never closed
		}
		if err != nil {
			return pvEvent{}, err
		}
		if tok != json.Delim(']') {
			return pvEvent{}, fmt.Errorf("the stream goes on with %v, not ]", tok)
		}
		if _, err := r.dec.Token(); !errors.Is(err, io.EOF) {
			return pvEvent{}, fmt.Errorf("bytes after the array: %v", err)
		}
		return pvEvent{}, io.EOF
	}
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return pvEvent{}, err
	}
	return pvEvent{data: raw}, nil
}

// pvFrameReader decodes Bedrock's eventstream frames with the AWS SDK's
// decoder.
type pvFrameReader struct {
	rd  io.Reader
	dec *eventstream.Decoder
}

func (r pvFrameReader) next() (pvEvent, error) {
	m, err := r.dec.Decode(r.rd, nil)
	if err != nil {
		return pvEvent{}, err
	}
	e := pvEvent{data: m.Payload}
	if v := m.Headers.Get(":event-type"); v != nil {
		e.name = v.String()
	}
	if v := m.Headers.Get(":exception-type"); v != nil {
		e.name, e.exception = v.String(), true
	}
	return e, nil
}

// pvStream is what a client made of a stream so far.
type pvStream struct {
	id     string // the answer's id, by which the mock's trace is found
	text   string // completion text delivered
	events int
	// texts counts the events that carried text.
	texts int
	// usage is the last (final, for Anthropic) usage the stream reported.
	usage    *pvUsage
	wire     pvWireUsage // Anthropic: message_start's usage, replaced field by field
	started  *pvUsage    // Anthropic: message_start's usage
	errored  bool        // the stream ended in the API's error
	finished bool        // the stream's normal end was read
}

// add reads one event of c's stream; the error is for a malformed one.
func (s *pvStream) add(c pvCall, e pvEvent) error {
	s.events++
	if e.exception {
		s.errored = true
		return nil
	}
	data := e.data
	if c.chunks {
		var ch struct {
			Bytes string `json:"bytes"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return fmt.Errorf("chunk frame %q: %w", data, err)
		}
		b, err := base64.StdEncoding.DecodeString(ch.Bytes)
		if err != nil {
			return fmt.Errorf("chunk frame %q: %w", data, err)
		}
		data = b
	}
	if string(data) == "[DONE]" {
		s.finished = true
		return nil
	}
	var ev struct {
		ID         string           `json:"id"`
		ResponseID string           `json:"responseId"`
		Type       string           `json:"type"`
		Message    *json.RawMessage `json:"message"`
		Delta      *struct {
			Text    string `json:"text"`
			Content string `json:"content"`
		} `json:"delta"`
		Usage         *json.RawMessage `json:"usage"`
		UsageMetadata *json.RawMessage `json:"usageMetadata"`
		Choices       []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
		Candidates []struct {
			FinishReason string `json:"finishReason"`
			Content      struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"content"`
		} `json:"candidates"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("event %s %q: %w", e.name, data, err)
	}
	before := s.text
	switch c.p.name {
	case "openai":
		if s.id == "" {
			s.id = ev.ID
		}
		for _, ch := range ev.Choices {
			s.text += ch.Delta.Content
		}
		if ev.Usage != nil && string(*ev.Usage) != "null" {
			s.setUsage(c, *ev.Usage, false)
		}
	case "anthropic":
		switch ev.Type {
		case "message_start":
			var m struct {
				ID    string          `json:"id"`
				Usage json.RawMessage `json:"usage"`
			}
			if ev.Message == nil || json.Unmarshal(*ev.Message, &m) != nil {
				return fmt.Errorf("message_start %q", data)
			}
			s.id = m.ID
			s.setUsage(c, m.Usage, false)
			u := *s.usage
			s.started, s.usage = &u, nil
		case "content_block_delta":
			if ev.Delta != nil {
				s.text += ev.Delta.Text
			}
		case "message_delta":
			if ev.Usage != nil {
				s.setUsage(c, *ev.Usage, true)
			}
		case "message_stop":
			s.finished = true
		case "error":
			s.errored = true
		}
	case "gemini":
		if s.id == "" {
			s.id = ev.ResponseID
		}
		for _, cand := range ev.Candidates {
			for _, p := range cand.Content.Parts {
				s.text += p.Text
			}
			if cand.FinishReason != "" {
				s.finished = true // the last chunk
			}
		}
		if ev.UsageMetadata != nil {
			s.setUsage(c, *ev.UsageMetadata, false)
		}
	case "bedrock":
		switch e.name {
		case "contentBlockDelta":
			if ev.Delta != nil {
				s.text += ev.Delta.Text
			}
		case "metadata":
			s.setUsage(c, *ev.Usage, false)
			s.finished = true
		}
	}
	if s.text != before {
		s.texts++
	}
	return nil
}

// setUsage reads a usage object; onto keeps the members it lacks from the
// last one (Anthropic's message_delta over message_start).
func (s *pvStream) setUsage(c pvCall, raw json.RawMessage, onto bool) {
	w := pvWireUsage{}
	if onto {
		w = s.wire
	}
	if json.Unmarshal(raw, &w) != nil {
		return
	}
	s.wire = w
	u := w.normalize(c.p.name)
	s.usage = &u
}

// pvReadStream reads c's stream until it ends, or until stop says the
// client has read enough; it returns what was read and the error that
// ended the stream (nil for a clean end or a stop).
func pvReadStream(t *testing.T, c pvCall, rd pvReader, stop func(*pvStream) bool) (*pvStream, error) {
	t.Helper()
	s := &pvStream{}
	for stop == nil || !stop(s) {
		e, err := rd.next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
		if err := s.add(c, e); err != nil {
			t.Fatal(err)
		}
	}
	return s, nil
}

// pvBufferedAnswer reads a buffered answer's id and usage.
func pvBufferedAnswer(t *testing.T, c pvCall, resp *http.Response) (id string, u pvUsage) {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s (%v)", c.name, resp.StatusCode, body, err)
	}
	var a struct {
		ID            string           `json:"id"`
		ResponseID    string           `json:"responseId"`
		Usage         *json.RawMessage `json:"usage"`
		UsageMetadata *json.RawMessage `json:"usageMetadata"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("%s: answer %q: %v", c.name, body, err)
	}
	raw := a.Usage
	if c.p.name == "gemini" {
		raw = a.UsageMetadata
	}
	var w pvWireUsage
	if raw == nil || json.Unmarshal(*raw, &w) != nil {
		t.Fatalf("%s: no usage in %q", c.name, body)
	}
	return pvTraceID(c, resp, a.ID+a.ResponseID), w.normalize(c.p.name)
}

// pvTraceID is the id the mock's trace goes by: on Bedrock's paths the
// x-amzn-RequestId header, elsewhere the answer's own.
func pvTraceID(c pvCall, resp *http.Response, fromBody string) string {
	if strings.HasPrefix(c.path, "/model/") {
		return resp.Header.Get("X-Amzn-Requestid")
	}
	return fromBody
}

// pvWantStream checks that resp is a 200 in c's streamed content type.
func pvWantStream(t *testing.T, c pvCall, resp *http.Response) {
	t.Helper()
	want := map[pvFraming]string{pvSSE: "text/event-stream", pvArray: "application/json", pvEventStream: "application/vnd.amazon.eventstream"}[c.framing]
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, want) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		t.Fatalf("%s: status %d, content-type %q; want a 200 %s stream (body %q)", c.name, resp.StatusCode, ct, want, body)
	}
}
