package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisReadyTimeout bounds a redis-server start; it is ready in a few
// milliseconds on an idle machine.
const RedisReadyTimeout = 10 * time.Second

// redisReady is what redis-server logs once it accepts connections (7.x
// adds " tcp" after it; 6.x ends there).
const redisReady = "Ready to accept connections"

// Redis is a real redis-server on a free loopback port, with no
// persistence: a restart comes back empty, as a crashed cache node with
// `save ""` does. Kill and Restart let a test take it away mid-load and
// bring it back on the same address, which every tokengate keeps dialing.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	Port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *readyWriter
}

// StartRedis starts redis-server for the test and stops it when the test
// ends. Without the binary the test is skipped, except under CI, where
// .ci/run installs it and its absence is a failure.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; .ci/run must install it")
		}
		t.Skip("redis-server not installed: the Redis end-to-end tests are skipped")
	}
	r := &Redis{t: t, bin: bin, dir: t.TempDir(), Port: freePort(t)}
	r.start()
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.killLocked()
		if t.Failed() && r.log != nil {
			t.Logf("redis-server log (last 2 KiB):\n%s", tail(r.log.String(), 2048))
		}
	})
	return r
}

// Addr is host:port, for store.redis.addrs.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Running reports whether a server process is up.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// Kill sends SIGKILL, as a crash or an OOM kill would end it, and returns
// once the process is reaped: from then on every connection is refused.
func (r *Redis) Kill() time.Time {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatal("harness: redis-server is not running")
	}
	at := time.Now()
	r.killLocked()
	return at
}

// Freeze stops the server with SIGSTOP: connections stay open and new ones
// are still accepted by the kernel, but nothing is answered, as a server
// stuck in a long command or a paused VM behaves. Thaw resumes it; what
// clients sent meanwhile is then read and run.
func (r *Redis) Freeze() time.Time { return r.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server with SIGCONT.
func (r *Redis) Thaw() time.Time { return r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) time.Time {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatal("harness: redis-server is not running")
	}
	at := time.Now()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("harness: %v to redis-server: %v", sig, err)
	}
	return at
}

// Restart starts a new, empty server on the same port.
func (r *Redis) Restart() time.Time {
	r.t.Helper()
	if r.Running() {
		r.t.Fatal("harness: redis-server is still running; Kill it first")
	}
	r.start()
	return time.Now()
}

func (r *Redis) start() {
	r.t.Helper()
	log := &readyWriter{match: redisReady, ready: make(chan struct{})}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", "")
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.mu.Lock()
	r.cmd, r.exited, r.log = cmd, exited, log
	r.mu.Unlock()

	timer := time.NewTimer(RedisReadyTimeout)
	defer timer.Stop()
	select {
	case <-log.ready:
	case <-exited:
		r.mu.Lock()
		r.cmd = nil
		r.mu.Unlock()
		r.t.Fatalf("redis-server exited before it was ready on port %d:\n%s", r.Port, tail(log.String(), 2048))
	case <-timer.C:
		r.t.Fatalf("redis-server not ready on port %d after %v:\n%s", r.Port, RedisReadyTimeout, tail(log.String(), 2048))
	}
}

// killLocked kills the process group and waits for the reaper; r.mu is
// held.
func (r *Redis) killLocked() {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
}

// readyWriter keeps a process's output and closes ready at the first line
// containing match.
type readyWriter struct {
	match string
	ready chan struct{}

	mu    sync.Mutex
	all   bytes.Buffer
	found bool
}

func (w *readyWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.all.Len()
	w.all.Write(b)
	if !w.found {
		// Search from the line the new bytes continue, so a match split
		// across two writes is still seen.
		from := bytes.LastIndexByte(w.all.Bytes()[:start], '\n') + 1
		if strings.Contains(string(w.all.Bytes()[from:]), w.match) {
			w.found = true
			close(w.ready)
		}
	}
	return len(b), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// String describes the server for logs.
func (r *Redis) String() string { return fmt.Sprintf("redis-server %s", r.Addr()) }
