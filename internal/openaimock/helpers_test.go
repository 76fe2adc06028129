package openaimock

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// testConfig is the flags' defaults, minus the listener.
func testConfig() config { return config{completionTokens: 64} }

// post sends body to the handler and returns the recorded answer.
func post(t *testing.T, h http.Handler, path, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decodeJSON fails the test unless the answer has status want and a JSON
// body that decodes into v.
func decodeJSON(t *testing.T, rec *httptest.ResponseRecorder, want int, v any) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status: got %d, want %d; body %s", rec.Code, want, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type: got %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
}

type sseEvent struct {
	name string // the "event:" line, empty for Chat Completions
	data string
}

// parseSSE splits a recorded event stream, failing on anything but
// "event:" and "data:" lines separated by blank lines.
func parseSSE(t *testing.T, rec *httptest.ResponseRecorder) []sseEvent {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status: got %d, want 200; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type: got %q, want text/event-stream", ct)
	}
	if !rec.Flushed {
		t.Error("stream was never flushed")
	}
	var events []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data == "" {
				t.Fatalf("event %d has no data", len(events))
			}
			events = append(events, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected stream line %q", line)
		}
	}
	if cur != (sseEvent{}) {
		t.Fatalf("stream ends inside an event: %+v", cur)
	}
	return events
}

func mustUnmarshal(t *testing.T, data string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(data), v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// wireUsage decodes every usage field any of the APIs sends.
type wireUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	InputTokens         int `json:"input_tokens"`
	OutputTokens        int `json:"output_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens *int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens *int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	InputTokensDetails *struct {
		CachedTokens *int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokensDetails *struct {
		ReasoningTokens *int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

func intp(n int) *int { return &n }
