package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// numKeys is how many distinct api-key values the requests spread over:
// enough that the limiter works on a map of keys, as in production, rather
// than one hot entry.
const numKeys = 1000

// streamChunks is how many content chunks a streamed response has.
const streamChunks = 500

// workload is every message one mode sends, built once so the client's
// per-request work is the same small cost for both servers: it picks a
// prebuilt request-header message (one per key) and the body that goes
// with it (key k asks prompt k mod len(userPrompts), so content-length is
// right).
type workload struct {
	reqHeaders []*extprocv3.ProcessingRequest // one per key
	reqBodies  []*extprocv3.ProcessingRequest // one per prompt
	respHead   *extprocv3.ProcessingRequest
	respBody   []*extprocv3.ProcessingRequest // the buffered body, or the stream's chunks
}

// perStream is the number of messages, so of replies, in one stream.
func (w *workload) perStream() int { return 3 + len(w.respBody) }

// messages returns the i-th request's messages in the order Envoy sends
// them, into buf to spare the caller an allocation per request.
func (w *workload) messages(i int, buf []*extprocv3.ProcessingRequest) []*extprocv3.ProcessingRequest {
	k := i % len(w.reqHeaders)
	buf = append(buf[:0], w.reqHeaders[k], w.reqBodies[k%len(w.reqBodies)], w.respHead)
	return append(buf, w.respBody...)
}

// newWorkload builds a mode's messages; streamed asks for an event stream.
func newWorkload(streamed bool) *workload {
	w := newRequests("/v1/chat/completions", func(p string) []byte { return chatRequest(p, streamed) }, "user-agent", "OpenAI/Python 1.54.3")
	if !streamed {
		body := chatResponse()
		w.respHead = respHeadersMsg("application/json", "content-length", strconv.Itoa(len(body)))
		w.respBody = []*extprocv3.ProcessingRequest{bodyMsg(body, true)}
		return w
	}
	w.respHead = respHeadersMsg("text/event-stream; charset=utf-8", "transfer-encoding", "chunked")
	for i, c := range sseChunks() {
		w.respBody = append(w.respBody, bodyMsg(c, i == streamChunks+1))
	}
	return w
}

// newRequests builds a workload's request side: one body per prompt, made
// by body, and one request-headers message per key for path, its extra
// headers (the client's user-agent, an API's version header) included.
func newRequests(path string, body func(prompt string) []byte, extra ...string) *workload {
	w := &workload{}
	for _, p := range userPrompts {
		w.reqBodies = append(w.reqBodies, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body(p), EndOfStream: true}}})
	}
	for k := range numKeys {
		bodyLen := strconv.Itoa(len(w.reqBodies[k%len(w.reqBodies)].GetRequestBody().GetBody()))
		kv := append([]string{
			":authority", "api.internal.example.com",
			":path", path,
			":method", "POST",
			":scheme", "https",
			"content-type", "application/json",
			"content-length", bodyLen,
			"accept", "application/json",
		}, extra...)
		w.reqHeaders = append(w.reqHeaders, headersMsg(false, append(kv,
			"api-key", fmt.Sprintf("sk-bench-%04d-%s", k, strings.Repeat("x", 32)),
			"x-forwarded-proto", "https",
			"x-request-id", fmt.Sprintf("5f0c2b7e-8d1a-4c3b-9e2f-%012d", k),
		)...))
	}
	return w
}

func headersMsg(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		// Envoy sends values in raw_value (value stays empty).
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	h := &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: h}}
}

func respHeadersMsg(contentType string, extra ...string) *extprocv3.ProcessingRequest {
	kv := append([]string{
		":status", "200",
		"content-type", contentType,
		"date", "Tue, 04 Mar 2025 10:21:07 GMT",
		"openai-processing-ms", "412",
		"x-request-id", "req_6b1f0a9c3e2d4b5a8f7e6d5c4b3a2910",
	}, extra...)
	m := headersMsg(false, kv...)
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: m.GetRequestHeaders()}}
}

func bodyMsg(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatRequest is a chat completion request as an SDK sends it. A streamed
// one does not ask for stream_options.include_usage, as most clients
// don't: tokengate then rewrites the body to ask for it (its default,
// inject_stream_usage), which is the path worth measuring.
func chatRequest(prompt string, streamed bool) []byte {
	req := map[string]any{
		"model": "gpt-4o",
		"messages": []chatMessage{
			{Role: "system", Content: systemPrompt},
			{Role: "user", Content: prompt},
			{Role: "assistant", Content: earlierAnswer},
			{Role: "user", Content: followUp},
		},
		"temperature": 0.2,
		"max_tokens":  600,
		"user":        "bench-user",
	}
	if streamed {
		req["stream"] = true
	}
	b, err := json.Marshal(req)
	if err != nil {
		panic(err) // fixed input: cannot fail
	}
	return b
}

// chatResponse is a non-streamed chat completion with usage.
func chatResponse() []byte {
	answer := strings.Join(answerWords, " ")
	return fmt.Appendf(nil, `{"id":"chatcmpl-B7xQ2kV9mN4pL1sR8tU3wY6zA0cD","object":"chat.completion","created":1741083667,`+
		`"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null},`+
		`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":212,"completion_tokens":118,"total_tokens":330,`+
		`"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,`+
		`"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_f9f4fb6dbf"}`,
		answer)
}

// sseChunks is an event stream as OpenAI sends it with include_usage:
// streamChunks content deltas (the first with the role, the last with
// finish_reason), the usage chunk, then [DONE], each its own body message
// as Envoy forwards them when the upstream flushes each event.
func sseChunks() [][]byte {
	const head = `data: {"id":"chatcmpl-B7xQ2kV9mN4pL1sR8tU3wY6zA0cD","object":"chat.completion.chunk","created":1741083667,` +
		`"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":`
	var out [][]byte
	for i := range streamChunks {
		word, err := json.Marshal(" " + answerWords[i%len(answerWords)])
		if err != nil {
			panic(err)
		}
		delta, finish := `{"content":`+string(word)+`}`, "null"
		if i == 0 {
			delta = `{"role":"assistant","content":"","refusal":null}`
		}
		if i == streamChunks-1 {
			delta, finish = `{}`, `"stop"`
		}
		out = append(out, []byte(head+delta+`,"logprobs":null,"finish_reason":`+finish+`}],"usage":null}`+"\n\n"))
	}
	out = append(out,
		[]byte(`data: {"id":"chatcmpl-B7xQ2kV9mN4pL1sR8tU3wY6zA0cD","object":"chat.completion.chunk","created":1741083667,`+
			`"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f9f4fb6dbf","choices":[],`+
			`"usage":{"prompt_tokens":212,"completion_tokens":498,"total_tokens":710}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
	return out
}
