// Package redistest runs a real redis-server for the tests of the stores
// that use Redis; it is test support, never linked into a binary.
package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// Server is a real redis-server on a loopback port, for one test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string // after the defaults, which they override
	proc *proc.Process
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
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port, args: args}
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
	p, err := proc.Start(context.Background(), s.bin, args, proc.Options{
		ReadyLine:    func(line string) bool { return strings.Contains(line, "Ready to accept connections") },
		ReadyTimeout: 10 * time.Second,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.proc = p
}

// Stop kills the server at once, as a crash would.
func (s *Server) Stop() {
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}

// Freeze stops the server's process (SIGSTOP), as a stalled server: the
// kernel still accepts connections and queues what clients send, which the
// server runs once thawed.
func (s *Server) Freeze() {
	s.t.Helper()
	if err := s.proc.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	if err := s.proc.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}
