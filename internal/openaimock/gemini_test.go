package openaimock

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// generateBody is a Gemini request with the test prompt; system names the
// system instruction's member, config is the generation config's members.
func generateBody(system, config string) string {
	return fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}],`+
		`%q:{"parts":[{"text":%q}]},"generationConfig":{%s}}`, promptUser, system, promptSystem, config)
}

// wireGenerate decodes a Gemini answer or stream chunk.
type wireGenerate struct {
	Candidates []struct {
		Content struct {
			Role  string
			Parts []struct{ Text string }
		}
		FinishReason string
		Index        int
	}
	UsageMetadata *struct {
		PromptTokenCount, CandidatesTokenCount, TotalTokenCount int
		CachedContentTokenCount, ThoughtsTokenCount             int
	}
	ModelVersion, ResponseID string
}

// checkGenerateUsage fails unless the usage bills the test prompt, cands
// candidates tokens, and the cache and thoughts asked.
func checkGenerateUsage(t *testing.T, got wireGenerate, model string, cands, cached, thoughts int) {
	t.Helper()
	u, prompt := got.UsageMetadata, wantPrompt(model)
	if u == nil || u.PromptTokenCount != prompt || u.CandidatesTokenCount != cands || u.CachedContentTokenCount != cached ||
		u.ThoughtsTokenCount != thoughts || u.TotalTokenCount != prompt+cands+thoughts {
		t.Errorf("usage %+v, want prompt %d, candidates %d, cached %d, thoughts %d, total %d",
			u, prompt, cands, cached, thoughts, prompt+cands+thoughts)
	}
}

func TestGenerateContentBuffered(t *testing.T) {
	tests := []struct {
		name, path, body  string
		headers           []string
		model             string
		n, each           int // candidates, tokens each
		finish            string
		cached, reasoning int
	}{
		{name: "gemini api", path: "/v1beta/models/gemini-2.5-flash:generateContent?key=secret",
			body: generateBody("systemInstruction", ""), model: "gemini-2.5-flash", n: 1, each: 64, finish: "STOP"},
		{name: "v1, snake case, capped", path: "/v1/models/gemini-2.5-pro:generateContent",
			body:  strings.Replace(generateBody("system_instruction", `"max_output_tokens":9`), "generationConfig", "generation_config", 1),
			model: "gemini-2.5-pro", n: 1, each: 9, finish: "MAX_TOKENS"},
		{name: "candidates, thoughts, cache", path: "/v1beta/models/gemini-2.5-flash:generateContent",
			body:    generateBody("systemInstruction", `"candidateCount":3,"maxOutputTokens":20`),
			headers: []string{"x-mock-reasoning", "50", "x-mock-cache-read", "4", "x-goog-api-key", "secret"},
			model:   "gemini-2.5-flash", n: 3, each: 20, finish: "MAX_TOKENS", cached: 4, reasoning: 50},
		{name: "vertex", path: "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
			body: generateBody("systemInstruction", `"candidateCount":0`), model: "gemini-2.0-flash-001", n: 1, each: 64, finish: "STOP"},
		{name: "vertex v1beta1", path: "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.0-flash:generateContent",
			body: generateBody("systemInstruction", ""), model: "gemini-2.0-flash", n: 1, each: 64, finish: "STOP"},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got wireGenerate
			decodeJSON(t, post(t, h, tt.path, tt.body, tt.headers...), http.StatusOK, &got)
			if got.ModelVersion != tt.model || !strings.HasPrefix(got.ResponseID, "gemini-mock") || len(got.Candidates) != tt.n {
				t.Fatalf("model %q id %q with %d candidates, want %q gemini-mock… with %d", got.ModelVersion, got.ResponseID,
					len(got.Candidates), tt.model, tt.n)
			}
			texts := map[string]bool{}
			for i, c := range got.Candidates {
				if c.Index != i || c.Content.Role != "model" || len(c.Content.Parts) != 1 || c.FinishReason != tt.finish ||
					tokenize.Text(tt.model, c.Content.Parts[0].Text) != tt.each {
					t.Errorf("candidate %d: %+v, want %d tokens, %s", i, c, tt.each, tt.finish)
				}
				texts[c.Content.Parts[0].Text] = true
			}
			if len(texts) != tt.n {
				t.Errorf("%d candidates, %d distinct texts", tt.n, len(texts))
			}
			checkGenerateUsage(t, got, tt.model, tt.n*tt.each, tt.cached, tt.reasoning)
		})
	}
}

// readGenerateStream reads either framing of a Gemini stream into its
// chunks, checking the framing byte for byte on the way: "data:" events
// ended by CRLF CRLF, or a JSON array separated by "\n,\r\n".
func readGenerateStream(t *testing.T, body []byte, sse, closed bool) []wireGenerate {
	t.Helper()
	var chunks []wireGenerate
	if sse {
		events := strings.SplitAfter(string(body), "\r\n\r\n")
		if events[len(events)-1] != "" {
			t.Fatalf("stream does not end with an event: %q", events[len(events)-1])
		}
		for _, e := range events[:len(events)-1] {
			data, ok := strings.CutPrefix(e, "data: ")
			data, ok2 := strings.CutSuffix(data, "\r\n\r\n")
			if !ok || !ok2 || strings.ContainsAny(data, "\r\n") {
				t.Fatalf("event %q", e)
			}
			var c wireGenerate
			mustUnmarshal(t, data, &c)
			chunks = append(chunks, c)
		}
		return chunks
	}
	if !bytes.HasPrefix(body, []byte("[{\n  \"candidates\"")) || closed != bytes.HasSuffix(body, []byte("}\n]")) {
		t.Fatalf("array stream %q, want it to open with [{ and close with }\\n] %v", body, closed)
	}
	elems := bytes.Split(bytes.TrimSuffix(body[1:], []byte("\n]")), []byte("\n,\r\n"))
	for _, e := range elems {
		var c wireGenerate
		mustUnmarshal(t, string(e), &c)
		chunks = append(chunks, c)
	}
	// A streaming JSON decoder reads the same array.
	if closed {
		var all []wireGenerate
		if err := json.Unmarshal(body, &all); err != nil || len(all) != len(chunks) {
			t.Errorf("the array decodes to %d elements (%v), want %d", len(all), err, len(chunks))
		}
	}
	return chunks
}

func TestGenerateContentStream(t *testing.T) {
	const model = "gemini-2.5-flash"
	const stream = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
	tests := []struct {
		name, query string
		headers     []string
		chunks      int
		sent        int // candidates tokens of the last chunk
		cached      int
		thoughts    int
		streamError bool
	}{
		{name: "sse", query: "?alt=sse", chunks: 4, sent: 12},
		{name: "array", chunks: 4, sent: 12},
		{name: "sse, thoughts and cache", query: "?alt=sse", headers: []string{"x-mock-reasoning", "7", "x-mock-cache-read", "3"},
			chunks: 4, sent: 12, cached: 3, thoughts: 7},
		{name: "sse ends after 2", query: "?alt=sse&key=k", headers: []string{"x-mock-stream-error-after", "2"},
			chunks: 2, sent: 6, streamError: true},
		{name: "array ends after 3", headers: []string{"x-mock-stream-error-after", "3"}, chunks: 3, sent: 9, streamError: true},
	}
	h := newServer(testConfig()).routes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(t, h, stream+tt.query, generateBody("systemInstruction", ""), append(tt.headers, "x-mock-completion-tokens", "12")...)
			sse := strings.Contains(tt.query, "alt=sse")
			wantCT := "application/json"
			if sse {
				wantCT = "text/event-stream"
			}
			if ct := rec.Result().Header.Get("Content-Type"); rec.Code != http.StatusOK || ct != wantCT || !rec.Flushed {
				t.Fatalf("got %d %q flushed %v, want 200 %s flushed", rec.Code, ct, rec.Flushed, wantCT)
			}
			chunks := readGenerateStream(t, rec.Body.Bytes(), sse, !tt.streamError)
			if len(chunks) != tt.chunks {
				t.Fatalf("%d chunks, want %d", len(chunks), tt.chunks)
			}
			var text strings.Builder
			for i, c := range chunks {
				if c.ResponseID != chunks[0].ResponseID || len(c.Candidates) != 1 || len(c.Candidates[0].Content.Parts) != 1 {
					t.Fatalf("chunk %d: %+v", i, c)
				}
				text.WriteString(c.Candidates[0].Content.Parts[0].Text)
				// Every chunk bills the usage so far.
				checkGenerateUsage(t, c, model, tokenize.Text(model, text.String()), tt.cached, tt.thoughts)
				last := i == len(chunks)-1 && !tt.streamError
				if (c.Candidates[0].FinishReason == "STOP") != last {
					t.Errorf("chunk %d: finishReason %q, last %v", i, c.Candidates[0].FinishReason, last)
				}
			}
			if n := tokenize.Text(model, text.String()); n != tt.sent {
				t.Errorf("the chunks carry %d tokens, want %d", n, tt.sent)
			}
			events := tt.chunks
			if !sse && !tt.streamError {
				events++ // the closing bracket
			}
			checkTrace(t, h, chunks[0].ResponseID, traceRecord{Stream: true, Text: text.String(), CompletionTokens: tt.sent,
				Usage: !tt.streamError, Done: !tt.streamError, StreamError: tt.streamError, Events: events})
		})
	}
}

func TestGenerateContentCandidatesStream(t *testing.T) {
	h := newServer(testConfig()).routes()
	rec := post(t, h, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
		generateBody("systemInstruction", `"candidateCount":2,"maxOutputTokens":5`))
	chunks := readGenerateStream(t, rec.Body.Bytes(), true, true)
	texts := make([]string, 2)
	for i, c := range chunks {
		if len(c.Candidates) != 2 {
			t.Fatalf("chunk %d has %d candidates, want 2", i, len(c.Candidates))
		}
		for k, cand := range c.Candidates {
			texts[cand.Index] += cand.Content.Parts[0].Text
			if last := i == len(chunks)-1; (cand.FinishReason == "MAX_TOKENS") != last {
				t.Errorf("chunk %d candidate %d: finishReason %q", i, k, cand.FinishReason)
			}
		}
	}
	for k, text := range texts {
		if want := generateChoice("gemini-2.5-flash", 64, 5, k).text(); text != want {
			t.Errorf("candidate %d: %q, want %q", k, text, want)
		}
	}
	checkGenerateUsage(t, chunks[len(chunks)-1], "gemini-2.5-flash", 10, 0, 0)
}

func TestGenerateContentErrors(t *testing.T) {
	const path = "/v1beta/models/gemini-2.5-flash:generateContent"
	tests := []struct {
		path, body string
		headers    []string
		status     int
		want       string // the google.rpc status
		msg        string
	}{
		{path, `{}`, nil, 400, "INVALID_ARGUMENT", "contents"},
		{path, generateBody("systemInstruction", `"candidateCount":9`), nil, 400, "INVALID_ARGUMENT", "candidate_count"},
		{path, `[`, nil, 400, "INVALID_ARGUMENT", "parse"},
		{path, `{}`, []string{"x-mock-status", "429"}, 429, "RESOURCE_EXHAUSTED", "forced status 429"},
		{path + "?alt=sse", `{}`, []string{"x-mock-status", "503"}, 503, "UNAVAILABLE", "forced"},
		{path, `{}`, []string{"x-mock-status", "500"}, 500, "INTERNAL", "forced"},
		{path, `{}`, []string{"x-mock-reasoning", "x"}, 400, "INVALID_ARGUMENT", "x-mock-reasoning"},
		{"/v1beta/models/gemini-2.5-flash:countTokens", `{}`, nil, 404, "NOT_FOUND", "countTokens"},
		{"/v1/projects/p/locations/l/publishers/meta/models/llama:generateContent", `{}`, nil, 404, "NOT_FOUND", "meta"},
	}
	h := newServer(testConfig()).routes()
	for i, tt := range tests {
		rec := post(t, h, tt.path, tt.body, tt.headers...)
		checkStatus(t, rec, tt.status)
		var e struct {
			Error struct {
				Code            int
				Message, Status string
			}
		}
		mustUnmarshal(t, rec.Body.String(), &e)
		if e.Error.Code != tt.status || e.Error.Status != tt.want || !strings.Contains(e.Error.Message, tt.msg) {
			t.Errorf("step %d: error %+v, want %d %s containing %q", i, e.Error, tt.status, tt.want, tt.msg)
		}
	}
}
