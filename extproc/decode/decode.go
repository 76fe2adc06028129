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

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// ErrUnsupported is returned for encodings tokengate cannot read; the body
// then passes uncounted beyond the prompt estimate.
var ErrUnsupported = errors.New("decode: unsupported content-encoding")

// maxDecoded bounds what one response may inflate to, so a small
// compression bomb cannot make tokengate read gigabytes.
const maxDecoded = 256 << 20

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
		s.err = pump(encoding, pr, sink)
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

// Bytes decodes a whole buffered body.
func Bytes(encoding string, body []byte) ([]byte, error) {
	if IsIdentity(encoding) {
		return body, nil
	}
	if !Supported(encoding) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, encoding)
	}
	var out []byte
	err := pump(encoding, bytes.NewReader(body), func(b []byte) { out = append(out, b...) })
	return out, err
}

func pump(encoding string, r io.Reader, sink func([]byte)) error {
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
			if total > maxDecoded {
				return fmt.Errorf("decode %s: body inflates past %d bytes", encoding, maxDecoded)
			}
			sink(buf[:n])
		}
		if err == io.EOF {
			return nil
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
		// One goroutine-free decoder per body, its window bounded like
		// maxDecoded bounds the whole.
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
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
