package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/internal/ports"
	"github.com/tokengate/tokengate/internal/proc"
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

	mu      sync.Mutex
	p       *proc.Process // the last server started, kept for its log
	running bool          // p runs, unless it died by itself
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
	r := &Redis{t: t, bin: bin, dir: t.TempDir(), Port: ports.Free(t)}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.killLocked()
		if t.Failed() && r.p != nil {
			t.Logf("redis-server log (last 2 KiB):\n%s", proc.Tail(r.p.Stdout(), 2048))
		}
	})
	r.start()
	return r
}

// Addr is host:port, for store.redis.addrs.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Running reports whether a server process is up.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// Kill sends SIGKILL, as a crash or an OOM kill would end it, and returns
// once the process is reaped: from then on every connection is refused.
func (r *Redis) Kill() time.Time {
	r.t.Helper()
	return r.act(func() error {
		r.killLocked()
		return nil
	})
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
	return r.act(func() error {
		if err := r.p.Signal(sig); err != nil {
			return fmt.Errorf("%v to redis-server: %w", sig, err)
		}
		return nil
	})
}

// act does what to the running server, r.mu held, and returns the time
// just before: the last instant the server certainly served.
func (r *Redis) act(what func() error) time.Time {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		r.t.Fatal("harness: redis-server is not running")
	}
	at := time.Now()
	if err := what(); err != nil {
		r.t.Fatalf("harness: %v", err)
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
	// The log goes to stdout (--logfile ""), where the ready line is.
	p, err := proc.Launch(r.bin, []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", ""},
		proc.Options{ReadyLine: func(line string) bool { return strings.Contains(line, redisReady) }})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.p, r.running = p, true
	r.mu.Unlock()
	if err := p.WaitReady(context.Background(), RedisReadyTimeout); err != nil {
		if p.Exited() {
			r.mu.Lock()
			r.running = false
			r.mu.Unlock()
		}
		r.t.Fatalf("redis-server on port %d: %v\nits log ends:\n%s", r.Port, err, proc.Tail(p.Stdout(), 2048))
	}
}

// killLocked kills the process group and waits for the reaper; r.mu is
// held.
func (r *Redis) killLocked() {
	if !r.running {
		return
	}
	r.p.Kill()
	r.running = false
}

// String describes the server for logs.
func (r *Redis) String() string { return fmt.Sprintf("redis-server %s", r.Addr()) }
