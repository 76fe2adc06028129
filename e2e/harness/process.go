package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout is how long StartProcess waits for a ready line.
const ReadyTimeout = 20 * time.Second

// Process is one running binary. Its stdout is watched for the fixed
// "<name> ready key=value..." line the binaries print once they serve, so
// no test ever sleeps waiting for a port.
type Process struct {
	Name string
	Args []string

	cmd    *exec.Cmd
	stdout *watcher
	stderr *watcher
	ready  chan struct{} // closed at the ready line
	exited chan struct{} // closed once the process is reaped
	fields map[string]string
}

// Launch starts bin in its own process group and returns at once; the
// process is killed (group and all) when the test ends. Use it for runs
// expected to fail; StartProcess for servers.
func Launch(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	name := filepath.Base(bin)
	p := &Process{
		Name:   name,
		Args:   args,
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	p.stdout = &watcher{prefix: name + " ready", onLine: p.sawReady}
	p.stderr = &watcher{}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s %s stderr (last 4 KiB):\n%s", name, strings.Join(args, " "), tail(p.Stderr(), 4096))
		}
	})
	return p
}

// StartProcess launches bin and waits for its ready line, failing the test
// if it does not come within ReadyTimeout.
func StartProcess(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p := Launch(t, bin, args...)
	if err := p.WaitReady(ReadyTimeout); err != nil {
		t.Fatal(err)
	}
	return p
}

// sawReady parses the key=value fields after "<name> ready".
func (p *Process) sawReady(rest string) {
	p.fields = map[string]string{}
	for _, f := range strings.Fields(rest) {
		if k, v, ok := strings.Cut(f, "="); ok {
			p.fields[k] = v
		}
	}
	close(p.ready)
}

// WaitReady waits for the ready line; an exit or the timeout first is an
// error that quotes stderr.
func (p *Process) WaitReady(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited (code %d) before its ready line; stderr:\n%s", p.Name, p.cmd.ProcessState.ExitCode(), tail(p.Stderr(), 4096))
	case <-timer.C:
		return fmt.Errorf("%s printed no ready line within %v; stderr:\n%s", p.Name, timeout, tail(p.Stderr(), 4096))
	}
}

// Field returns a key=value field of the ready line ("" before it).
func (p *Process) Field(key string) string {
	select {
	case <-p.ready:
		return p.fields[key]
	default:
		return ""
	}
}

// Signal sends sig to the process itself (not its group).
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
		return 0, fmt.Errorf("%s still running after %v", p.Name, timeout)
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stderr returns everything written to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Stdout returns everything written to stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// watcher keeps a process's output and reports the first whole line that
// is prefix or starts with prefix and a space.
type watcher struct {
	prefix string
	onLine func(rest string)

	mu      sync.Mutex
	all     bytes.Buffer
	pending []byte
	found   bool
}

func (w *watcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	if w.prefix == "" || w.found {
		return len(b), nil
	}
	w.pending = append(w.pending, b...)
	for {
		i := bytes.IndexByte(w.pending, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.pending[:i])
		w.pending = w.pending[i+1:]
		if rest, ok := strings.CutPrefix(line, w.prefix); ok && (rest == "" || rest[0] == ' ') {
			w.found = true
			w.pending = nil
			w.onLine(rest)
			return len(b), nil
		}
	}
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
