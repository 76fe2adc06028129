package harness

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// ReadyTimeout is how long StartProcess waits for a ready line.
const ReadyTimeout = 20 * time.Second

// Process is one running binary (see proc.Process), ended with the test
// that started it. Its stdout is watched for the fixed "<name> ready
// key=value..." line the binaries print once they serve, so no test ever
// sleeps waiting for a port.
type Process struct {
	Name string
	Args []string
	*proc.Process
}

// Launch starts bin in its own process group and returns at once; the
// process is killed (group and all) when the test ends. Use it for runs
// expected to fail; StartProcess for servers.
func Launch(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	return launch(t, bin, args, proc.Options{})
}

func launch(t testing.TB, bin string, args []string, opts proc.Options) *Process {
	t.Helper()
	pp, err := proc.Launch(bin, args, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: filepath.Base(bin), Args: args, Process: pp}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s %s stderr (last 4 KiB):\n%s", p.Name, strings.Join(args, " "), proc.Tail(p.Stderr(), 4096))
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

// WaitReady waits for the ready line; an exit or the timeout first is an
// error that quotes stderr.
func (p *Process) WaitReady(timeout time.Duration) error {
	return p.Process.WaitReady(context.Background(), timeout)
}
