package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// counted reads the completion tokens tokengate charged from the stream's
// own text, and the prompt tokens it estimated, for policy so far.
func (r *rig) counted(policy string) (prompt, completion int) {
	r.t.Helper()
	p := r.metric("tokengate_tokens_total", "policy", policy, "kind", "prompt", "source", "counted")
	c := r.metric("tokengate_tokens_total", "policy", policy, "kind", "completion", "source", "counted")
	return int(p), int(c)
}

// TestStreamClientDisconnects reads half a stream and hangs up. tokengate
// must charge the prompt plus the completion it let through, settle once,
// and end the upstream request (no hang).
func TestStreamClientDisconnects(t *testing.T) {
	r := startRig(t)
	// 120 completion tokens: the role event, 40 events of three tokens,
	// the finish, the usage, [DONE]. The client reads 21 events: the role
	// and 60 tokens.
	const read, readTokens = 21, 60
	tests := []struct {
		name    string
		headers []string
		// exact: the upstream holds everything after the events read, so
		// tokengate saw exactly what the client read. Otherwise the stream
		// flows on while the hang-up travels from the client through the
		// front to tokengate, so tokengate may count an event or two more
		// than the client read, but never more than the mock sent.
		exact bool
	}{
		{"upstream stalls at half", []string{"x-mock-stall-after", fmt.Sprint(read), "x-mock-stall", "1m"}, true},
		{"upstream stalls at half, gzip", []string{"x-mock-stall-after", fmt.Sprint(read), "x-mock-stall", "1m", "x-mock-encoding", "gzip"}, true},
		{"upstream keeps streaming", []string{"x-mock-chunk-delay", "5ms"}, false},
		{"upstream keeps streaming, br", []string{"x-mock-chunk-delay", "5ms", "x-mock-encoding", "br"}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.t = t
			key := fmt.Sprintf("hang-up-key-%d", i)
			settled := r.settlements("stream")
			prompt0, completion0 := r.counted("stream")
			resp := r.send(key, "/v1/chat/completions", chatBody(t, true),
				append([]string{"x-mock-completion-tokens", "120"}, tt.headers...)...)
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want 200; body %s", resp.StatusCode, body)
			}
			events, err := readEvents(bufio.NewReader(decoding(t, resp.Header.Get("Content-Encoding"), resp.Body)), read)
			if err != nil || len(events) != read {
				t.Fatalf("read %d events (%v), want %d", len(events), err, read)
			}
			got := parseStream(t, events)
			if n := tokenize.Text("gpt-4o", got.text); n != readTokens {
				t.Fatalf("the client read %d completion tokens, want %d", n, readTokens)
			}
			resp.Body.Close() // the client goes away mid-stream

			r.waitSettlements("stream", settled+1)
			tr := r.finishedTrace(got.id) // the mock's handler ended: the upstream request was cut too
			if tr.Done || tr.Usage {
				t.Errorf("the mock finished the stream (%+v): the hang-up did not reach it", tr)
			}
			prompt, completion := r.counted("stream")
			prompt, completion = prompt-prompt0, completion-completion0
			if prompt != chatPrompt() {
				t.Errorf("charged %d prompt tokens, want the estimate %d", prompt, chatPrompt())
			}
			if tt.exact && completion != readTokens {
				t.Errorf("charged %d completion tokens, want the %d the client read", completion, readTokens)
			}
			if !tt.exact && (completion < readTokens || completion > tr.CompletionTokens) {
				t.Errorf("charged %d completion tokens, want between the %d the client read and the %d the mock sent",
					completion, readTokens, tr.CompletionTokens)
			}
			t.Logf("client read %d completion tokens, tokengate charged %d, the mock sent %d", readTokens, completion, tr.CompletionTokens)
			if c := r.charged(key, "stream"); c != prompt+completion {
				t.Errorf("the window holds %d, want %d charged once", c, prompt+completion)
			}
			if n := r.settlements("stream"); n != settled+2 {
				t.Errorf("%d settlements for the stream and the follow-up, want 2", n-settled)
			}
			if rec := r.Front.Completed()[r.sent-2]; !rec.ClientGone {
				t.Errorf("front record %+v, want ClientGone", rec)
			}
		})
	}
}

// TestStreamUpstreamFailures covers an upstream that refuses a streamed
// request and one that dies mid-stream.
func TestStreamUpstreamFailures(t *testing.T) {
	r := startRig(t)

	t.Run("500 releases the reservation", func(t *testing.T) {
		r.t = t
		resp := r.send("fail-key-500", "/v1/chat/completions", chatBody(t, true), "x-mock-status", "500")
		body, _ := io.ReadAll(resp.Body)
		wantJSONError(t, "streamed request, upstream 500", resp, body, http.StatusInternalServerError, "")
		md := metadataOf(t, r.record())
		if md.total != 0 || md.source != "none" {
			t.Errorf("metadata %+v, want 0 charged, source none", md)
		}
		if c := r.charged("fail-key-500", "stream"); c != 0 {
			t.Errorf("the window holds %d after an upstream 500, want 0", c)
		}
	})

	// 60 completion tokens; cut after the role event and 7 of text.
	const cut, cutTokens = 8, 21
	for _, enc := range []string{"", "gzip"} {
		t.Run("cut after 8 events "+enc, func(t *testing.T) {
			r.t = t
			key := "fail-key-cut-" + enc
			settled := r.settlements("stream")
			prompt0, completion0 := r.counted("stream")
			resp := r.send(key, "/v1/chat/completions", chatBody(t, true),
				"x-mock-cut-after", fmt.Sprint(cut), "x-mock-encoding", enc, "x-mock-completion-tokens", "60")
			events, err := readEvents(bufio.NewReader(decoding(t, enc, resp.Body)), -1)
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(events) != cut {
				t.Fatalf("the client read %d events, then %v; want %d, then an unexpected EOF", len(events), err, cut)
			}
			got := parseStream(t, events)
			if got.done || got.usage != nil || tokenize.Text("gpt-4o", got.text) != cutTokens {
				t.Fatalf("cut stream %+v, want %d tokens, no usage, no [DONE]", got, cutTokens)
			}
			r.waitSettlements("stream", settled+1)
			prompt, completion := r.counted("stream")
			if prompt-prompt0 != chatPrompt() || completion-completion0 != cutTokens {
				t.Errorf("charged %d+%d (counted), want %d+%d", prompt-prompt0, completion-completion0, chatPrompt(), cutTokens)
			}
			if c := r.charged(key, "stream"); c != chatPrompt()+cutTokens {
				t.Errorf("the window holds %d, want %d", c, chatPrompt()+cutTokens)
			}
		})
	}

	t.Run("cut after the usage chunk", func(t *testing.T) {
		r.t = t
		settled := r.settlements("stream")
		resp := r.send("fail-key-late-cut", "/v1/chat/completions", chatBody(t, true),
			"x-mock-cut-after", "100", "x-mock-completion-tokens", "60")
		events, err := readEvents(bufio.NewReader(resp.Body), -1)
		got := parseStream(t, events)
		if !errors.Is(err, io.ErrUnexpectedEOF) || got.done || got.usage == nil {
			t.Fatalf("stream %+v ended with %v; want the usage, no [DONE], an unexpected EOF", got, err)
		}
		r.waitSettlements("stream", settled+1)
		if c := r.charged("fail-key-late-cut", "stream"); c != got.usage.TotalTokens {
			t.Errorf("the window holds %d, want the reported %d: usage seen before a cut counts", c, got.usage.TotalTokens)
		}
	})
}
