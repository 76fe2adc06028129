package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInstalledBinary is how a user gets the lab: a built tokenlab, run
// from a directory that has nothing of the repository in it, with no Go
// toolchain on its PATH. It prints the table with its 429s and writes the
// chart, and the binary links no part of the testing package.
func TestInstalledBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokenlab (-short)")
	}
	bin := filepath.Join(t.TempDir(), "tokenlab")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	nm, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	for _, line := range strings.Split(string(nm), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[len(f)-1], "testing.") {
			t.Errorf("tokenlab links the testing package: %s", line)
			break
		}
	}

	empty := t.TempDir()
	cmd := exec.Command(bin, "local", "--out", "chart.png")
	cmd.Dir = empty
	cmd.Env = []string{"HOME=" + empty, "PATH=/nonexistent", "TMPDIR=" + os.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("tokenlab local still running after 2 minutes\nstdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	if err != nil {
		t.Fatalf("tokenlab local: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	rows, _ := parseTable(t, stdout.String())
	refused := 0
	for _, r := range rows {
		if r.status == 429 {
			refused++
		}
	}
	if len(rows) != 10 || refused == 0 {
		t.Errorf("%d rows, %d refused; want 10 rows ending in 429s:\n%s", len(rows), refused, &stdout)
	}
	if fi, err := os.Stat(filepath.Join(empty, "chart.png")); err != nil || fi.Size() == 0 {
		t.Errorf("chart: %v", err)
	}
}
