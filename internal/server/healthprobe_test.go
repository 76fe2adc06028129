package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// healthProbe finds grpc-health-probe: $GRPC_HEALTH_PROBE (set by
// .ci/run, which installs it), else PATH.
func healthProbe(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRPC_HEALTH_PROBE"); p != "" {
		return p
	}
	if p, err := exec.LookPath("grpc-health-probe"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("grpc-health-probe not installed; .ci/run must install it")
	}
	t.Skip("grpc-health-probe not installed: go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62")
	return ""
}

// probeExit runs the probe and returns its exit code: 0 SERVING, 4
// NOT_SERVING, 2 connection failure (the tool's documented codes).
func probeExit(t *testing.T, bin, addr string) int {
	t.Helper()
	err := exec.Command(bin, "-addr="+addr, "-connect-timeout=2s", "-rpc-timeout=2s").Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func TestHealthProbeServingThenDraining(t *testing.T) {
	bin := healthProbe(t)
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("store: {backend: memory}\npolicies:\n- {name: p, tokens_per_minute: 10}\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "3s"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	addr := readyFields(t, line)["grpc"]
	if code := probeExit(t, bin, addr); code != 0 {
		t.Fatalf("running: grpc-health-probe exit %d, want 0 (SERVING)", code)
	}
	cancel() // as SIGTERM does
	deadline := time.Now().Add(2 * time.Second)
	for code := probeExit(t, bin, addr); code != 4; code = probeExit(t, bin, addr) {
		if time.Now().After(deadline) {
			t.Fatalf("draining: grpc-health-probe exit %d, want 4 (NOT_SERVING)", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
