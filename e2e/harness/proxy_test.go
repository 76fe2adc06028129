package harness

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestLatencyProxy checks the proxy passes bytes through unchanged both
// ways, and that a reply comes no sooner than the delay after the request
// (a lower bound only: an upper one would time the machine, not the
// proxy).
func TestLatencyProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c) // echo
			}()
		}
	}()
	p := StartLatencyProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))

	for i, delay := range []time.Duration{0, 60 * time.Millisecond, 0} {
		p.SetDelay(delay)
		msg := bytes.Repeat([]byte{byte('a' + i)}, 100_000) // several chunks
		start := time.Now()
		go func() { _, _ = c.Write(msg) }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("step %d: read the echo: %v", i, err)
		}
		took := time.Since(start)
		if !bytes.Equal(got, msg) {
			t.Fatalf("step %d: the echo differs from what was sent", i)
		}
		if took < delay {
			t.Errorf("step %d: echo in %v, want at least the delay %v", i, took, delay)
		}
	}
	if p.Accepted() != 1 {
		t.Errorf("accepted %d connections, want 1", p.Accepted())
	}
	p.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection is still open after Close")
	}
}
