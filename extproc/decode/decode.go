// Package decode undoes a request's or a response's content-encoding for
// counting only: the body Envoy passes on is never touched. Streams are decoded as their
// chunks arrive, keeping the decompressor's state, so no chunk is inflated
// twice.
package decode

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// ErrUnsupported is returned for encodings tokengate cannot read; the body
// then passes uncounted beyond the prompt estimate.
var ErrUnsupported = errors.New("decode: unsupported content-encoding")

// MaxResponse bounds what one response may inflate to, so a small
// compression bomb cannot make tokengate read gigabytes. (Responses come
// from the upstream; request bodies, which the client writes, are bounded
// by a Budget.)
const MaxResponse = 256 << 20

// maxWindow bounds a zstd frame's window (see reader).
const maxWindow = 8 << 20

// ErrTooLarge is returned for a body that inflates past its bound.
var ErrTooLarge = errors.New("decode: body inflates past its bound")

// Supported reports whether encoding is identity or one tokengate decodes.
func Supported(encoding string) bool {
	switch normalize(encoding) {
	case "", "identity", "gzip", "x-gzip", "deflate", "br", "zstd":
		return true
	}
	return false
}

func normalize(encoding string) string {
	return strings.ToLower(strings.TrimSpace(encoding))
}

// IsIdentity reports whether the body is not encoded at all.
func IsIdentity(encoding string) bool {
	e := normalize(encoding)
	return e == "" || e == "identity"
}

// Stream decodes an encoded body fed chunk by chunk and hands the decoded
// bytes to sink. sink is called from a goroutine of the Stream's own, one
// call at a time; after Close returns it is never called again.
type Stream struct {
	pw   *io.PipeWriter
	done chan struct{}
	err  error
}

// NewStream starts decoding encoding into sink.
func NewStream(encoding string, sink func([]byte)) (*Stream, error) {
	if !Supported(encoding) || IsIdentity(encoding) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, encoding)
	}
	pr, pw := io.Pipe()
	s := &Stream{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = pump(encoding, pr, MaxResponse, sink)
		// Unblock a writer still waiting on a decoder that gave up.
		pr.CloseWithError(errDecoderStopped)
	}()
	return s, nil
}

var errDecoderStopped = errors.New("decode: decoder stopped")

// Write feeds the next chunk. It returns once the decoder has taken the
// chunk, which it does as fast as it inflates; after a decoding error it
// drops chunks silently (the body still reaches the client).
func (s *Stream) Write(chunk []byte) {
	_, _ = s.pw.Write(chunk)
}

// Close ends the input, waits for the decoder to finish and returns its
// error: a truncated stream reports io.ErrUnexpectedEOF.
func (s *Stream) Close() error {
	s.pw.Close()
	<-s.done
	return s.err
}

// Abort stops decoding without waiting for the rest of the input.
func (s *Stream) Abort() {
	s.pw.CloseWithError(errDecoderStopped)
	<-s.done
}

// Bytes decodes a whole buffered body of at most limit bytes decoded
// (ErrTooLarge past it). It inflates the body twice, first only to learn
// its size: what it holds is then the decoded body alone, allocated once,
// where growing a buffer as it fills would hold up to twice that.
func Bytes(encoding string, body []byte, limit int64) ([]byte, error) {
	if IsIdentity(encoding) {
		return body, nil
	}
	n, err := Size(encoding, body, limit)
	if err != nil {
		return nil, err
	}
	return sized(encoding, body, n)
}

// sized decodes body, whose Size is n, into n bytes allocated at once.
func sized(encoding string, body []byte, n int64) ([]byte, error) {
	out := make([]byte, 0, n)
	err := pump(encoding, bytes.NewReader(body), n, func(b []byte) { out = append(out, b...) })
	return out, err
}

// Size is the length of body decoded, inflated without being kept; past
// limit it stops there, with ErrTooLarge.
func Size(encoding string, body []byte, limit int64) (int64, error) {
	if IsIdentity(encoding) {
		return int64(len(body)), nil
	}
	if !Supported(encoding) {
		return 0, fmt.Errorf("%w: %q", ErrUnsupported, encoding)
	}
	var n int64
	err := pump(encoding, bytes.NewReader(body), limit, func(b []byte) { n += int64(len(b)) })
	return n, err
}

// pump inflates r into sink, up to limit bytes.
func pump(encoding string, r io.Reader, limit int64, sink func([]byte)) error {
	dec, err := reader(normalize(encoding), bufio.NewReader(r))
	if err != nil {
		return fmt.Errorf("decode %s: %w", encoding, err)
	}
	defer dec.Close()
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, err := dec.Read(buf)
		if n > 0 {
			total += int64(n)
			if total > limit {
				return fmt.Errorf("%w: %s past %d bytes", ErrTooLarge, encoding, limit)
			}
			sink(buf[:n])
		}
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			// The frame itself says it is larger than allowed.
			return fmt.Errorf("%w: %s: %v", ErrTooLarge, encoding, err)
		}
		if err != nil {
			return fmt.Errorf("decode %s: %w", encoding, err)
		}
	}
}

// reader opens the decompressor. "deflate" is zlib-wrapped per RFC 9110,
// but some servers send raw deflate, so the zlib header decides.
func reader(encoding string, r *bufio.Reader) (io.ReadCloser, error) {
	switch encoding {
	case "gzip", "x-gzip":
		return gzip.NewReader(r)
	case "br":
		return io.NopCloser(brotli.NewReader(r)), nil
	case "zstd":
		// One goroutine-free decoder per body. Its window, the memory it
		// may hold, is at most the 8 MiB that RFC 9659 sets for HTTP's
		// zstd content coding: a frame asking for more is refused, not
		// allocated. (Not the body's own bound: a frame may declare a
		// window larger than its content.)
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case "deflate":
		head, err := r.Peek(2)
		if err == nil && isZlibHeader(head) {
			return zlib.NewReader(r)
		}
		return flate.NewReader(r), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, encoding)
}

func isZlibHeader(h []byte) bool {
	return h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0
}

// Budget bounds the bytes of request bodies decoded at once, one body's
// included: what a client sends compressed, tokengate holds inflated
// until the body is read, and a few kilobytes can stand for gigabytes.
// A body is decoded only when its size fits in what the bodies being
// decoded leave; otherwise it is not decoded at all (ErrTooLarge), rather
// than waited for, so that no request holds another up.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a Budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Bytes is the package's Bytes within b: the decoded body, and the
// release that gives its bytes back once the body is no longer read.
// An identity body is not decoded, so takes nothing.
func (b *Budget) Bytes(encoding string, body []byte) ([]byte, func(), error) {
	if IsIdentity(encoding) {
		return body, func() {}, nil
	}
	n, err := Size(encoding, body, b.max)
	if err != nil {
		return nil, nil, err
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return nil, nil, fmt.Errorf("%w: %s of %d bytes while others are decoded (%d bytes at once)", ErrTooLarge, encoding, n, b.max)
	}
	release := sync.OnceFunc(func() { b.used.Add(-n) })
	out, err := sized(encoding, body, n)
	if err != nil {
		release()
		return nil, nil, err
	}
	return out, release, nil
}
