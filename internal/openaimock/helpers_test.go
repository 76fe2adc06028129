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
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// The detail blocks are the same objects under each API's names.
	PromptTokensDetails     *wireCached    `json:"prompt_tokens_details"`
	CompletionTokensDetails *wireReasoning `json:"completion_tokens_details"`
	InputTokensDetails      *wireCached    `json:"input_tokens_details"`
	OutputTokensDetails     *wireReasoning `json:"output_tokens_details"`
}

// The counts are pointers so that a missing one is told from a zero.
type (
	wireCached struct {
		CachedTokens *int `json:"cached_tokens"`
	}
	wireReasoning struct {
		ReasoningTokens *int `json:"reasoning_tokens"`
	}
)

// usageAPI says whose usage block a test checks: the APIs name and detail
// their counts differently.
type usageAPI int

const (
	chatAPI        usageAPI = iota // prompt/completion, with details
	completionsAPI                 // prompt/completion, without details
	responsesAPI                   // input/output, with details
)

// checkUsage fails unless u bills in+out=total tokens under api's names,
// with the detail blocks api sends.
func checkUsage(t *testing.T, api usageAPI, u *wireUsage, in, out int) {
	t.Helper()
	if u == nil {
		t.Fatal("no usage")
	}
	gotIn, gotOut, cached, reasoning := u.PromptTokens, u.CompletionTokens, u.PromptTokensDetails, u.CompletionTokensDetails
	if api == responsesAPI {
		gotIn, gotOut, cached, reasoning = u.InputTokens, u.OutputTokens, u.InputTokensDetails, u.OutputTokensDetails
	}
	if gotIn != in || gotOut != out || u.TotalTokens != in+out {
		t.Errorf("usage: got %d+%d=%d, want %d+%d=%d", gotIn, gotOut, u.TotalTokens, in, out, in+out)
	}
	if api == completionsAPI {
		if cached != nil || reasoning != nil {
			t.Errorf("legacy completions usage has details: %+v", u)
		}
		return
	}
	if cached == nil || cached.CachedTokens == nil || reasoning == nil || reasoning.ReasoningTokens == nil {
		t.Errorf("usage lacks cached_tokens or reasoning_tokens: %+v", u)
	}
}

// wireChoices decodes a Chat or legacy Completions object, answer or
// chunk: the two share one envelope, and one API's choice fields stay
// empty in the other's.
type wireChoices struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		// Text is legacy Completions' choice, Message a Chat answer's,
		// Delta a Chat chunk's.
		Text    string `json:"text"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *wireUsage `json:"usage"`
}

// chunkStream is a Chat or legacy Completions stream as a test reads it.
type chunkStream struct {
	events []sseEvent    // as sent, the closing [DONE] included
	chunks []wireChoices // those with a choice, in order
	usages []*wireUsage  // those of the usage chunks
}

// readChunks parses a Chat or legacy Completions stream, failing unless it
// ends with a bare "data: [DONE]" and every event before it is a chunk of
// the object named, with one choice, or none when it carries the usage.
func readChunks(t *testing.T, rec *httptest.ResponseRecorder, object string) chunkStream {
	t.Helper()
	st := chunkStream{events: parseSSE(t, rec)}
	if len(st.events) == 0 {
		t.Fatal("empty stream")
	}
	if last := st.events[len(st.events)-1]; last.data != "[DONE]" || last.name != "" {
		t.Fatalf("last event: got %+v, want data [DONE]", last)
	}
	for i, e := range st.events[:len(st.events)-1] {
		var c wireChoices
		mustUnmarshal(t, e.data, &c)
		if c.Object != object {
			t.Fatalf("event %d: object %q, want %q", i, c.Object, object)
		}
		if c.Usage != nil {
			if len(c.Choices) != 0 {
				t.Errorf("event %d: usage chunk has %d choices, want 0", i, len(c.Choices))
			}
			st.usages = append(st.usages, c.Usage)
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("event %d: %s: %d choices, want 1", i, e.data, len(c.Choices))
		}
		st.chunks = append(st.chunks, c)
	}
	return st
}

func intp(n int) *int { return &n }
