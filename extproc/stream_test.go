package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/tokenize"
	"github.com/tokengate/tokengate/limiter"
)

// countingStore counts settlements, to prove each request settles once.
type countingStore struct {
	limiter.Store
	settles atomic.Int64
}

func (c *countingStore) SettleMany(ctx context.Context, key string, b limiter.Budget, h limiter.Holds, used []int64, now time.Time) (limiter.Decisions, error) {
	c.settles.Add(1)
	return c.Store.SettleMany(ctx, key, b, h, used, now)
}

const streamBody = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Can you tell me the time, please?"}]}`

var streamDeltas = []string{"No", ",", " I", " can", "not", ".", " Buy", " a", " watch", " 🕰️", "時計"}

func sseChunks(usage string) []string {
	var out []string
	for _, d := range streamDeltas {
		out = append(out, fmt.Sprintf("data: {\"choices\":[{\"delta\":{\"content\":%q}}]}\n\n", d))
	}
	if usage != "" {
		out = append(out, `data: {"choices":[],"usage":`+usage+"}\n\n")
	}
	return append(out, "data: [DONE]\n\n")
}

func chunk(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// streamed plays a streamed request, its chunks cut at every `cut` bytes,
// and stops after `keep` chunks when keep >= 0 (a client gone mid-stream).
func streamed(encoding string, chunks []string, cut, keep int) []*extprocv3.ProcessingRequest {
	msgs := []*extprocv3.ProcessingRequest{
		reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
		reqBody(streamBody),
	}
	hdrs := []string{"content-type", "text/event-stream; charset=utf-8"}
	if encoding != "" {
		hdrs = append(hdrs, "content-encoding", encoding)
	}
	msgs = append(msgs, respHeaders("200", false, hdrs...))
	raw := []byte(strings.Join(chunks, ""))
	if encoding == "gzip" {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(raw)
		w.Close()
		raw = b.Bytes()
	}
	var parts [][]byte
	for i := 0; i < len(raw); i += cut {
		parts = append(parts, raw[i:min(i+cut, len(raw))])
	}
	if keep >= 0 {
		parts = parts[:keep]
	}
	for i, p := range parts {
		msgs = append(msgs, chunk(p, keep < 0 && i == len(parts)-1))
	}
	return msgs
}

func TestStreamedResponses(t *testing.T) {
	prompt := int64(tokenize.Chat("gpt-4o", []tokenize.Message{{Role: "user", Content: "Can you tell me the time, please?"}}))
	all := int64(tokenize.Text("gpt-4o", strings.Join(streamDeltas, "")))
	usage := `{"prompt_tokens":15,"completion_tokens":11,"total_tokens":26}`
	full := sseChunks(usage)
	half := strings.Join(full[:5], "")
	tests := []struct {
		name     string
		msgs     []*extprocv3.ProcessingRequest
		want     int64
		source   string
		replyLen int
	}{
		{"usage reported", streamed("", full, 17, -1), 26, sourceReported, 0},
		{"no usage: counted", streamed("", sseChunks(""), 5, -1), prompt + all, sourceCounted, 0},
		{"gzip with usage", streamed("gzip", full, 9, -1), 26, sourceReported, 0},
		{"gzip without usage", streamed("gzip", sseChunks(""), 3, -1), prompt + all, sourceCounted, 0},
		{"client gone after half", streamed("", full, len(half), 1), prompt + int64(tokenize.Text("gpt-4o", strings.Join(streamDeltas[:5], ""))), "", 0},
		{"gzip client gone early", streamed("gzip", full, 20, 2), -1, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			cs := &countingStore{Store: e.store}
			e.srv.store = cs
			out := e.run(t, tt.msgs...)
			if len(out) != len(tt.msgs) {
				t.Fatalf("%d replies to %d messages", len(out), len(tt.msgs))
			}
			if mo := out[2].GetModeOverride(); mo.GetResponseBodyMode() != filterv3.ProcessingMode_STREAMED {
				t.Errorf("no STREAMED mode override on response headers: %v", mo)
			}
			if _, n := headerOf(out[2].GetResponseHeaders().GetResponse().GetHeaderMutation(), "x-ratelimit-remaining-tokens"); n != 1 {
				t.Errorf("stream response headers carry x-ratelimit-remaining-tokens %d times, want 1", n)
			}
			for i, r := range out[3:] {
				if r.GetResponseBody().GetResponse().GetBodyMutation() != nil || r.GetResponseBody() == nil {
					t.Fatalf("chunk %d was not passed unmodified: %v", i, r)
				}
			}
			d, _ := e.store.Status(context.Background(), "lab:"+hashKey("k"), limiter.Limits{TokensPerMinute: 500}, e.clock.Now())
			if tt.want >= 0 && d.Used != tt.want {
				t.Errorf("charged %d, want %d", d.Used, tt.want)
			}
			if tt.want < 0 && (d.Used < prompt || d.Used > prompt+all) {
				t.Errorf("charged %d, want between prompt %d and prompt+all %d", d.Used, prompt, prompt+all)
			}
			if n := cs.settles.Load(); n != 1 {
				t.Errorf("settled %d times, want exactly once", n)
			}
			if tt.source != "" {
				md := out[len(out)-1].GetDynamicMetadata().GetFields()[Namespace].GetStructValue().GetFields()
				if got := md["source"].GetStringValue(); got != tt.source {
					t.Errorf("source = %q, want %q", got, tt.source)
				}
			}
		})
	}
}

func TestStreamUsageInjected(t *testing.T) {
	e := newEnv(t)
	out := e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(streamBody))
	common := out[1].GetRequestBody().GetResponse()
	body := common.GetBodyMutation().GetBody()
	r, err := llm.ParseRequest(llm.ChatCompletions, body)
	if err != nil || !r.IncludeUsage || !r.Stream {
		t.Fatalf("rewritten body %s: %v", body, err)
	}
	if cl, n := headerOf(common.GetHeaderMutation(), "content-length"); cl != fmt.Sprint(len(body)) || n != 1 {
		t.Errorf("content-length = %q (x%d), want %d", cl, n, len(body))
	}

	off := false
	p := labPolicy()
	p.InjectStreamUsage = &off
	e = newEnv(t, p)
	out = e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(streamBody))
	if out[1].GetRequestBody().GetResponse().GetBodyMutation() != nil {
		t.Error("inject_stream_usage: false still rewrote the body")
	}
}

func TestUpstreamErrorReleasesStreamReservation(t *testing.T) {
	e := newEnv(t)
	e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(streamBody),
		respHeaders("503", false, "content-type", "application/json"), respBody(`{"error":{"message":"overloaded"}}`))
	if got := e.used(t, "lab", "k"); got != 0 {
		t.Errorf("charged %d after a 503 without usage, want 0", got)
	}
}

// TestStreamUsageInjectedAsTheUpstreamReadsIt: a stream asked for as a
// Python-served upstream reads it ("stream": "true", a byte-order mark
// before the body) is asked for its usage like any other, the mark kept.
func TestStreamUsageInjectedAsTheUpstreamReadsIt(t *testing.T) {
	plain := strings.Replace(streamBody, `"stream":true`, `"stream":"true"`, 1)
	if plain == streamBody {
		t.Fatal("streamBody does not say \"stream\":true")
	}
	for _, body := range []string{plain, "\xef\xbb\xbf" + streamBody, strings.Replace(streamBody, `"stream":true`, `"stream":1`, 1)} {
		e := newEnv(t)
		out := e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(body))
		got := out[1].GetRequestBody().GetResponse().GetBodyMutation().GetBody()
		r, err := llm.ParseRequest(llm.ChatCompletions, got)
		if err != nil || !r.Stream || !r.IncludeUsage {
			t.Errorf("%.40q: rewritten body %q, %v", body, got, err)
		}
		if strings.HasPrefix(body, "\xef\xbb\xbf") != strings.HasPrefix(string(got), "\xef\xbb\xbf") {
			t.Errorf("%.40q: the byte-order mark moved: %.40q", body, got)
		}
	}
}

// TestStreamTooLargeToReadChargesItsOutputBudget: an event larger than
// tokengate reads (8 MiB: a final event embedding generated images, say)
// is dropped, and with it maybe the usage; the stream is charged as an
// answer tokengate cannot read, its output budget at least, not only the
// text it did read.
func TestStreamTooLargeToReadChargesItsOutputBudget(t *testing.T) {
	pol := "{name: lab, tokens_per_minute: 1000000, counter_key: {header: [api-key]}}"
	body := strings.Replace(streamBody, `"stream":true`, `"stream":true,"max_tokens":50000`, 1)
	huge := `data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"x":"` + strings.Repeat("A", 9<<20) + "\"}\n\n"
	chunks := append(sseChunks("")[:len(streamDeltas)], huge, "data: [DONE]\n\n")
	msgs := []*extprocv3.ProcessingRequest{
		reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
		reqBody(body),
		respHeaders("200", false, "content-type", "text/event-stream"),
	}
	for i, c := range chunks {
		msgs = append(msgs, chunk([]byte(c), i == len(chunks)-1))
	}
	e := newEnv(t, parsePolicy(t, pol))
	e.run(t, msgs...)
	if got := e.used(t, "lab", "k"); got < 50000 || got > 50040 {
		t.Errorf("a stream that lost an event: charged %d, want the prompt and max_tokens 50,000", got)
	}
}
