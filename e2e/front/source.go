package front

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
)

// chunk is what one read of a body gave, as Envoy's codec hands the data
// of one socket read to the filter chain as one data frame.
type chunk struct {
	data []byte
	// eof is set on the chunk that ended the body (it may be empty).
	eof bool
}

// bodySource reads a body (the client's request, or the upstream's
// response) in its own goroutine from the moment it is started, as Envoy's
// codec keeps reading while a filter waits on the processor: data that
// arrives during a round trip is there, ready, when the reply comes back.
// Reading pauses while more than high bytes are waiting to be taken, as
// Envoy's watermarks pause the connection.
type bodySource struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever the state changes
	pending  []chunk
	size     int64 // bytes pending
	total    int64 // bytes read in all
	done     bool  // the body ended or failed
	err      error // why it failed; nil on a clean end
	trailers http.Header
	high     int64
	stop     chan struct{}
	stopOnce sync.Once
}

// newBodySource starts reading r. trailers, when not nil, is asked for the
// trailers once r has ended; a non-empty answer means the body ended in
// trailers (the data before them carries no end of stream).
func newBodySource(r io.Reader, high int64, trailers func() http.Header) *bodySource {
	s := &bodySource{changed: make(chan struct{}), high: high, stop: make(chan struct{})}
	go s.read(r, trailers)
	return s
}

// doneSource is an empty body that has ended.
func doneSource() *bodySource {
	return &bodySource{changed: make(chan struct{}), done: true, stop: make(chan struct{})}
}

func (s *bodySource) read(r io.Reader, trailers func() http.Header) {
	buf := make([]byte, 32<<10)
	for {
		if !s.waitRoom() {
			return
		}
		n, err := r.Read(buf)
		s.mu.Lock()
		c := chunk{data: bytes.Clone(buf[:n]), eof: err != nil}
		if n > 0 || err != nil {
			s.pending = append(s.pending, c)
			s.size += int64(n)
			s.total += int64(n)
		}
		if err != nil {
			s.done = true
			if !errors.Is(err, io.EOF) {
				s.err = err
			} else if trailers != nil {
				s.trailers = nonEmpty(trailers())
			}
		}
		s.notifyLocked()
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// waitRoom blocks while the pending data is over the high mark; false
// means the source was stopped.
func (s *bodySource) waitRoom() bool {
	for {
		s.mu.Lock()
		over := s.high > 0 && s.size > s.high
		ch := s.changed
		s.mu.Unlock()
		if !over {
			return true
		}
		select {
		case <-ch:
		case <-s.stop:
			return false
		}
	}
}

func (s *bodySource) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// close stops reading; the caller closes the underlying body.
func (s *bodySource) close() { s.stopOnce.Do(func() { close(s.stop) }) }

// wait returns a channel closed at the next change.
func (s *bodySource) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// take removes the oldest pending chunk.
func (s *bodySource) take() (chunk, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return chunk{}, false
	}
	c := s.pending[0]
	s.pending = s.pending[1:]
	s.size -= int64(len(c.data))
	s.notifyLocked()
	return c, true
}

// takeAll removes every pending chunk, joined into one (data that
// arrived while a filter was paused goes on as one buffer); eof says the
// body has ended with it.
func (s *bodySource) takeAll() chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out chunk
	for _, c := range s.pending {
		out.data = append(out.data, c.data...)
		out.eof = out.eof || c.eof
	}
	s.pending = nil
	s.size = 0
	s.notifyLocked()
	return out
}

// state reports, without waiting, whether the body has ended, how, and
// how much is pending.
func (s *bodySource) state() (done bool, err error, trailers http.Header, pending int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done, s.err, s.trailers, s.size
}

// ended reports whether the body has ended, trailers included.
func (s *bodySource) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// setHigh changes the mark past which reading pauses (0: never).
func (s *bodySource) setHigh(high int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.high = high
	s.notifyLocked()
}

// endTrailers returns the trailers the body ended in (nil when none, or
// not ended yet).
func (s *bodySource) endTrailers() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trailers
}

// reader reads the source's data in order, blocking for more; it ends
// with the source's error, or io.EOF. Taken data is gone from the source.
func (s *bodySource) reader(done <-chan struct{}) io.Reader {
	return &sourceReader{s: s, done: done}
}

type sourceReader struct {
	s    *bodySource
	done <-chan struct{}
	buf  []byte
	eof  bool
}

var errSourceStopped = errors.New("front: body no longer read")

func (r *sourceReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			_, err, _, _ := r.s.state()
			if err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		ch := r.s.wait()
		if c, ok := r.s.take(); ok {
			r.buf, r.eof = c.data, c.eof
			continue
		}
		select {
		case <-ch:
		case <-r.done:
			return 0, errSourceStopped
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// nonEmpty returns h when it holds a value, nil otherwise (net/http
// lists declared trailers with no value when none came).
func nonEmpty(h http.Header) http.Header {
	var out http.Header
	for k, vv := range h {
		if len(vv) > 0 {
			if out == nil {
				out = http.Header{}
			}
			out[k] = append([]string(nil), vv...)
		}
	}
	return out
}
