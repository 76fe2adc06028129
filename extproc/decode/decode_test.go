package decode

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

func encode(t *testing.T, encoding string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	switch encoding {
	case "gzip":
		w = gzip.NewWriter(&b)
	case "deflate":
		w = zlib.NewWriter(&b)
	case "raw-deflate":
		w, _ = flate.NewWriter(&b, flate.DefaultCompression)
	case "br":
		w = brotli.NewWriter(&b)
	case "zstd":
		w, _ = zstd.NewWriter(&b)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func TestDecode(t *testing.T) {
	plain := []byte(strings.Repeat("data: {\"choices\":[{\"delta\":{\"content\":\"時計 tick\"}}]}\n\n", 500))
	for _, enc := range []string{"gzip", "deflate", "raw-deflate", "br", "zstd"} {
		header := enc
		if enc == "raw-deflate" {
			header = "deflate"
		}
		t.Run(enc, func(t *testing.T) {
			body := encode(t, enc, plain)
			got, err := Bytes(header, body)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("Bytes: %d bytes, err %v", len(got), err)
			}
			for _, size := range []int{1, 7, 1000} {
				var out []byte
				s, err := NewStream(strings.ToUpper(header), func(b []byte) { out = append(out, b...) })
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < len(body); i += size {
					s.Write(body[i:min(i+size, len(body))])
				}
				if err := s.Close(); err != nil || !bytes.Equal(out, plain) {
					t.Fatalf("stream in %d-byte chunks: %d bytes, err %v", size, len(out), err)
				}
			}
		})
	}
}

func TestTruncatedStream(t *testing.T) {
	body := encode(t, "gzip", bytes.Repeat([]byte("abc"), 10000))
	var n int
	s, _ := NewStream("gzip", func(b []byte) { n += len(b) })
	s.Write(body[:len(body)/2])
	if err := s.Close(); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated gzip: err %v", err)
	}
	if n == 0 {
		t.Error("nothing decoded from the first half")
	}
}

func TestGarbageAndAbort(t *testing.T) {
	s, _ := NewStream("gzip", func([]byte) {})
	s.Write([]byte("not gzip at all"))
	s.Write([]byte("more")) // must not block after the decoder gave up
	if err := s.Close(); err == nil {
		t.Error("garbage: want error")
	}
	s, _ = NewStream("br", func([]byte) {})
	s.Write(encode(t, "br", []byte("partial"))[:3])
	s.Abort()
}

func TestUnsupported(t *testing.T) {
	if _, err := NewStream("lzma", func([]byte) {}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("lzma stream: %v", err)
	}
	if _, err := Bytes("compress", []byte("x")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("compress: %v", err)
	}
	if got, err := Bytes("identity", []byte("x")); err != nil || string(got) != "x" {
		t.Errorf("identity: %q %v", got, err)
	}
}
