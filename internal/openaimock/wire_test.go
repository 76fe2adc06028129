package openaimock

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// decompress undoes encoding the way a client would.
func decompress(t *testing.T, encoding string, body io.Reader) io.Reader {
	t.Helper()
	switch encoding {
	case "gzip":
		r, err := gzip.NewReader(body)
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		return r
	case "deflate":
		r, err := zlib.NewReader(body)
		if err != nil {
			t.Fatalf("zlib header: %v", err)
		}
		return r
	case "br":
		return brotli.NewReader(body)
	}
	return body
}

// pinned is a server whose ids and timestamps repeat from run to run, so
// two of them answer the same request byte for byte.
func pinned() http.Handler {
	s := newServer(testConfig())
	s.now = func() time.Time { return time.Unix(1767607200, 0) }
	return s.routes()
}

func TestEncodingCompressesAnswers(t *testing.T) {
	bodies := []struct{ name, path, body string }{
		{"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
		{"chat stream", "/v1/chat/completions", `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{"responses stream", "/v1/responses", `{"stream":true,"input":"hi"}`},
		{"error", "/v1/chat/completions", `{"messages":"not a list"}`},
	}
	for _, enc := range []string{"gzip", "deflate", "br"} {
		for _, b := range bodies {
			t.Run(enc+" "+b.name, func(t *testing.T) {
				plain := post(t, pinned(), b.path, b.body)
				h := pinned()
				rec := post(t, h, b.path, b.body, "x-mock-encoding", enc)
				if got := rec.Header().Get("Content-Encoding"); got != enc {
					t.Fatalf("content-encoding %q, want %q", got, enc)
				}
				if rec.Code != plain.Code || rec.Header().Get("Content-Type") != plain.Header().Get("Content-Type") {
					t.Errorf("status %d %q, plain answer %d %q", rec.Code, rec.Header().Get("Content-Type"), plain.Code, plain.Header().Get("Content-Type"))
				}
				wire := rec.Body.Bytes()
				got, err := io.ReadAll(decompress(t, enc, bytes.NewReader(wire)))
				if err != nil {
					t.Fatalf("decompress: %v", err)
				}
				if !bytes.Equal(got, plain.Body.Bytes()) {
					t.Fatalf("decompressed answer differs from the plain one:\n%s\nwant\n%s", got, plain.Body)
				}
				if bytes.Equal(wire, got) {
					t.Error("the body was not compressed")
				}
			})
		}
	}
}

// TestCompressedStreamArrivesPerEvent proves each event is flushed through
// the compressor: the client decodes the first one while the mock still
// holds the rest.
func TestCompressedStreamArrivesPerEvent(t *testing.T) {
	url := live(t)
	for _, enc := range []string{"gzip", "deflate", "br"} {
		t.Run(enc, func(t *testing.T) {
			resp := openStream(t, url, "/v1/chat/completions", `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
				"x-mock-encoding", enc, "x-mock-stall", "1m")
			if got := resp.Header.Get("Content-Encoding"); got != enc {
				t.Fatalf("content-encoding %q, want %q", got, enc)
			}
			rd := bufio.NewReader(decompress(t, enc, resp.Body))
			first, err := nextEvent(rd)
			if err != nil {
				t.Fatalf("first event: %v", err)
			}
			id := idOf(t, first.data)
			if tr := getTrace(t, url, id); tr.Events != 1 || tr.Finished {
				t.Errorf("trace while stalled: %+v, want 1 event and not finished", tr)
			}
			resp.Body.Close() // the stall ends with the client
			if tr := finishedTrace(t, url, id); tr.Events != 1 || tr.Done || tr.Encoding != enc {
				t.Errorf("trace after hang-up: %+v, want 1 event, not done, encoding %s", tr, enc)
			}
		})
	}
}

func TestTraceRecordsWhatWasSent(t *testing.T) {
	url := live(t)
	for _, tt := range []struct {
		name, path, body, enc string
		stream                bool
		wantEvents            int
	}{
		// 12 tokens: the role event, 4 of text, the finish, usage, [DONE].
		{"chat stream", "/v1/chat/completions", `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, "", true, 8},
		{"chat stream br", "/v1/chat/completions", `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, "br", true, 8},
		// 4 of text, the finish, [DONE].
		{"completions stream", "/v1/completions", `{"stream":true,"prompt":"hi"}`, "gzip", true, 6},
		{"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, "deflate", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := openStream(t, url, tt.path, tt.body, "x-mock-encoding", tt.enc, "x-mock-completion-tokens", "12")
			wire, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(decompress(t, tt.enc, bytes.NewReader(wire)))
			if err != nil {
				t.Fatal(err)
			}
			var id, text string
			var usage *wireUsage
			if tt.stream {
				events, err := readAll(bufio.NewReader(bytes.NewReader(plain)))
				if err != nil || len(events) != tt.wantEvents {
					t.Fatalf("%d events (%v), want %d", len(events), err, tt.wantEvents)
				}
				id = idOf(t, events[0].data)
				for _, e := range events[:len(events)-1] {
					var c wireChoices
					mustUnmarshal(t, e.data, &c)
					for _, ch := range c.Choices {
						if ch.Delta.Content != nil {
							text += *ch.Delta.Content
						}
						text += ch.Text
					}
					if c.Usage != nil {
						usage = c.Usage
					}
				}
			} else {
				var c wireChoices
				mustUnmarshal(t, string(plain), &c)
				id, text, usage = idOf(t, string(plain)), c.Choices[0].Message.Content, c.Usage
			}
			tr := finishedTrace(t, url, id)
			sum := sha256.Sum256(wire)
			want := traceRecord{
				ID: id, Model: "gpt-4o", Stream: tt.stream, Encoding: tt.enc, Events: tt.wantEvents,
				Text: text, CompletionTokens: 12, Usage: usage != nil, Done: true,
				WireBytes: int64(len(wire)), WireSHA256: hex.EncodeToString(sum[:]), Finished: true,
			}
			if !reflect.DeepEqual(tr, want) {
				t.Errorf("trace\n%+v\nwant\n%+v", tr, want)
			}
			if usage != nil && usage.CompletionTokens != tr.CompletionTokens {
				t.Errorf("usage reports %d completion tokens, the trace's text counts %d", usage.CompletionTokens, tr.CompletionTokens)
			}
		})
	}
	rec := httptest.NewRecorder()
	newServer(testConfig()).routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mock/traces/chatcmpl-nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown trace: status %d, want 404", rec.Code)
	}
}
