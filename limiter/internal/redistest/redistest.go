// Package redistest runs a real redis-server for the tests of the stores
// that use Redis; it is test support, never linked into a binary.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a real redis-server on a loopback port, for one test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string // after the defaults, which they override
	cmd  *exec.Cmd
}

// New runs a real redis-server on a free loopback port until the test
// ends. CI installs it; a developer machine without it skips, saying so.
// The server keeps nothing on disk unless args (extra command-line
// options, which override the defaults) turn persistence on: a restart,
// on the same port and directory, then finds its data again.
func New(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; .ci/run must install it")
		}
		t.Skip("redis-server not installed: Redis store tests skipped")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: ln.Addr().(*net.TCPAddr).Port, args: args}
	ln.Close()
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Start starts the server, again after Stop: on the same port and
// directory, so that a server with persistence finds its data.
func (s *Server) Start() {
	s.t.Helper()
	args := append([]string{"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		s.t.Fatal("redis-server did not become ready")
	}
}

// Stop kills the server at once, as a crash would.
func (s *Server) Stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Freeze stops the server's process (SIGSTOP), as a stalled server: the
// kernel still accepts connections and queues what clients send, which the
// server runs once thawed.
func (s *Server) Freeze() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}
