package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// streamCompletion is the completion length of the streamed answers: long
// enough that ±2% is a few tokens, short enough to stay quick.
const streamCompletion = 150

// chatPrompt is what the mock reports as prompt_tokens for streamMessages:
// it counts with the same tokenizer calls as tokengate's estimate.
func chatPrompt() int {
	msgs := make([]tokenize.Message, len(streamMessages))
	for i, m := range streamMessages {
		msgs[i] = tokenize.Message{Role: m.Role, Content: m.Content}
	}
	return tokenize.Chat("gpt-4o", msgs)
}

const streamInput = "Tell me about the fox and the dog, slowly."

func TestStreamCharges(t *testing.T) {
	r := startRig(t)
	responsesBody, _ := json.Marshal(map[string]any{"model": "gpt-4o", "stream": true, "input": streamInput})
	completionsBody, _ := json.Marshal(map[string]any{"model": "gpt-4o", "stream": true, "prompt": streamInput})
	tests := []struct {
		name, path string
		body       []byte
		headers    []string
		// prompt is the mock's prompt_tokens for the request.
		prompt     int
		policy     string
		wantSource string
		// wantUsage: the client's stream carries a usage block, although
		// the client never asked for one when tokengate injects.
		wantUsage bool
	}{
		{"chat, usage injected", "/v1/chat/completions", chatBody(t, true), nil, chatPrompt(), "stream", "reported", true},
		{"completions, usage injected", "/v1/completions", completionsBody, nil, tokenize.Text("gpt-4o", streamInput), "stream", "reported", true},
		{"responses, usage in response.completed", "/v1/responses", responsesBody, nil, tokenize.Text("gpt-4o", streamInput), "stream", "reported", true},
		{"chat, inject_stream_usage false", "/openai/v1/chat/completions", chatBody(t, true), nil, chatPrompt(), "noinject", "counted", false},
		{"chat, upstream ignores include_usage", "/v1/chat/completions", chatBody(t, true),
			[]string{"x-mock-ignore-include-usage", "true"}, chatPrompt(), "stream", "counted", false},
		{"responses, upstream sends no usage", "/v1/responses", responsesBody,
			[]string{"x-mock-ignore-include-usage", "true"}, tokenize.Text("gpt-4o", streamInput), "stream", "counted", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.t = t
			key := fmt.Sprintf("stream-key-%d", i)
			before := r.settlements(tt.policy)
			headers := append([]string{"x-mock-completion-tokens", strconv.Itoa(streamCompletion)}, tt.headers...)
			resp := r.send(key, tt.path, tt.body, headers...)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, content-type %q; want a 200 event stream", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			// A stream's rate headers leave before its usage is known: they
			// count the prompt estimate tokengate holds for it.
			if got := remaining(t, "stream headers", resp.Header); got != streamLimit-tt.prompt {
				t.Errorf("x-ratelimit-remaining-tokens %d, want %d (limit − the %d-token prompt estimate held)",
					got, streamLimit-tt.prompt, tt.prompt)
			}
			events, err := readEvents(bufio.NewReader(resp.Body), -1)
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			got := parseStream(t, events)
			if !got.done {
				t.Error("the stream did not end with [DONE] / response.completed")
			}
			if (got.usage != nil) != tt.wantUsage {
				t.Fatalf("client saw usage %+v, want usage %v", got.usage, tt.wantUsage)
			}
			// What the upstream reports, or would have: its prompt count
			// and the tokens of the text it streamed.
			tr := r.finishedTrace(got.id)
			if tr.Text != got.text || tr.CompletionTokens != streamCompletion {
				t.Fatalf("the mock sent %d tokens %q, the client read %q; want %d tokens, the same text",
					tr.CompletionTokens, tr.Text, got.text, streamCompletion)
			}
			want := tt.prompt + streamCompletion
			if got.usage != nil {
				u := *got.usage
				if u.PromptTokens+u.InputTokens != tt.prompt || u.CompletionTokens+u.OutputTokens != streamCompletion || u.TotalTokens != want {
					t.Fatalf("usage %+v, want %d prompt + %d completion", u, tt.prompt, streamCompletion)
				}
			}

			rec := r.record()
			// How events group into response_body messages depends on
			// timing; TestStreamArrivesChunkByChunk shows they are not held.
			if rec.ModeOverrides != 1 {
				t.Errorf("%d mode overrides honoured, want 1: the stream switched to STREAMED", rec.ModeOverrides)
			}
			md := metadataOf(t, rec)
			if md.source != tt.wantSource || md.decision != "allowed" {
				t.Errorf("metadata source %q decision %q, want %q allowed", md.source, md.decision, tt.wantSource)
			}
			if md.prompt+md.completion != md.total || md.remaining != streamLimit-md.total {
				t.Errorf("metadata %+v: parts or remaining do not add up", md)
			}
			if tt.wantSource == "reported" && (md.total != want || md.prompt != tt.prompt) {
				t.Errorf("charged %d (%d prompt), want exactly the reported %d (%d prompt)", md.total, md.prompt, want, tt.prompt)
			}
			if tt.wantSource == "counted" && !withinPct(md.total, want, 2) {
				t.Errorf("counted %d (%d prompt + %d completion), want within 2%% of the %d the upstream would report",
					md.total, md.prompt, md.completion, want)
			}
			if c := r.charged(key, tt.policy); c != md.total {
				t.Errorf("the window holds %d, the metadata says %d were charged", c, md.total)
			}
			if n := r.settlements(tt.policy); n != before+2 {
				t.Errorf("%d settlements for the stream and the follow-up, want 2", n-before)
			}
		})
	}
}

// TestStreamArrivesChunkByChunk shows that the first event reaches the
// client while the upstream still holds the rest: nothing on the way
// (front, tokengate's streamed mode, its decoder) buffers the stream.
// The proof is the mock's own account, asked while the client holds the
// first event; the stall only has to outlast that question on a loaded
// machine. When the first event came is a figure for the log.
func TestStreamArrivesChunkByChunk(t *testing.T) {
	const stall = 2 * time.Second
	r := startRig(t)
	for i, enc := range []string{"", "br"} {
		t.Run("encoding "+enc, func(t *testing.T) {
			r.t = t
			start := time.Now()
			resp := r.send(fmt.Sprintf("chunk-key-%d", i), "/v1/chat/completions", chatBody(t, true),
				"x-mock-stall", stall.String(), "x-mock-encoding", enc, "x-mock-completion-tokens", "30")
			rd := bufio.NewReader(decoding(t, enc, resp.Body))
			first, err := nextEvent(rd)
			firstAt := time.Since(start)
			if err != nil {
				t.Fatalf("first event: %v", err)
			}
			id := parseStream(t, []sseEvent{first}).id
			// The mock's own account, asked while the client holds the
			// first event: it has sent nothing more.
			if tr := r.trace(id); tr.Events != 1 || tr.Finished {
				t.Fatalf("when the client read the first event the mock had sent %d events (finished %v), want 1", tr.Events, tr.Finished)
			}
			rest, err := readEvents(rd, -1)
			lastAt := time.Since(start)
			if err != nil || !parseStream(t, rest).done {
				t.Fatalf("rest of the stream: %d events, %v", len(rest), err)
			}
			// A lower bound only: the rest cannot come before the stall
			// ends, however fast or slow the machine.
			if lastAt < stall {
				t.Errorf("first event after %v, last after %v; want the last after the %v stall",
					firstAt, lastAt, stall)
			}
			t.Logf("first event after %v, last after %v (stall %v)", firstAt, lastAt, stall)
			// The first event went to tokengate on its own, the rest later.
			if rec := r.record(); rec.ModeOverrides != 1 || responseBodies(rec) < 2 {
				t.Errorf("%d mode overrides, %d response_body messages: want STREAMED, the first event apart",
					rec.ModeOverrides, responseBodies(rec))
			}
		})
	}
}
