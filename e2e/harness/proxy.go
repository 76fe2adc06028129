package harness

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxyChunk is the most one read forwards at a time: a Redis reply of a
// few hundred bytes goes whole, a bulk transfer in pieces.
const proxyChunk = 32 << 10

// proxyQueue bounds the chunks read but not yet written on one direction
// of one connection: a reader that runs that far ahead of the delay waits,
// so a stalled peer cannot make the proxy buffer without end.
const proxyQueue = 256

// LatencyProxy is a TCP pass-through on loopback that delays what the
// target sends back by a settable amount: a slow network or a slow
// server, as a client such as tokengate sees it. Only the reply direction
// is delayed, so a round trip takes Delay longer and the target still
// runs each command as soon as it arrives — a reply that misses the
// client's read timeout was nonetheless acted on, as with a real slow
// link. The delay is latency, not a throughput cap: each chunk is held
// until Delay after it was read, however many follow it, and a change of
// delay applies to chunks read from then on.
type LatencyProxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	delay  atomic.Int64 // time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	total  atomic.Int64 // connections accepted
}

// StartLatencyProxy listens on a free loopback port and forwards every
// connection to target (host:port) with no delay until SetDelay; it stops,
// closing every connection, when the test ends.
func StartLatencyProxy(t testing.TB, target string) *LatencyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: latency proxy: %v", err)
	}
	p := &LatencyProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port, to give the client instead of the
// target's.
func (p *LatencyProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay sets how late the target's bytes reach the client from now on.
func (p *LatencyProxy) SetDelay(d time.Duration) { p.delay.Store(int64(max(d, 0))) }

// Delay is the current delay.
func (p *LatencyProxy) Delay() time.Duration { return time.Duration(p.delay.Load()) }

// Accepted counts the client connections accepted so far.
func (p *LatencyProxy) Accepted() int64 { return p.total.Load() }

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines to end. It may be called more than once.
func (p *LatencyProxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		_ = p.ln.Close()
		for c := range p.conns {
			_ = c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track registers c for Close; false when the proxy is already closed.
func (p *LatencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *LatencyProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *LatencyProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.total.Add(1)
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve pipes one connection both ways and closes both ends once either
// direction ends.
func (p *LatencyProxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return // the client sees its connection closed, as with a dead target
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(server, client)
		done <- struct{}{}
	}()
	go func() {
		p.delayed(client, server)
		done <- struct{}{}
	}()
	<-done
	// One side ended: closing both ends the other copy.
	_ = client.Close()
	_ = server.Close()
	<-done
}

type stamped struct {
	due  time.Time
	data []byte
}

// delayed copies src to dst, each chunk written no sooner than the delay
// after it was read.
func (p *LatencyProxy) delayed(dst, src net.Conn) {
	q := make(chan stamped, proxyQueue)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, proxyChunk)
			n, err := src.Read(buf)
			if n > 0 {
				q <- stamped{due: time.Now().Add(p.Delay()), data: buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	failed := false
	for c := range q {
		if failed {
			continue // drain, so the reader is never stuck on a full queue
		}
		if wait := time.Until(c.due); wait > 0 {
			timer.Reset(wait)
			<-timer.C
		}
		if _, err := dst.Write(c.data); err != nil {
			failed = true
			// The reader ends once serve closes src.
			_ = src.Close()
		}
	}
}
