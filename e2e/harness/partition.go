package harness

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Partition puts one client's view of a set of Redis servers (a cluster's
// nodes, or a sentinel group's sentinels and data nodes) behind loopback
// proxies that the test can cut and restore: a network partition of that
// client alone, the other clients talking to the same servers directly.
//
// A Redis client learns addresses from the servers (CLUSTER SLOTS, MOVED
// and ASK, a sentinel's master address and +switch-master), so a plain
// proxy before the first address would be bypassed at once. The proxies
// rewrite, in what the servers send back, every target port into its
// proxy's port, so the client only ever dials proxies. Ports are rewritten
// in the shapes the replies carry them ("127.0.0.1:P", "127.0.0.1 P", an
// integer ":P\r\n", a bulk string "$5\r\nP\r\n"); a proxy port has as many
// digits as its target's, so no length in a reply changes.
//
// Cut is a partition, not a refusal: connections stay open and new ones are
// accepted, but nothing goes through either way, so the client's calls time
// out as across a dead link. What was sent on a connection during the cut is
// dropped; those connections are closed at Restore (a client would have
// given up on them), and new ones then flow.
type Partition struct {
	t       testing.TB
	proxies map[string]*partProxy // by target
	rewrite []portSwap

	cut atomic.Bool
	mu  sync.Mutex
	// dead are the connections that saw a cut, closed at Restore.
	dead   map[net.Conn]struct{}
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type partProxy struct {
	ln     net.Listener
	target string
}

type portSwap struct{ from, to []byte }

// StartPartition starts one proxy per target (host:port on 127.0.0.1); they
// stop, closing every connection, when the test ends.
func StartPartition(t testing.TB, targets []string) *Partition {
	t.Helper()
	p := &Partition{t: t, proxies: map[string]*partProxy{}, dead: map[net.Conn]struct{}{}, conns: map[net.Conn]struct{}{}}
	t.Cleanup(p.Close)
	for _, target := range targets {
		host, port, err := net.SplitHostPort(target)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("harness: partition target %q: want 127.0.0.1:port", target)
		}
		var ln net.Listener
		for try := 0; ; try++ {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("harness: partition proxy: %v", err)
			}
			if _, lp, _ := net.SplitHostPort(ln.Addr().String()); len(lp) == len(port) {
				break
			}
			_ = ln.Close()
			if try > 100 {
				t.Fatalf("harness: no free port of %d digits for %s", len(port), target)
			}
		}
		_, lp, _ := net.SplitHostPort(ln.Addr().String())
		for _, shape := range []string{"127.0.0.1:%s", "127.0.0.1 %s", ":%s\r\n", "$" + strconv.Itoa(len(port)) + "\r\n%s\r\n"} {
			p.rewrite = append(p.rewrite, portSwap{[]byte(fmt.Sprintf(shape, port)), []byte(fmt.Sprintf(shape, lp))})
		}
		px := &partProxy{ln: ln, target: target}
		p.proxies[target] = px
		p.wg.Add(1)
		go p.accept(px)
	}
	return p
}

// Addr is the proxy address standing for target.
func (p *Partition) Addr(target string) string {
	px, ok := p.proxies[target]
	if !ok {
		p.t.Fatalf("harness: %s is not behind the partition", target)
	}
	return px.ln.Addr().String()
}

// Addrs maps targets to their proxies.
func (p *Partition) Addrs(targets []string) []string {
	out := make([]string, len(targets))
	for i, a := range targets {
		out[i] = p.Addr(a)
	}
	return out
}

// Cut stops all traffic through the proxies and returns the instant just
// before.
func (p *Partition) Cut() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := time.Now()
	p.cut.Store(true)
	for c := range p.conns {
		p.dead[c] = struct{}{}
	}
	return at
}

// Restore ends the cut: connections that saw it are closed, new ones flow.
// It returns the instant just after.
func (p *Partition) Restore() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.dead {
		_ = c.Close()
	}
	clear(p.dead)
	p.cut.Store(false)
	return time.Now()
}

// Close stops the proxies and closes every connection; it may be called
// more than once.
func (p *Partition) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, px := range p.proxies {
			_ = px.ln.Close()
		}
		for c := range p.conns {
			_ = c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Partition) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	if p.cut.Load() {
		p.dead[c] = struct{}{}
	}
	return true
}

func (p *Partition) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.dead, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Partition) isDead(c net.Conn) bool {
	if !p.cut.Load() {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, dead := p.dead[c]
		return dead
	}
	return true
}

func (p *Partition) accept(px *partProxy) {
	defer p.wg.Done()
	for {
		client, err := px.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(px, client)
	}
}

func (p *Partition) serve(px *partProxy, client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", px.target, 5*time.Second)
	if err != nil {
		return // the target is down: the client sees its connection closed
	}
	defer server.Close()
	done := make(chan struct{}, 2)
	go func() {
		p.pipe(server, client, client, nil)
		done <- struct{}{}
	}()
	go func() {
		p.pipe(client, server, client, p.rewrite)
		done <- struct{}{}
	}()
	<-done
	_ = client.Close()
	_ = server.Close()
	<-done
}

// pipe copies src to dst, rewriting ports when swaps are given, and drops
// what it reads once the connection (known by its client side) is dead.
func (p *Partition) pipe(dst, src, client net.Conn, swaps []portSwap) {
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isDead(client) {
			out := buf[:n]
			if swaps != nil {
				pending = append(pending, buf[:n]...)
				for _, s := range swaps {
					pending = replaceSame(pending, s.from, s.to)
				}
				keep := heldTail(pending, swaps)
				out = pending[:len(pending)-keep]
				if _, werr := dst.Write(out); werr != nil {
					return
				}
				pending = append(pending[:0], pending[len(pending)-keep:]...)
			} else if _, werr := dst.Write(out); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// replaceSame replaces from by to (of the same length) in place.
func replaceSame(b, from, to []byte) []byte {
	for i := 0; ; {
		j := bytes.Index(b[i:], from)
		if j < 0 {
			return b
		}
		copy(b[i+j:], to)
		i += j + len(from)
	}
}

// heldTail is the length of the longest end of b that begins some swap's
// pattern without completing it: those bytes wait for the next read. A
// complete reply ends in "\r\n", which begins no pattern, so nothing of a
// finished reply is ever held.
func heldTail(b []byte, swaps []portSwap) int {
	best := 0
	for _, s := range swaps {
		for k := min(len(s.from)-1, len(b)); k > best; k-- {
			if bytes.HasPrefix(s.from, b[len(b)-k:]) {
				best = k
				break
			}
		}
	}
	return best
}

// String lists the proxies.
func (p *Partition) String() string {
	var parts []string
	for target, px := range p.proxies {
		parts = append(parts, px.ln.Addr().String()+"→"+target)
	}
	return "partition " + strings.Join(parts, ", ")
}
