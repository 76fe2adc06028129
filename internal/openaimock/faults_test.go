package openaimock

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

const chatStream = `{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`

func TestCutAfter(t *testing.T) {
	url := live(t)
	tests := []struct {
		name, path, body, enc, cut string
		wantEvents, wantTokens     int
		wantUsage, wantDone        bool
	}{
		// The role event, then two of three tokens each.
		{"chat after 3", "/v1/chat/completions", chatStream, "", "3", 3, 6, false, false},
		{"chat after 3 gzip", "/v1/chat/completions", chatStream, "gzip", "3", 3, 6, false, false},
		// 12 tokens: role, 4 of text, finish, usage; cut instead of [DONE].
		{"chat before [DONE]", "/v1/chat/completions", chatStream, "br", "100", 7, 12, true, false},
		{"completions after 2", "/v1/completions", `{"stream":true,"prompt":"hi"}`, "deflate", "2", 2, 6, false, false},
		// 8 events before the text, 4 of text, then 4 more, the last terminal.
		{"responses after 6", "/v1/responses", `{"stream":true,"input":"hi"}`, "", "6", 6, 6, false, false},
		{"responses at the end", "/v1/responses", `{"stream":true,"input":"hi"}`, "gzip", "100", 12, 12, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := openStream(t, url, tt.path, tt.body,
				"x-mock-cut-after", tt.cut, "x-mock-encoding", tt.enc, "x-mock-completion-tokens", "12")
			events, err := readAll(bufio.NewReader(decompress(t, tt.enc, resp.Body)))
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want an unexpected EOF", err)
			}
			if len(events) != tt.wantEvents {
				t.Fatalf("got %d events, want %d", len(events), tt.wantEvents)
			}
			for i, e := range events {
				if e.data == "[DONE]" {
					t.Errorf("event %d is [DONE] in a cut stream", i)
				}
			}
			tr := finishedTrace(t, url, idOf(t, events[0].data))
			if !tr.Cut || tr.Events != tt.wantEvents || tr.CompletionTokens != tt.wantTokens ||
				tr.Usage != tt.wantUsage || tr.Done != tt.wantDone {
				t.Errorf("trace %+v, want cut after %d events, %d tokens, usage %v, done %v",
					tr, tt.wantEvents, tt.wantTokens, tt.wantUsage, tt.wantDone)
			}
		})
	}
}

// TestStall measures, without sleeping, that the events after the stall
// are held back for it while the first ones go out at once.
func TestStall(t *testing.T) {
	const stall = 150 * time.Millisecond
	url := live(t)
	for _, after := range []int{1, 3} {
		headers := []string{"x-mock-stall", stall.String(), "x-mock-completion-tokens", "12"}
		if after != 1 {
			headers = append(headers, "x-mock-stall-after", "3")
		}
		start := time.Now()
		resp := openStream(t, url, "/v1/chat/completions", chatStream, headers...)
		rd := bufio.NewReader(resp.Body)
		var id string
		for i := 1; i <= after; i++ {
			e, err := nextEvent(rd)
			if err != nil {
				t.Fatalf("stall after %d: event %d: %v", after, i, err)
			}
			id = idOf(t, e.data)
		}
		before := time.Since(start)
		if tr := getTrace(t, url, id); tr.Events != after {
			t.Errorf("stall after %d: the mock had sent %d events while stalled", after, tr.Events)
		}
		rest, err := readAll(rd)
		took := time.Since(start)
		if err != nil || len(rest) != 8-after {
			t.Fatalf("stall after %d: %d more events (%v), want %d", after, len(rest), err, 8-after)
		}
		if took-before < stall/2 || took < stall {
			t.Errorf("stall after %d: first events after %v, the rest after %v; want the rest held %v", after, before, took, stall)
		}
	}
}

func TestChunkDelay(t *testing.T) {
	const delay = 15 * time.Millisecond
	url := live(t)
	start := time.Now()
	resp := openStream(t, url, "/v1/chat/completions", chatStream, "x-mock-chunk-delay", "15", "x-mock-completion-tokens", "12")
	events, err := readAll(bufio.NewReader(resp.Body))
	if err != nil || len(events) != 8 {
		t.Fatalf("%d events (%v), want 8", len(events), err)
	}
	if took := time.Since(start); took < 7*delay {
		t.Errorf("8 events took %v, want at least 7 delays of %v", took, delay)
	}
}

func TestIgnoreIncludeUsage(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, tt := range []struct{ path, body string }{
		{"/v1/chat/completions", chatStream},
		{"/v1/completions", `{"stream":true,"stream_options":{"include_usage":true},"prompt":"hi"}`},
		{"/v1/responses", `{"stream":true,"input":"hi"}`},
	} {
		events := parseSSE(t, post(t, h, tt.path, tt.body, "x-mock-ignore-include-usage", "true"))
		for i, e := range events {
			if strings.Contains(e.data, `"usage":{`) {
				t.Errorf("%s: event %d carries usage: %s", tt.path, i, e.data)
			}
		}
		last := events[len(events)-1]
		if last.data != "[DONE]" && last.name != "response.completed" {
			t.Errorf("%s: the stream does not end normally: %+v", tt.path, last)
		}
		// Without the header, the same request gets its usage.
		var with int
		for _, e := range parseSSE(t, post(t, h, tt.path, tt.body)) {
			if strings.Contains(e.data, `"usage":{`) {
				with++
			}
		}
		if with != 1 {
			t.Errorf("%s: %d usage events without the header, want 1", tt.path, with)
		}
	}
}

func TestBadStreamOverrides(t *testing.T) {
	h := newServer(testConfig()).routes()
	for _, hdr := range [][2]string{
		{"x-mock-encoding", "zstd"}, {"x-mock-cut-after", "0"}, {"x-mock-cut-after", "x"},
		{"x-mock-stall", "soon"}, {"x-mock-stall-after", "0"}, {"x-mock-chunk-delay", "-5ms"},
		{"x-mock-ignore-include-usage", "maybe"}, {"x-mock-no-usage", "maybe"},
	} {
		var e apiError
		decodeJSON(t, post(t, h, "/v1/chat/completions", chatStream, hdr[0], hdr[1]), 400, &e)
		if !strings.Contains(e.Error.Message, hdr[0]) {
			t.Errorf("%s=%s: message %q does not name the header", hdr[0], hdr[1], e.Error.Message)
		}
	}
}
