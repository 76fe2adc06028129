package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestCompressedResponses sends answers compressed by the upstream through
// tokengate, which decodes them for counting only: the charge is exactly
// the reported usage, and the client gets the very bytes the mock sent.
func TestCompressedResponses(t *testing.T) {
	r := startRig(t)
	i := 0
	for _, enc := range []string{"gzip", "br", "deflate"} {
		for _, stream := range []bool{false, true} {
			i++
			name := fmt.Sprintf("%s buffered", enc)
			if stream {
				name = fmt.Sprintf("%s streamed", enc)
			}
			t.Run(name, func(t *testing.T) {
				r.t = t
				key := fmt.Sprintf("compressed-key-%d", i)
				resp := r.send(key, "/v1/chat/completions", chatBody(t, stream),
					"x-mock-encoding", enc, "x-mock-completion-tokens", "80")
				wire, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, read error %v", resp.StatusCode, err)
				}
				if got := resp.Header.Get("Content-Encoding"); got != enc {
					t.Fatalf("content-encoding %q, want %q", got, enc)
				}
				plain := decompress(t, enc, wire)
				var id string
				var u *wireUsage
				if stream {
					events, err := readEvents(bufio.NewReader(bytes.NewReader(plain)), -1)
					if err != nil {
						t.Fatal(err)
					}
					got := parseStream(t, events)
					if !got.done {
						t.Error("the decoded stream has no [DONE]")
					}
					id, u = got.id, got.usage
				} else {
					var c struct {
						ID    string     `json:"id"`
						Usage *wireUsage `json:"usage"`
					}
					if err := json.Unmarshal(plain, &c); err != nil {
						t.Fatalf("decoded body %q: %v", plain, err)
					}
					id, u = c.ID, c.Usage
				}
				if u == nil || u.CompletionTokens != 80 || u.PromptTokens != chatPrompt() {
					t.Fatalf("usage %+v, want %d+80", u, chatPrompt())
				}
				tr := r.finishedTrace(id)
				if tr.WireSHA256 != sha256Hex(wire) || tr.WireBytes != int64(len(wire)) {
					t.Errorf("the client got %d bytes (sha256 %s), the mock sent %d (%s): the body was changed on the way",
						len(wire), sha256Hex(wire)[:12], tr.WireBytes, tr.WireSHA256)
				}

				md := metadataOf(t, r.record())
				if md.source != "reported" || md.total != u.TotalTokens || md.prompt != u.PromptTokens {
					t.Errorf("metadata %+v, want the reported %d (%d prompt)", md, u.TotalTokens, u.PromptTokens)
				}
				if !stream {
					// A buffered answer's headers follow its settlement.
					wantRemaining(t, "buffered "+enc, resp.Header, streamLimit, u.TotalTokens)
				}
				if c := r.charged(key, "stream"); c != u.TotalTokens {
					t.Errorf("the window holds %d, want the reported %d", c, u.TotalTokens)
				}
			})
		}
	}
}
