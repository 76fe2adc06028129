package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// readyTimeout bounds a server's start: tokengate loads its vocabularies
// before it says ready, which takes a second or two on a slow machine.
const readyTimeout = 60 * time.Second

// stopTimeout is how long a server may drain after SIGTERM before SIGKILL.
const stopTimeout = 20 * time.Second

// serverOptions are how the tool starts its servers: a bounded start,
// the last 4 KiB of their output kept through a long run, and killed with
// the tool, even when the tool itself is killed and has no chance to stop
// them.
func serverOptions() proc.Options {
	return proc.Options{ReadyTimeout: readyTimeout, Keep: proc.TailBytes, KillWithParent: true}
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
