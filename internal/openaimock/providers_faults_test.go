package openaimock

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The x-mock-* faults on the Anthropic, Gemini and Bedrock streams, over a
// real connection: the cut drops it after N events of whatever framing,
// compressed or not, and the trace says what went out.

// framing names how a test counts a stream's events.
type framing int

const (
	sseLF   framing = iota // Anthropic: events ended by a blank line
	sseCRLF                // Gemini with alt=sse: CRLF CRLF
	jsonArr                // Gemini without alt: array elements
	frames                 // Bedrock: eventstream frames
)

// countEvents counts the whole events in what a client received.
func countEvents(t *testing.T, f framing, body []byte) int {
	t.Helper()
	switch f {
	case sseLF:
		return bytes.Count(body, []byte("\n\n"))
	case sseCRLF:
		return bytes.Count(body, []byte("\r\n\r\n"))
	case jsonArr:
		if len(body) == 0 {
			return 0
		}
		return 1 + bytes.Count(body, []byte("\n,\r\n"))
	}
	fs, err := decodeFrames(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("frames: %v", err)
	}
	return len(fs)
}

// streamID finds the trace id of a stream: the Bedrock request id, else
// the message id or responseId in the first event.
func streamID(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if id := resp.Header.Get("x-amzn-requestid"); id != "" {
		return id
	}
	for _, prefix := range []string{`"id":"`, `"responseId":"`, `"responseId": "`} {
		if _, rest, ok := bytes.Cut(body, []byte(prefix)); ok {
			id, _, _ := bytes.Cut(rest, []byte(`"`))
			return string(id)
		}
	}
	t.Fatalf("no id in %q", body)
	return ""
}

const (
	messagesStreamBody = `{"model":"claude-haiku-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	invokeBody         = `{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	converseStreamBody = `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`
	generateStreamBody = `{"contents":[{"parts":[{"text":"hi"}]}]}`
)

func TestProviderCutAfter(t *testing.T) {
	url := live(t)
	tests := []struct {
		name, path, body, enc, cut string
		f                          framing
		wantEvents, wantTokens     int
		wantUsage, wantDone        bool
	}{
		// message_start, content_block_start, ping, then deltas of 3 tokens.
		{"anthropic after 5", "/v1/messages", messagesStreamBody, "", "5", sseLF, 5, 6, false, false},
		// 3 + 4 deltas + content_block_stop, message_delta, message_stop.
		{"anthropic at the end, gzip", "/v1/messages", messagesStreamBody, "gzip", "100", sseLF, 10, 12, true, true},
		{"bedrock invoke after 4, br", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream", invokeBody,
			"br", "4", frames, 4, 3, false, false},
		// messageStart, then deltas.
		{"converse after 3", "/model/us.amazon.nova-lite-v1:0/converse-stream", converseStreamBody, "", "3", frames, 3, 6, false, false},
		{"converse at the end, deflate", "/model/m/converse-stream", converseStreamBody, "deflate", "9", frames, 8, 12, true, true},
		{"gemini sse after 2, deflate", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", generateStreamBody,
			"deflate", "2", sseCRLF, 2, 6, false, false},
		{"gemini array after 3", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", generateStreamBody, "", "3", jsonArr, 3, 9,
			false, false},
		// The last chunk carries the usage; the cut takes the closing bracket.
		{"gemini array before the bracket", "/v1/models/gemini-2.5-flash:streamGenerateContent", generateStreamBody, "gzip", "4",
			jsonArr, 4, 12, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := openStream(t, url, tt.path, tt.body,
				"x-mock-cut-after", tt.cut, "x-mock-encoding", tt.enc, "x-mock-completion-tokens", "12")
			body, err := io.ReadAll(decompress(t, tt.enc, resp.Body))
			if err == nil {
				t.Error("the stream ended cleanly, want it cut")
			}
			if n := countEvents(t, tt.f, body); n != tt.wantEvents {
				t.Fatalf("got %d events, want %d: %q", n, tt.wantEvents, body)
			}
			tr := finishedTrace(t, url, streamID(t, resp, body))
			if !tr.Cut || tr.Events != tt.wantEvents || tr.CompletionTokens != tt.wantTokens ||
				tr.Usage != tt.wantUsage || tr.Done != tt.wantDone || tr.Encoding != tt.enc {
				t.Errorf("trace %+v, want cut after %d events, %d tokens, usage %v, done %v",
					tr, tt.wantEvents, tt.wantTokens, tt.wantUsage, tt.wantDone)
			}
		})
	}
}

// TestProviderChunkDelay checks that the pacing applies to every framing.
func TestProviderChunkDelay(t *testing.T) {
	const delay = 15 * time.Millisecond
	url := live(t)
	for _, tt := range []struct {
		path, body string
		f          framing
		events     int
	}{
		{"/v1/messages", messagesStreamBody, sseLF, 10},
		{"/model/m/converse-stream", converseStreamBody, frames, 8},
		{"/v1beta/models/g:streamGenerateContent", generateStreamBody, jsonArr, 4}, // and the bracket
	} {
		start := time.Now()
		resp := openStream(t, url, tt.path, tt.body, "x-mock-chunk-delay", "15ms", "x-mock-completion-tokens", "12")
		body, err := io.ReadAll(resp.Body)
		if err != nil || countEvents(t, tt.f, body) != tt.events {
			t.Fatalf("%s: %d events (%v), want %d", tt.path, countEvents(t, tt.f, body), err, tt.events)
		}
		if took := time.Since(start); took < time.Duration(tt.events-1)*delay {
			t.Errorf("%s: %d events took %v, want at least %d delays of %v", tt.path, tt.events, took, tt.events-1, delay)
		}
	}
}

func TestProviderCallsAndNoUsage(t *testing.T) {
	h := newServer(testConfig()).routes()
	calls := []struct{ path, body string }{
		{"/v1/messages", `{"model":"m","max_tokens":5,"messages":[]}`},
		{"/anthropic/v1/messages", `{"model":"m","max_tokens":5,"messages":[]}`},
		{"/v1/projects/p/locations/l/publishers/anthropic/models/c:rawPredict", `{"max_tokens":5,"messages":[]}`},
		{"/model/anthropic.c-v1%3A0/invoke", `{"max_tokens":5,"messages":[]}`},
		{"/v1beta/models/g:generateContent?key=secret", generateStreamBody},
		{"/v1beta1/projects/p/locations/l/publishers/google/models/g:generateContent", generateStreamBody},
		{"/model/m/converse", converseStreamBody},
	}
	want := map[string]int{}
	for _, c := range calls {
		rec := post(t, h, c.path, c.body, "x-mock-no-usage", "true")
		checkStatus(t, rec, http.StatusOK)
		for _, member := range []string{`"usage"`, `"usageMetadata"`} {
			if strings.Contains(rec.Body.String(), member) {
				t.Errorf("%s: %s under x-mock-no-usage: %s", c.path, member, rec.Body)
			}
		}
		if rec.Result().Header.Get("x-amzn-bedrock-input-token-count") != "" {
			t.Errorf("%s: token-count headers under x-mock-no-usage", c.path)
		}
		path, _, _ := strings.Cut(c.path, "?")
		want[strings.ReplaceAll(path, "%3A", ":")]++
	}
	// Operations the APIs do not have are not calls.
	for _, p := range []string{"/v1beta/models/g:countTokens", "/model/m/get-async-invoke", "/v1/messages/count_tokens"} {
		post(t, h, p, `{}`)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mock/calls", nil))
	var got callsReport
	decodeJSON(t, rec, http.StatusOK, &got)
	if got.Calls != len(calls) || len(got.ByPath) != len(want) {
		t.Errorf("calls %+v, want %d by %v", got, len(calls), want)
	}
	for p, n := range want {
		if got.ByPath[p] != n {
			t.Errorf("by_path[%s]: got %d, want %d", p, got.ByPath[p], n)
		}
	}
}

// TestModelPathsNamingNoOperation checks that the model paths answer as
// before they were served: a path naming no operation, or a method other
// than POST, is an unknown URL with OpenAI's 404.
func TestModelPathsNamingNoOperation(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/v1/models/gpt-4o", nil),
		httptest.NewRequest(http.MethodPost, "/v1/models/gpt-4o", strings.NewReader(`{}`)),
		httptest.NewRequest(http.MethodGet, "/model/m/invoke", nil),
		httptest.NewRequest(http.MethodPost, "/model/m", strings.NewReader(`{}`)),
		httptest.NewRequest(http.MethodDelete, "/v1/projects/p/locations/l/publishers/google/models/g:generateContent", nil),
		httptest.NewRequest(http.MethodGet, "/v1/messages", nil),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var e apiError
		decodeJSON(t, rec, http.StatusNotFound, &e)
		if !strings.HasPrefix(e.Error.Message, "Invalid URL ("+r.Method) || rec.Result().Header.Get("x-amzn-requestid") != "" {
			t.Errorf("%s %s: %s", r.Method, r.URL.Path, rec.Body)
		}
	}
}
