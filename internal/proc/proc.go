// Package proc starts tokengate's child binaries, waits until they serve,
// and stops them: the one place the tests, the bench tool and tokenlab run
// a server as a process of its own.
package proc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailBytes is how much of a child's stderr an error message quotes.
const TailBytes = 4096

// Options tune how a child is started and when it counts as ready. The
// zero value follows the convention of tokengate's binaries: the child is
// ready at its line "<name> ready key=value..." on stdout.
type Options struct {
	// Name is the child's name in its ready line and in errors; "" is the
	// binary's base name.
	Name string
	// ReadyLine, when set, replaces the ready line: the child is ready at
	// the first whole stdout line it accepts (and has no fields).
	ReadyLine func(line string) bool
	// Probe, when set, replaces the ready line: the child is ready once
	// Probe returns nil, called every ProbeEvery (20 ms when zero), for
	// servers that print nothing (redis-server at log level warning, Envoy).
	Probe      func() error
	ProbeEvery time.Duration
	// ReadyTimeout bounds Start's wait for readiness; zero leaves it to
	// the context.
	ReadyTimeout time.Duration
	// Keep is how many bytes of each output stream are kept for Stdout,
	// Stderr and error messages; zero keeps everything (tests read a
	// child's whole log), a bound suits a long run.
	Keep int
	// KillWithParent has the kernel kill the child when this process dies
	// (Linux only), for a tool that may be killed before it can stop its
	// children.
	KillWithParent bool
}

// Process is one running child. It runs in a process group of its own,
// so a Ctrl-C reaches its parent alone and Kill ends what it started too.
type Process struct {
	name   string
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	probe  func() error
	every  time.Duration

	readyOnce sync.Once
	ready     chan struct{} // closed once the child is ready
	fields    map[string]string
	exited    chan struct{} // closed once the child is reaped
	err       error         // cmd.Wait's, once exited is closed
}

// Launch starts bin and returns at once; WaitReady waits for it to serve.
func Launch(bin string, args []string, opts Options) (*Process, error) {
	p := &Process{
		name:   opts.Name,
		probe:  opts.Probe,
		every:  opts.ProbeEvery,
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	if p.name == "" {
		p.name = filepath.Base(bin)
	}
	if p.every <= 0 {
		p.every = 20 * time.Millisecond
	}
	p.stdout = &output{keep: opts.Keep}
	p.stderr = &output{keep: opts.Keep}
	switch {
	case opts.ReadyLine != nil:
		p.stdout.onLine = func(line string) bool {
			if !opts.ReadyLine(line) {
				return false
			}
			p.markReady(nil)
			return true
		}
	case opts.Probe == nil:
		p.stdout.onLine = func(line string) bool {
			rest, ok := strings.CutPrefix(line, p.name+" ready")
			if !ok || (rest != "" && rest[0] != ' ') {
				return false
			}
			p.markReady(ReadyFields(rest))
			return true
		}
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = sysProcAttr(opts.KillWithParent)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Start launches bin and returns once it is ready. A child that exits,
// is not ready within opts.ReadyTimeout, or outlives ctx first is killed
// and reported with the end of its stderr.
func Start(ctx context.Context, bin string, args []string, opts Options) (*Process, error) {
	p, err := Launch(bin, args, opts)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, opts.ReadyTimeout); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// ReadyFields parses the key=value fields after "<name> ready"; words
// without "=" are skipped.
func ReadyFields(rest string) map[string]string {
	fields := map[string]string{}
	for _, f := range strings.Fields(rest) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	return fields
}

func (p *Process) markReady(fields map[string]string) {
	p.readyOnce.Do(func() {
		p.fields = fields
		close(p.ready)
	})
}

// WaitReady waits until the child is ready; an exit, the timeout (zero:
// none) or ctx's end first is an error that quotes stderr.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration) error {
	if p.probe != nil {
		return p.waitProbe(ctx, timeout)
	}
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		select {
		case <-p.ready: // printed, then exited: ready all the same
			return nil
		default:
			return p.exitedBeforeReady()
		}
	case <-expired:
		return fmt.Errorf("%s printed no ready line within %v; its stderr ends:\n%s", p.name, timeout, p.stderrTail())
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w", p.name, ctx.Err())
	}
}

// waitProbe polls the probe until it passes, the child exits, the
// timeout passes or ctx ends.
func (p *Process) waitProbe(ctx context.Context, timeout time.Duration) error {
	polling, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-polling.Done():
		}
	}()
	if timeout <= 0 {
		timeout = math.MaxInt64 // none: ctx alone bounds the wait
	}
	err := Poll(polling, timeout, p.every, p.probe)
	switch {
	case err == nil:
		p.markReady(nil)
		return nil
	case p.Exited():
		return p.exitedBeforeReady()
	case ctx.Err() != nil:
		return fmt.Errorf("%s not ready: %w", p.name, ctx.Err())
	default:
		return fmt.Errorf("%s not ready %w; its stderr ends:\n%s", p.name, err, p.stderrTail())
	}
}

func (p *Process) exitedBeforeReady() error {
	return fmt.Errorf("%s exited before it was ready (%v); its stderr ends:\n%s", p.name, p.cmd.ProcessState, p.stderrTail())
}

// Stop sends SIGTERM, so the child drains as in production, and waits for
// it to exit; past timeout its whole group is killed. The error reports a
// kill, or an exit other than a clean one, with the end of stderr.
func (p *Process) Stop(timeout time.Duration) error {
	if !p.Exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH) {
			p.Kill()
			return fmt.Errorf("stop %s: %w", p.name, err)
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-p.exited:
		case <-timer.C:
			p.Kill()
			return fmt.Errorf("%s did not stop within %v of SIGTERM and was killed", p.name, timeout)
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w; its stderr ends:\n%s", p.name, p.err, p.stderrTail())
	}
	return nil
}

// Kill sends SIGKILL to the child's whole group, as a crash or an OOM
// kill would end it, and returns once the child is reaped.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Signal sends sig to the child itself (not its group).
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the child to exit and returns its exit
// code (-1 when a signal killed it).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
		return 0, fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// Done is closed once the child has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Exited reports whether the child has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Alive is nil while the child runs; after it exited, an error saying
// how, with the end of its stderr.
func (p *Process) Alive() error {
	if !p.Exited() {
		return nil
	}
	return fmt.Errorf("%s exited (%v); its stderr ends:\n%s", p.name, p.cmd.ProcessState, p.stderrTail())
}

// Pid is the child's operating-system id, for what only /proc tells
// (CPU time, resident memory) or only a syscall does (resource limits).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Field returns a key=value field of the ready line ("" before it).
func (p *Process) Field(key string) string {
	select {
	case <-p.ready:
		return p.fields[key]
	default:
		return ""
	}
}

// Stdout returns what the child wrote to stdout (the last Options.Keep
// bytes of it, when set).
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the child wrote to stderr (the last Options.Keep
// bytes of it, when set).
func (p *Process) Stderr() string { return p.stderr.String() }

func (p *Process) stderrTail() string { return Tail(p.Stderr(), TailBytes) }

// Tail is the last n bytes of s, marked with "…" when cut.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
