package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// running is an in-process tokengate: the ready line's addresses and the
// config file it was started with.
type running struct {
	grpc, admin string
	config      string
}

// writeConfig writes cfg (YAML) to a file in a test directory and returns
// its path.
func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokengate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startRun runs tokengate in-process on cfg (YAML) with free loopback
// ports. It stops at cleanup.
func startRun(t *testing.T, cfg string, extra ...string) running {
	t.Helper()
	return startRunLog(t, cfg, io.Discard, extra...)
}

// startRunLog is startRun with the log (Run's stderr) written to logw.
func startRunLog(t *testing.T, cfg string, logw io.Writer, extra ...string) running {
	t.Helper()
	path := writeConfig(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	args := append([]string{"--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, extra...)
	go func() {
		done <- Run(ctx, args, pw, logw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop")
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	f := readyFields(t, line)
	return running{grpc: f["grpc"], admin: f["admin"], config: path}
}

// openStream opens one ext_proc stream to addr, closed at cleanup.
func openStream(t *testing.T, addr string) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// syncBuffer is a bytes.Buffer that a running server may write to while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
