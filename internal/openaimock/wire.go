package openaimock

import (
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"hash"
	"io"
	"net/http"

	"github.com/andybalholm/brotli"
)

// compressor is what gzip, zlib and brotli writers share: Flush pushes out
// everything written so far as a decodable block, which is what lets a
// compressed event stream still arrive event by event.
type compressor interface {
	io.WriteCloser
	Flush() error
}

// wire is the answer's body on its way to the connection: compressed when
// x-mock-encoding asks, and measured after compression, so a test can
// check that the client got byte for byte what the mock sent.
type wire struct {
	http.ResponseWriter
	rc       *http.ResponseController
	encoding string
	enc      compressor // nil until the head is written, and for identity
	tr       *trace

	wroteHeader bool
	// cut is set when the stream is dropped on purpose: the compressor is
	// then left unfinished.
	cut bool
	sum hash.Hash
	err error // the first write error: the client is gone
}

func newWire(w http.ResponseWriter, encoding string, tr *trace) *wire {
	return &wire{ResponseWriter: w, rc: http.NewResponseController(w), encoding: encoding, tr: tr, sum: sha256.New()}
}

// WriteHeader announces the encoding. Compressed bodies never carry a
// content-length; the mock sets none anyway.
func (w *wire) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	if w.encoding != "" {
		h := w.Header()
		h.Set("Content-Encoding", w.encoding)
		h.Del("Content-Length")
		w.enc = newCompressor(w.encoding, raw{w})
	}
	w.ResponseWriter.WriteHeader(status)
}

func newCompressor(encoding string, dst io.Writer) compressor {
	switch encoding {
	case "gzip":
		return gzip.NewWriter(dst)
	case "deflate":
		// HTTP's "deflate" is the zlib format (RFC 9110 section 8.4.1.2).
		return zlib.NewWriter(dst)
	}
	return brotli.NewWriter(dst)
}

func (w *wire) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.enc == nil {
		return raw{w}.Write(b)
	}
	return w.enc.Write(b)
}

// FlushError pushes out what the compressor holds, then the connection's
// buffer; http.ResponseController finds it by this name.
func (w *wire) FlushError() error {
	if w.enc != nil {
		if err := w.enc.Flush(); err != nil {
			return err
		}
	}
	if w.err != nil {
		return w.err
	}
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection's other
// controls (deadlines).
func (w *wire) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// close ends the compressed body with its trailer. A cut stream is not
// closed: its compressed form stays truncated, as when a real connection
// drops.
func (w *wire) close() {
	if w.enc != nil {
		w.enc.Close()
	}
}

// digest is the SHA-256 of the bytes written to the connection, in hex.
func (w *wire) digest() []byte { return w.sum.Sum(nil) }

// raw writes to the connection itself, below the compressor, counting and
// hashing what the client will receive.
type raw struct{ w *wire }

func (r raw) Write(b []byte) (int, error) {
	if r.w.err != nil {
		return 0, r.w.err
	}
	n, err := r.w.ResponseWriter.Write(b)
	r.w.sum.Write(b[:n])
	r.w.tr.wrote(n)
	if err != nil {
		r.w.err = err
	}
	return n, err
}
