package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The children are /bin/sh scripts; sh's base name makes the ready line
// "sh ready ...".

// waitBound is how long a test waits for something that takes
// milliseconds on an idle machine: the suite shares two busy cores.
const waitBound = 10 * time.Second

func sh(t *testing.T, script string, opts Options) *Process {
	t.Helper()
	p, err := Launch("/bin/sh", []string{"-c", script}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestReadyFields(t *testing.T) {
	for i, c := range []struct {
		rest string
		want map[string]string
	}{
		{" grpc=127.0.0.1:4000 admin=127.0.0.1:4001", map[string]string{"grpc": "127.0.0.1:4000", "admin": "127.0.0.1:4001"}},
		{" grpc=[::1]:5 word", map[string]string{"grpc": "[::1]:5"}},
		{" a=b=c", map[string]string{"a": "b=c"}},
		{"", map[string]string{}},
	} {
		got := ReadyFields(c.rest)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("step %d: ReadyFields(%q) = %v, want %v", i, c.rest, got, c.want)
		}
	}
}

func TestReadyLineSplitAcrossWrites(t *testing.T) {
	p := sh(t, `printf 'starting\nsh readyish x=1\nsh rea'; printf 'dy grpc=127.0.0.1:5 admin=127.0.0.1:6\n'; echo oops >&2; exit 3`, Options{})
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"grpc": "127.0.0.1:5", "admin": "127.0.0.1:6", "x": ""} {
		if got := p.Field(k); got != want {
			t.Errorf("field %s = %q, want %q", k, got, want)
		}
	}
	code, err := p.Wait(waitBound)
	if err != nil || code != 3 {
		t.Errorf("exit %d (%v), want 3", code, err)
	}
	if p.Stderr() != "oops\n" || !strings.HasPrefix(p.Stdout(), "starting\n") {
		t.Errorf("stderr %q, stdout %q", p.Stderr(), p.Stdout())
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name string
		bin  string
		args []string
		opts Options
		want []string
	}{
		{"exits before ready", "/bin/sh", []string{"-c", `echo 'config: tokens_per_minut: unknown field' >&2; exit 2`}, Options{ReadyTimeout: waitBound},
			[]string{"sh exited before it was ready (exit status 2)", "tokens_per_minut"}},
		{"silent", "/bin/sh", []string{"-c", `echo loading >&2; exec sleep 30`}, Options{ReadyTimeout: 200 * time.Millisecond},
			[]string{"sh printed no ready line within 200ms", "loading"}},
		{"named", "/bin/sh", []string{"-c", `echo 'sh ready'; exec sleep 30`}, Options{Name: "tokengate", ReadyTimeout: 200 * time.Millisecond},
			[]string{"tokengate printed no ready line"}},
		{"no such binary", "/nonexistent/nothing-here", nil, Options{}, []string{"start nothing-here"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Start(context.Background(), tt.bin, tt.args, tt.opts)
			if err == nil {
				p.Kill()
				t.Fatal("started")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// A child that is not ready when ctx ends is killed, what it started too.
func TestStartEndsWithItsContext(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFile(t, pidFile)
		cancel()
	}()
	_, err := Start(ctx, "/bin/sh", []string{"-c", `sleep 30 & echo $! > ` + pidFile + `; wait`}, Options{ReadyTimeout: time.Minute})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestStopAndStopAgain(t *testing.T) {
	p := sh(t, `trap 'exit 0' TERM; echo 'sh ready'; while :; do sleep 0.01; done`, Options{})
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	if err := p.Alive(); err != nil {
		t.Errorf("Alive = %v while it runs", err)
	}
	if err := p.Stop(waitBound); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := p.Stop(waitBound); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := p.Alive(); err == nil || !strings.Contains(err.Error(), "sh exited (exit status 0)") {
		t.Errorf("Alive = %v after the stop", err)
	}
}

// A child that ignores SIGTERM is killed past the timeout, with the
// process it started: the whole group goes.
func TestStopKillsTheGroupPastTimeout(t *testing.T) {
	p := sh(t, `trap '' TERM; sleep 30 & echo "sh ready child=$!"; wait`, Options{})
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(p.Field("child"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not stop within 100ms of SIGTERM and was killed") {
		t.Errorf("Stop = %v, want a kill", err)
	}
	if !p.Exited() {
		t.Error("Stop returned before the child was reaped")
	}
	waitGone(t, child)
}

func TestKillEndsTheGroup(t *testing.T) {
	p := sh(t, `sleep 30 & echo "sh ready child=$!"; wait`, Options{})
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(p.Field("child"))
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if !p.Exited() {
		t.Error("Kill returned before the child was reaped")
	}
	if code, err := p.Wait(waitBound); err != nil || code != -1 {
		t.Errorf("exit %d (%v) after Kill, want -1", code, err)
	}
	waitGone(t, child)
	p.Kill() // once reaped, a no-op
}

func TestSignalAndWait(t *testing.T) {
	p := sh(t, `trap 'exit 7' USR1; echo 'sh ready'; while :; do sleep 0.01; done`, Options{})
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(50 * time.Millisecond); err == nil {
		t.Fatal("Wait returned while the child runs")
	}
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(waitBound); err != nil || code != 7 {
		t.Errorf("exit %d (%v) after SIGUSR1, want 7", code, err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done still open after Wait")
	}
}

func TestReadyLineOption(t *testing.T) {
	opts := Options{ReadyLine: func(line string) bool { return strings.Contains(line, "Ready to accept connections") }}
	p := sh(t, `echo '1:M * Ready to accept connections tcp'; exec sleep 30`, opts)
	if err := p.WaitReady(context.Background(), waitBound); err != nil {
		t.Fatal(err)
	}
	if p.Field("tcp") != "" {
		t.Error("a custom ready line has fields")
	}
}

func TestProbe(t *testing.T) {
	t.Run("passes", func(t *testing.T) {
		calls := 0
		probe := func() error {
			if calls++; calls < 3 {
				return fmt.Errorf("call %d: not yet", calls)
			}
			return nil
		}
		p := sh(t, `exec sleep 30`, Options{Probe: probe, ProbeEvery: time.Millisecond})
		if err := p.WaitReady(context.Background(), waitBound); err != nil || calls != 3 {
			t.Errorf("WaitReady = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("times out", func(t *testing.T) {
		probe := func() error { return errors.New("connection refused") }
		_, err := Start(context.Background(), "/bin/sh", []string{"-c", `echo booting >&2; exec sleep 30`},
			Options{Name: "redis-server", Probe: probe, ReadyTimeout: 100 * time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "redis-server not ready after 100ms: connection refused") || !strings.Contains(err.Error(), "booting") {
			t.Errorf("Start = %v, want the probe's last error and stderr", err)
		}
	})
	t.Run("exits", func(t *testing.T) {
		probe := func() error { return errors.New("connection refused") }
		began := time.Now()
		_, err := Start(context.Background(), "/bin/sh", []string{"-c", `echo 'bad port' >&2; exit 1`},
			Options{Probe: probe, ReadyTimeout: time.Minute})
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "bad port") {
			t.Errorf("Start = %v, want the exit and stderr", err)
		}
		if took := time.Since(began); took > 30*time.Second {
			t.Errorf("the exit was noticed after %v, not at once", took)
		}
	})
}

func TestKeepKeepsTheEnd(t *testing.T) {
	o := &output{keep: 8}
	for _, s := range []string{"0123456789", "ab", strings.Repeat("x", 20), "yz"} {
		o.Write([]byte(s))
	}
	if got := o.String(); got != "xxxxxxyz" {
		t.Errorf("kept %q, want the last 8 bytes", got)
	}
	if len(o.kept) > 2*o.keep {
		t.Errorf("%d bytes held for keep %d", len(o.kept), o.keep)
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), waitBound, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("Poll = %v after %d calls, want nil after 3", err, calls)
	}
	last := errors.New("still 2, want 3")
	err = Poll(context.Background(), 50*time.Millisecond, 10*time.Millisecond, func() error { return last })
	if !errors.Is(err, last) || !strings.HasPrefix(err.Error(), "after 50ms: ") {
		t.Errorf("Poll = %v, want the last error after the timeout", err)
	}
	if err := Poll(context.Background(), -time.Second, time.Hour, func() error { return last }); !errors.Is(err, last) {
		t.Errorf("Poll = %v with a bound already past, want the error at once", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, time.Hour, time.Hour, func() error { return last }); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll = %v, want context.Canceled", err)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module github.com/tokengate/tokengate\n") {
		t.Errorf("%s/go.mod: %.40q %v", root, mod, err)
	}
	t.Chdir(t.TempDir())
	if root, err := ModuleRoot(); err == nil {
		t.Errorf("ModuleRoot = %s outside the module", root)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d is not free: %v", port, err)
	}
	ln.Close()
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	err := Poll(context.Background(), waitBound, 5*time.Millisecond, func() error {
		b, err := os.ReadFile(path)
		if err == nil && !strings.HasSuffix(string(b), "\n") {
			return errors.New("half written")
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitGone waits until pid no longer runs: gone, or a zombie (a killed
// orphan stays one until init reaps it, which a container's init may
// never do).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	err := Poll(context.Background(), waitBound, 5*time.Millisecond, func() error {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil {
			_, after, _ := strings.Cut(string(stat), ") ")
			if strings.HasPrefix(after, "Z") {
				return nil
			}
		}
		return fmt.Errorf("process %d still runs", pid)
	})
	if err != nil {
		t.Error(err)
	}
}
