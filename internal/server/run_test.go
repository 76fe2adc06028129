package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

func TestRunServesAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("store: {backend: bbolt, bbolt: {path: "+filepath.Join(dir, "db")+"}}\npolicies:\n- {name: p, tokens_per_minute: 10}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--config", cfg, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, pw, &stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v (stderr: %s)", err, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	fields := readyFields(t, line)
	resp, err := http.Get("http://" + fields["admin"] + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Stat(filepath.Join(dir, "db")); err != nil {
		t.Errorf("bbolt file not created: %v", err)
	}
}

func readyFields(t *testing.T, line string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "tokengate ready ")
	if !ok {
		t.Fatalf("ready line = %q", line)
	}
	return proc.ReadyFields(rest)
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("policies:\n- {name: p, tokens_per_minut: 10}\n"), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad}, "unknown field tokens_per_minut"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--fake-clock", "yesterday"}, "--fake-clock"},
		{[]string{"--nope"}, "flag provided but not defined"},
		{[]string{"extra"}, "unexpected arguments"},
	}
	for i, tt := range tests {
		err := Run(context.Background(), tt.args, io.Discard, io.Discard)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("step %d: Run(%v) = %v, want exit 2 mentioning %q", i, tt.args, err, tt.want)
		}
	}
}
