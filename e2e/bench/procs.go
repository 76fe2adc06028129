package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds a server's start: tokengate loads its vocabularies
// before it says ready, which takes a second or two on a slow machine.
const readyTimeout = 60 * time.Second

// stopTimeout is how long a server may drain after SIGTERM before SIGKILL.
const stopTimeout = 20 * time.Second

// moduleRoot is the directory of go.mod, where the servers are built from,
// so the tool runs from any directory inside the module.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the tokengate repository")
	}
	return filepath.Dir(mod), nil
}

// build compiles the servers into dir, as the end-to-end tests do: the
// measured binaries are ordinary builds, not test binaries.
func build(ctx context.Context, root, dir string) (tokengate, nop string, err error) {
	tokengate, nop = filepath.Join(dir, "tokengate"), filepath.Join(dir, "nop")
	for _, b := range [][2]string{{tokengate, "./cmd/tokengate"}, {nop, "./e2e/bench/nop"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", b[1], err, out)
		}
	}
	return tokengate, nop, nil
}

// proc is one server process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	fields map[string]string // the ready line's key=value pairs
	stderr *tail
	done   chan struct{}
	err    error // the process's exit, once done is closed
}

// start runs bin and, when ready is set, waits for its "<name> ready k=v…"
// line on stdout, the convention of tokengate's binaries; without it the
// caller checks readiness its own way.
func start(name, bin string, args []string, ready bool) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), stderr: &tail{max: 4096}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = sysProcAttr()
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	lines := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if f, ok := parseReady(sc.Text(), name); ok && !found {
				found = true
				lines <- f
			}
		}
		// Keep reading to the end so the child never blocks on a full pipe.
		io.Copy(io.Discard, stdout)
	}()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	if !ready {
		return p, nil
	}
	select {
	case p.fields = <-lines:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready: %v\n%s", name, p.err, p.stderr)
	case <-time.After(readyTimeout):
		p.stop()
		return nil, fmt.Errorf("%s not ready after %v\n%s", name, readyTimeout, p.stderr)
	}
}

// parseReady reads "<name> ready k=v k=v"; ok is false for any other line.
func parseReady(line, name string) (map[string]string, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != name || f[1] != "ready" {
		return nil, false
	}
	out := map[string]string{}
	for _, kv := range f[2:] {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out, true
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to end (SIGTERM, so tokengate drains and closes
// its store as in production) and kills it if it does not in time.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, stopTimeout)
	}
}

// alive reports an early exit, which would make a run's figures meaningless.
func (p *proc) alive() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.stderr)
	default:
		return nil
	}
}

// tail keeps the last max bytes written to it: enough of a server's
// stderr to say why it failed, without growing through a long run.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
