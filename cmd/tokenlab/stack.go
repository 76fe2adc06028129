package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/envoy"
)

// labPolicy names the one policy of the local stack; metrics are read
// under this name.
const labPolicy = "lab"

// stackOptions say how to bring up the local stack.
type stackOptions struct {
	binDir          string // tokengate and openai-mock, built there when missing; "" builds into the stack's temporary directory
	envoyConfig     string // "" is envoy/envoy.yaml of this module
	tokensPerMinute int
	fakeClock       string // tests: start tokengate's limiter clock here (RFC 3339)
	clockRuns       bool   // tests: and let that clock run with real time
	log             io.Writer
}

// stack is openai-mock, tokengate with the lab's policy on a temporary
// bbolt file, and the e2e front before them. The front is a test stand-in
// for Envoy: it reads the ext_proc filter from the same envoy.yaml a real
// Envoy would load and follows it, so the lab runs without Envoy or Docker.
type stack struct {
	dir    string
	db     string
	url    string // the front: where clients send API calls
	admin  string // tokengate's admin address (metrics, fake clock)
	mock   *process
	gate   *process
	front  *front.Front
	closed bool
}

// startStack brings the stack up on free loopback ports. On error
// whatever had started is stopped again.
func startStack(ctx context.Context, so stackOptions) (_ *stack, err error) {
	if so.log == nil {
		so.log = io.Discard
	}
	s := &stack{}
	if s.dir, err = os.MkdirTemp("", "tokenlab-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	binDir := so.binDir
	if binDir == "" {
		binDir = filepath.Join(s.dir, "bin")
	}
	bins, err := binaries(binDir, so.log)
	if err != nil {
		return s, err
	}
	envoyConfig := so.envoyConfig
	if envoyConfig == "" {
		root, err := harness.ModuleRoot()
		if err != nil {
			return s, fmt.Errorf("finding envoy/envoy.yaml: %w (run from the tokengate repository, or pass --envoy-config)", err)
		}
		envoyConfig = filepath.Join(root, "envoy", "envoy.yaml")
	}
	boot, err := envoy.LoadBootstrap(envoyConfig)
	if err != nil {
		return s, err
	}
	filter, err := envoy.ExtProcFilter(boot)
	if err != nil {
		return s, err
	}
	s.db = filepath.Join(s.dir, "tokengate.db")
	configPath := filepath.Join(s.dir, "tokengate.yaml")
	if err := os.WriteFile(configPath, labConfig(s.db, so.tokensPerMinute), 0o600); err != nil {
		return s, err
	}

	if s.mock, err = startProcess(ctx, bins["openai-mock"], "--listen", "127.0.0.1:0"); err != nil {
		return s, err
	}
	args := []string{"--config", configPath, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "console"}
	if so.fakeClock != "" {
		args = append(args, "--fake-clock", so.fakeClock)
		if so.clockRuns {
			args = append(args, "--fake-clock-runs")
		}
	}
	if s.gate, err = startProcess(ctx, bins["tokengate"], args...); err != nil {
		return s, err
	}
	s.admin = s.gate.fields["admin"]
	s.front, err = front.New(front.Config{
		Filter:      filter,
		ExtProcAddr: s.gate.fields["grpc"],
		Upstream:    "http://" + s.mock.fields["http"],
		// ExtProcFilter found a listener, so there is a first one.
		BufferLimit: int64(boot.GetStaticResources().GetListeners()[0].GetPerConnectionBufferLimitBytes().GetValue()),
	})
	if err != nil {
		return s, err
	}
	if s.url, err = s.front.Start("127.0.0.1:0"); err != nil {
		return s, err
	}
	return s, nil
}

// labConfig is tokengate's configuration for the lab: one policy keyed
// by api-key, the bbolt store of the default configuration.
func labConfig(db string, tokensPerMinute int) []byte {
	// A JSON string is a valid YAML double-quoted scalar, whatever the path.
	path, _ := json.Marshal(db)
	return fmt.Appendf(nil, `store:
  backend: bbolt
  bbolt: {path: %s, flush_interval: 1s}
policies:
- name: %s
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
`, path, labPolicy, tokensPerMinute)
}

// binaries returns tokengate and openai-mock from dir, building them there
// (from this module's sources) unless both are already present.
func binaries(dir string, log io.Writer) (map[string]string, error) {
	bins := map[string]string{}
	for _, name := range harness.Binaries {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			bins = nil
			break
		}
		bins[name] = path
	}
	if bins != nil {
		return bins, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "tokenlab: building tokengate and openai-mock into %s…\n", dir)
	bins, err := harness.BuildBinaries(dir)
	if err != nil {
		return nil, fmt.Errorf("building the stack (tokenlab local builds ./cmd/tokengate and ./cmd/openai-mock, so run it from the tokengate repository): %w", err)
	}
	return bins, nil
}

// waitRequests waits until the front has finished n requests, ext_proc
// streams included: a client can read a whole answer before tokengate
// has settled it.
func (s *stack) waitRequests(n int) error {
	_, err := s.front.WaitCompleted(n, 10*time.Second)
	return err
}

// close stops everything and removes the temporary directory. The front
// goes first: its gRPC connection would otherwise hold tokengate's drain.
func (s *stack) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.front != nil {
		errs = append(errs, s.front.Close())
	}
	if s.gate != nil {
		errs = append(errs, s.gate.stop())
	}
	if s.mock != nil {
		errs = append(errs, s.mock.stop())
	}
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}
