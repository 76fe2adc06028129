package main

import (
	"context"
	"os/exec"
	"strings"
)

// sourceOf names the code the servers were built from: the commit, and
// "+ uncommitted changes" when the tree that builds tokengate differs
// from it, so a figure can be traced to what it measured. Read-only git
// (no index refresh); empty outside a git checkout.
func sourceOf(ctx context.Context, root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"--no-optional-locks", "-C", root}, args...)...)
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	commit, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return ""
	}
	changes, err := git("status", "--porcelain", "--", "cmd/tokengate", "extproc", "limiter", "proto", "e2e/bench", "go.mod", "go.sum")
	if err == nil && changes != "" {
		return commit + " + uncommitted changes"
	}
	return commit
}
