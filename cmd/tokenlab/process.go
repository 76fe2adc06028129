package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds the wait for a child's ready line; tokengate opens
// its store and both binaries load tokenizer vocabularies first.
const readyTimeout = 30 * time.Second

// stopTimeout bounds a graceful stop: tokengate drains and flushes bbolt.
const stopTimeout = 20 * time.Second

// process is one child binary (tokengate or openai-mock). Both print a
// fixed "<name> ready key=addr..." line once they serve; waiting for it is
// how tokenlab knows their kernel-chosen ports without ever sleeping.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *lineWatcher
	errs   *lineWatcher
	fields map[string]string
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

// startProcess runs bin and returns once it printed its ready line; a
// child that exits, stays silent past readyTimeout, or outlives ctx first
// is killed and reported with the end of its stderr.
func startProcess(ctx context.Context, bin string, args ...string) (*process, error) {
	name := filepath.Base(bin)
	ready := make(chan map[string]string, 1)
	p := &process{name: name, exited: make(chan struct{})}
	p.out = &lineWatcher{onLine: func(line string) bool {
		rest, ok := strings.CutPrefix(line, name+" ready")
		if !ok || (rest != "" && rest[0] != ' ') {
			return false
		}
		ready <- readyFields(rest)
		return true
	}}
	p.errs = &lineWatcher{}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errs
	// A group of its own: Ctrl-C reaches tokenlab alone, which then stops
	// the children in order instead of all of them dying at once.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case p.fields = <-ready:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before it was ready (%v); its stderr ends:\n%s", name, p.err, p.errs.tail())
	case <-timer.C:
		p.kill()
		return nil, fmt.Errorf("%s printed no ready line within %v; its stderr ends:\n%s", name, readyTimeout, p.errs.tail())
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

func readyFields(rest string) map[string]string {
	fields := map[string]string{}
	for _, f := range strings.Fields(rest) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	return fields
}

// stop sends SIGTERM and waits for a clean exit; past stopTimeout the
// whole group is killed.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return p.exitError()
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.kill()
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.exitError()
	case <-timer.C:
		p.kill()
		return fmt.Errorf("%s did not stop within %v after SIGTERM and was killed", p.name, stopTimeout)
	}
}

func (p *process) exitError() error {
	if p.err != nil {
		return fmt.Errorf("%s: %w; its stderr ends:\n%s", p.name, p.err, p.errs.tail())
	}
	return nil
}

// kill ends the child's whole group and waits until it is reaped.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// lineWatcher keeps the last bytes a child wrote and hands each whole line
// to onLine until onLine returns true.
type lineWatcher struct {
	onLine func(line string) bool

	mu      sync.Mutex
	kept    []byte
	pending []byte
	done    bool
}

// keepBytes is how much of a child's output is kept for error messages.
const keepBytes = 8 << 10

func (w *lineWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.kept = append(w.kept, b...)
	if len(w.kept) > 2*keepBytes {
		w.kept = append([]byte(nil), w.kept[len(w.kept)-keepBytes:]...)
	}
	if w.onLine == nil || w.done {
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
		if w.onLine(line) {
			w.done, w.pending = true, nil
			return len(b), nil
		}
	}
}

func (w *lineWatcher) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.kept) > keepBytes {
		return "…" + string(w.kept[len(w.kept)-keepBytes:])
	}
	return string(w.kept)
}
