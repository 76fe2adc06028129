package sse

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type got struct{ Name, Data string }

func collect(p *Parser, chunks ...string) []got {
	var out []got
	for _, c := range chunks {
		p.Feed([]byte(c), func(e Event) { out = append(out, got{e.Name, string(e.Data)}) })
	}
	return out
}

func TestParser(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []got
	}{
		{"lf", "data: a\n\ndata: b\n\n", []got{{"", "a"}, {"", "b"}}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []got{{"", "a"}, {"", "b"}}},
		{"cr", "data: a\r\rdata: b\r\r", []got{{"", "a"}, {"", "b"}}},
		{"multi-line data", "data: a\ndata:b\ndata:  c\n\n", []got{{"", "a\nb\n c"}}},
		{"event names", "event: response.completed\ndata: {}\n\ndata: x\n\n", []got{{"response.completed", "{}"}, {"", "x"}}},
		{"comments and unknown fields", ": keep-alive\nid: 7\nretry: 10\ndata: x\n\n", []got{{"", "x"}}},
		{"no data is not dispatched", "event: ping\n\ndata: x\n\n", []got{{"", "x"}}},
		{"field without colon", "data\n\n", []got{{"", ""}}},
		{"unterminated last event is held", "data: a\n\ndata: b", []got{{"", "a"}}},
		{"done", "data: [DONE]\n\n", []got{{"", "[DONE]"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, then cut at every byte: the events must not change.
			if g := collect(&Parser{}, tt.stream); !reflect.DeepEqual(g, tt.want) {
				t.Fatalf("whole: got %q, want %q", g, tt.want)
			}
			for cut := 1; cut < len(tt.stream); cut++ {
				if g := collect(&Parser{}, tt.stream[:cut], tt.stream[cut:]); !reflect.DeepEqual(g, tt.want) {
					t.Fatalf("cut at %d: got %q, want %q", cut, g, tt.want)
				}
			}
			var bytes []string
			for i := range len(tt.stream) {
				bytes = append(bytes, tt.stream[i:i+1])
			}
			if g := collect(&Parser{}, bytes...); !reflect.DeepEqual(g, tt.want) {
				t.Fatalf("byte by byte: got %q, want %q", g, tt.want)
			}
		})
	}
}

func TestOverlongLineDropped(t *testing.T) {
	p := &Parser{}
	big := "data: " + strings.Repeat("x", maxLine) + "\n\n"
	g := collect(p, big[:maxLine/2], big[maxLine/2:], "data: ok\n\n")
	if !reflect.DeepEqual(g, []got{{"", "ok"}}) {
		t.Fatalf("got %d events, first %.20q", len(g), fmt.Sprint(g))
	}
	if !p.Dropped() {
		t.Error("a line was dropped, Dropped says none")
	}
	q := &Parser{}
	collect(q, "data: ok\n\n")
	if q.Dropped() {
		t.Error("nothing was dropped, Dropped says one was")
	}
}

func FuzzParser(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\r\n\r\nevent: x\ndata: y\n\n"), 3)
	f.Add([]byte(": c\rdata: \xff\xfe\r\n\n"), 1)
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		whole := collect(&Parser{}, string(stream))
		if len(stream) == 0 {
			return
		}
		cut = ((cut % len(stream)) + len(stream)) % len(stream)
		split := collect(&Parser{}, string(stream[:cut]), string(stream[cut:]))
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("cut at %d changed the events: %q vs %q", cut, whole, split)
		}
	})
}
