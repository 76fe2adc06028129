package harness

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// The harness is tried on sh, whose base name makes the ready prefix
// "sh ready ".

func TestReadyLineSplitAcrossWrites(t *testing.T) {
	p := StartProcess(t, "/bin/sh", "-c",
		`printf 'starting\nsh rea'; printf 'dy grpc=127.0.0.1:5 admin=127.0.0.1:6\n'; echo oops >&2; exit 3`)
	if got := p.Field("grpc"); got != "127.0.0.1:5" {
		t.Errorf("grpc field %q, want 127.0.0.1:5", got)
	}
	if got := p.Field("admin"); got != "127.0.0.1:6" {
		t.Errorf("admin field %q, want 127.0.0.1:6", got)
	}
	code, err := p.Wait(10 * time.Second)
	if err != nil || code != 3 {
		t.Errorf("exit %d (%v), want 3", code, err)
	}
	if p.Stderr() != "oops\n" || !strings.HasPrefix(p.Stdout(), "starting\n") {
		t.Errorf("stderr %q, stdout %q", p.Stderr(), p.Stdout())
	}
}

func TestWaitReadyReportsAnEarlyExit(t *testing.T) {
	p := Launch(t, "/bin/sh", "-c", `echo 'config: tokens_per_minut: unknown field' >&2; exit 2`)
	err := p.WaitReady(10 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "tokens_per_minut") {
		t.Errorf("WaitReady = %v, want an error quoting stderr", err)
	}
}

func TestSignalAndWait(t *testing.T) {
	p := StartProcess(t, "/bin/sh", "-c", `trap 'exit 0' TERM; echo 'sh ready'; while :; do sleep 0.01; done`)
	if _, err := p.Wait(50 * time.Millisecond); err == nil {
		t.Fatal("Wait returned while the process runs")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(10 * time.Second); err != nil || code != 0 {
		t.Errorf("exit %d (%v) after SIGTERM, want 0", code, err)
	}
}
