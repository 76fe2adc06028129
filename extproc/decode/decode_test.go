package decode

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/tokengate/tokengate/extproc/decode/decodetest"
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
			got, err := Bytes(header, body, MaxResponse)
			if err != nil || !bytes.Equal(got, plain) || cap(got) != len(plain) {
				t.Fatalf("Bytes: %d bytes in room for %d, err %v", len(got), cap(got), err)
			}
			if n, err := Size(header, body, int64(len(plain))); n != int64(len(plain)) || err != nil {
				t.Fatalf("Size within its bound: %d, %v", n, err)
			}
			if _, err := Bytes(header, body, int64(len(plain))-1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Bytes a byte past its bound: %v", err)
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
	if _, err := Bytes("compress", []byte("x"), MaxResponse); !errors.Is(err, ErrUnsupported) {
		t.Errorf("compress: %v", err)
	}
	if got, err := Bytes("identity", []byte("x"), MaxResponse); err != nil || string(got) != "x" {
		t.Errorf("identity: %q %v", got, err)
	}
}

// TestBombStopsAtItsBound: a body inflating far past its bound is
// refused once the bound is passed, without ever being held: what the
// refusal allocated is the decoder's, not the body's.
func TestBombStopsAtItsBound(t *testing.T) {
	body := decodetest.Bomb(256)
	const limit = 16 << 20 // past the zstd window (8 MiB): the inflating is what stops
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Bytes("zstd", body, limit)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a %d-byte body inflating to 256 MiB, bound %d: %v", len(body), limit, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 2*limit {
		t.Errorf("refusing it allocated %d bytes, want at most %d", got, 2*limit)
	}
}

// TestWindowBound: a zstd frame whose window is larger than RFC 9659
// lets an HTTP body ask for is refused before it is inflated.
func TestWindowBound(t *testing.T) {
	var b bytes.Buffer
	w, err := zstd.NewWriter(&b, zstd.WithWindowSize(32<<20))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<20)) // 16 MiB, single frame
	w.Close()
	if _, err := Bytes("zstd", b.Bytes(), MaxResponse); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a 32 MiB window: %v, want ErrTooLarge", err)
	}
}

// TestBudget: bodies decoded at once share their Budget; one that does
// not fit beside the others is refused, and fits once they are released.
func TestBudget(t *testing.T) {
	plain := bytes.Repeat([]byte(`{"a":"bcd"}`), 1000) // 11,000 bytes
	body := encode(t, "gzip", plain)
	b := NewBudget(20000)
	got, release, err := b.Bytes("gzip", body)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("first body: %d bytes, %v", len(got), err)
	}
	if _, _, err := b.Bytes("gzip", body); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("second body beside the first (22,000 of 20,000 bytes): %v", err)
	}
	release()
	release() // a second release gives nothing back twice
	_, release2, err := b.Bytes("gzip", body)
	if err != nil {
		t.Fatalf("second body after the first's release: %v", err)
	}
	if _, _, err := b.Bytes("gzip", body); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a double release gave bytes back twice: %v", err)
	}
	release2()
	if got, release, err := b.Bytes("identity", plain); err != nil || &got[0] != &plain[0] {
		t.Fatalf("identity: %v", err)
	} else {
		release()
	}
	if _, _, err := NewBudget(10000).Bytes("gzip", body); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a body larger than the whole Budget: %v", err)
	}
	// A frame may declare a window far larger than its content (this
	// encoder declares 8 MiB for an empty one): the body, decoded to its
	// exact size, is still read.
	if got, release, err := NewBudget(64<<20).Bytes("zstd", encode(t, "zstd", nil)); err != nil || len(got) != 0 {
		t.Fatalf("an empty zstd body: %q, %v", got, err)
	} else {
		release()
	}
}

// FuzzBytes: whatever a client sends under whatever encoding, decoding
// ends, within its bound, and Size agrees with what Bytes returns.
func FuzzBytes(f *testing.F) {
	for _, enc := range []string{"gzip", "deflate", "raw-deflate", "br", "zstd"} {
		f.Add(enc, []byte("ab"))
	}
	f.Add("zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58})
	f.Fuzz(func(t *testing.T, enc string, raw []byte) {
		body, valid := raw, false // anything at all, as zstd, or
		switch enc {
		case "gzip", "deflate", "raw-deflate", "br", "zstd":
			body, valid = encode(t, enc, raw), true // a valid body
		default:
			enc = "zstd"
		}
		header := strings.TrimPrefix(enc, "raw-")
		const limit = 1 << 16
		n, sizeErr := Size(header, body, limit)
		got, err := Bytes(header, body, limit)
		if (err == nil) != (sizeErr == nil) || err == nil && int64(len(got)) != n || len(got) > limit {
			t.Fatalf("%s: Size %d, %v; Bytes %d bytes, %v", enc, n, sizeErr, len(got), err)
		}
		if valid && len(raw) <= limit && (err != nil || !bytes.Equal(got, raw)) {
			t.Fatalf("%s: %q decoded to %q", enc, raw, got)
		}
	})
}
