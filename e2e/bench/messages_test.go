package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/extproc/llm"
)

func header(h *extprocv3.HttpHeaders, name string) (string, bool) {
	for _, kv := range h.GetHeaders().GetHeaders() {
		if kv.GetKey() == name {
			return string(kv.GetRawValue()), kv.GetValue() == ""
		}
	}
	return "", false
}

// TestBufferedRequestAsEnvoySendsIt checks the four messages of a buffered
// request: kinds in order, values in raw_value, a content-length that
// matches the body sent with it, bodies that are the JSON an SDK and the
// API send, and end_of_stream only where the body ends.
func TestBufferedRequestAsEnvoySendsIt(t *testing.T) {
	w := newWorkload(false)
	for _, i := range []int{0, 1, 7, 999, 1000, 12345} {
		msgs := w.messages(i, nil)
		if len(msgs) != 4 || w.perStream() != 4 {
			t.Fatalf("request %d: %d messages (perStream %d), want 4", i, len(msgs), w.perStream())
		}
		rh, body := msgs[0].GetRequestHeaders(), msgs[1].GetRequestBody()
		if rh == nil || body == nil || msgs[2].GetResponseHeaders() == nil || msgs[3].GetResponseBody() == nil {
			t.Fatalf("request %d: kinds %T %T %T %T", i, msgs[0].Request, msgs[1].Request, msgs[2].Request, msgs[3].Request)
		}
		for name, want := range map[string]string{":method": "POST", ":path": "/v1/chat/completions", "content-length": strconv.Itoa(len(body.GetBody()))} {
			if got, raw := header(rh, name); got != want || !raw {
				t.Errorf("request %d: %s = %q (raw_value only: %t), want %q", i, name, got, raw, want)
			}
		}
		if rh.GetEndOfStream() || !body.GetEndOfStream() || !msgs[3].GetResponseBody().GetEndOfStream() {
			t.Errorf("request %d: end_of_stream wrong", i)
		}
		var req struct {
			Model    string `json:"model"`
			Messages []chatMessage
		}
		if err := json.Unmarshal(body.GetBody(), &req); err != nil || req.Model != "gpt-4o" || len(req.Messages) != 4 {
			t.Errorf("request %d: body %s: %v", i, body.GetBody(), err)
		}
		if n := len(body.GetBody()); n < 900 || n > 1300 {
			t.Errorf("request %d: body is %d bytes, want about 1 KB", i, n)
		}
	}
	keys := map[string]bool{}
	for i := range 3 * numKeys {
		k, _ := header(w.messages(i, nil)[0].GetRequestHeaders(), "api-key")
		keys[k] = true
	}
	if len(keys) != numKeys {
		t.Errorf("%d distinct api-keys, want %d", len(keys), numKeys)
	}
	var resp struct {
		Usage struct {
			Total int `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal(w.respBody[0].GetResponseBody().GetBody(), &resp); err != nil || resp.Usage.Total == 0 {
		t.Errorf("response body: usage %+v, %v", resp.Usage, err)
	}
	if ct, _ := header(w.respHead.GetResponseHeaders(), "content-type"); ct != "application/json" {
		t.Errorf("response content-type %q", ct)
	}
}

// TestStreamedResponse: 500 content chunks, a usage chunk and [DONE], one
// body message each, every one a whole SSE event whose data is JSON, and
// only the last with end_of_stream.
func TestStreamedResponse(t *testing.T) {
	w := newWorkload(true)
	msgs := w.messages(3, nil)
	if want := 3 + streamChunks + 2; len(msgs) != want || w.perStream() != want {
		t.Fatalf("%d messages, want %d", len(msgs), want)
	}
	var req struct{ Stream bool }
	if err := json.Unmarshal(msgs[1].GetRequestBody().GetBody(), &req); err != nil || !req.Stream {
		t.Errorf("request body does not ask for a stream: %v", err)
	}
	if ct, _ := header(msgs[2].GetResponseHeaders(), "content-type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("content-type %q", ct)
	}
	var usage int
	for i, m := range msgs[3:] {
		b := m.GetResponseBody()
		if b == nil {
			t.Fatalf("chunk %d: %T", i, m.Request)
		}
		if last := i == streamChunks+1; b.GetEndOfStream() != last {
			t.Errorf("chunk %d: end_of_stream %t", i, b.GetEndOfStream())
		}
		data, ok := bytes.CutPrefix(b.GetBody(), []byte("data: "))
		if !ok || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(b.GetBody(), []byte("\n\n")) != 1 {
			t.Fatalf("chunk %d is not one SSE event: %q", i, b.GetBody())
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			continue
		}
		var c struct {
			Usage *struct {
				Total int `json:"total_tokens"`
			}
		}
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("chunk %d: %v: %s", i, err, data)
		}
		if c.Usage != nil {
			usage++
		}
	}
	if usage != 1 {
		t.Errorf("%d usage chunks, want 1", usage)
	}
}

// The Anthropic mode's answer is one tokengate reads as Anthropic usage:
// input, cache read and output, all of it charged.
func TestAnthropicWorkload(t *testing.T) {
	w := newAnthropicWorkload()
	if got := len(w.messages(7, nil)); got != w.perStream() || got != 4 {
		t.Fatalf("%d messages, want 4", got)
	}
	u, ok, err := llm.ParseUsage(llm.Messages, w.respBody[0].GetResponseBody().GetBody())
	if err != nil || !ok || u.Prompt != 212 || u.Completion != 118 || u.CacheRead != 32 {
		t.Errorf("usage %+v %v %v, want prompt 180+32, completion 118", u, ok, err)
	}
	if r := llm.Detect(mustHeader(t, w.reqHeaders[0].GetRequestHeaders(), ":path")); r.API != llm.Messages {
		t.Errorf("path detected as %v", r.API)
	}
}

func mustHeader(t *testing.T, h *extprocv3.HttpHeaders, name string) string {
	t.Helper()
	v, _ := header(h, name)
	if v == "" {
		t.Fatalf("no %s header", name)
	}
	return v
}
