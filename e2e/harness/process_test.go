package harness

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The process itself is tried in internal/proc; here, what the harness
// adds: the ready wait that fails the test, and the end of the process
// group with the test. sh's base name makes the ready prefix "sh ready ".

func TestProcessEndsWithTheTest(t *testing.T) {
	var p *Process
	t.Run("run", func(t *testing.T) {
		p = StartProcess(t, "/bin/sh", "-c", `echo "sh ready grpc=127.0.0.1:5"; exec sleep 30`)
		if p.Name != "sh" || p.Field("grpc") != "127.0.0.1:5" {
			t.Errorf("name %q, ready field grpc=%q", p.Name, p.Field("grpc"))
		}
	})
	if !p.Exited() {
		t.Fatal("the process outlived its test")
	}
	if code, err := p.Wait(10 * time.Second); err != nil || code != -1 {
		t.Errorf("exit %d (%v) once its test ended, want -1: killed by the cleanup", code, err)
	}
}

func TestWaitReadyReportsAnEarlyExit(t *testing.T) {
	p := Launch(t, "/bin/sh", "-c", `echo 'config: tokens_per_minut: unknown field' >&2; exit 2`)
	err := p.WaitReady(10 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "tokens_per_minut") {
		t.Errorf("WaitReady = %v, want an error quoting stderr", err)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 10*time.Second, func() error {
		if n++; n < 3 {
			return fmt.Errorf("%d calls, want 3", n)
		}
		return nil
	})
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	notes, err := PollAll(2, 50*time.Millisecond, func(i int) (bool, string) { return i == 0, strconv.Itoa(i) })
	if err == nil || !strings.Contains(err.Error(), "not reached by [1]") || notes[1] != "1" {
		t.Errorf("PollAll = %v, %q; want index 1 named", err, notes)
	}
}
