package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/envoy"
	"github.com/tokengate/tokengate/internal/openaimock"
	"github.com/tokengate/tokengate/internal/proc"
	"github.com/tokengate/tokengate/internal/server"
)

// labPolicy names the one policy of the local stack; metrics are read
// under this name.
const labPolicy = "lab"

// readyTimeout bounds a service's start: both load tokenizer vocabularies
// before they say ready, and tokengate opens its store.
const readyTimeout = 30 * time.Second

// stopTimeout bounds a graceful stop: tokengate drains and flushes bbolt.
const stopTimeout = 20 * time.Second

// stackOptions say how to bring up the local stack.
type stackOptions struct {
	envoyConfig     string // "" is the envoy.yaml embedded in this binary
	tokensPerMinute int
	keyHeader       string // the policy's one key header; "" for each API's own
	fakeClock       string // tests: start tokengate's limiter clock here (RFC 3339)
	clockRuns       bool   // tests: and let that clock run with real time
}

// stack is openai-mock, tokengate with the lab's policy on a temporary
// bbolt file, and the e2e front before them, all in this process. The
// front is a stand-in for Envoy: it reads the ext_proc filter from the
// same envoy.yaml a real Envoy would load and follows it, so the lab runs
// without Envoy, Docker or a checkout of the sources.
type stack struct {
	dir    string
	db     string
	url    string // the front: where clients send API calls
	admin  string // tokengate's admin address (metrics, fake clock)
	mock   *service
	gate   *service
	front  *front.Front
	closed bool
}

// startStack brings the stack up on free loopback ports. On error
// whatever had started is stopped again.
func startStack(ctx context.Context, so stackOptions) (_ *stack, err error) {
	s := &stack{}
	if s.dir, err = os.MkdirTemp("", "tokenlab-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	boot, err := envoy.Shipped()
	if so.envoyConfig != "" {
		boot, err = envoy.LoadBootstrap(so.envoyConfig)
	}
	if err != nil {
		return s, err
	}
	filter, err := envoy.ExtProcFilter(boot)
	if err != nil {
		return s, err
	}
	s.db = filepath.Join(s.dir, "tokengate.db")
	configPath := filepath.Join(s.dir, "tokengate.yaml")
	if err := os.WriteFile(configPath, labConfig(s.db, so.tokensPerMinute, so.keyHeader), 0o600); err != nil {
		return s, err
	}

	if s.mock, err = startService(ctx, "openai-mock", openaimock.Run, "--listen", "127.0.0.1:0"); err != nil {
		return s, err
	}
	args := []string{"--config", configPath, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "console"}
	if so.fakeClock != "" {
		args = append(args, "--fake-clock", so.fakeClock)
		if so.clockRuns {
			args = append(args, "--fake-clock-runs")
		}
	}
	if s.gate, err = startService(ctx, "tokengate", server.Run, args...); err != nil {
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

// labConfig is tokengate's configuration for the lab: one policy, the
// bbolt store of the default configuration. The policy names keyHeader,
// or no header at all: then tokengate reads each API's key where its
// clients send it (api-key, x-api-key, x-goog-api-key, the SigV4
// access key ID), so one policy keys callers of every API. tokengate
// warns about such a policy (a client may pick which header counts); the
// lab's mock upstream accepts any key anyway.
func labConfig(db string, tokensPerMinute int, keyHeader string) []byte {
	// A JSON string is a valid YAML double-quoted scalar, whatever the
	// path or header.
	path, _ := json.Marshal(db)
	counterKey := ""
	if keyHeader != "" {
		h, _ := json.Marshal(strings.ToLower(keyHeader)) // header names are case-insensitive
		counterKey = fmt.Sprintf("  counter_key: {header: [%s]}\n", h)
	}
	return fmt.Appendf(nil, `store:
  backend: bbolt
  bbolt: {path: %s, flush_interval: 1s}
policies:
- name: %s
%s  tokens_per_minute: %d
`, path, labPolicy, counterKey, tokensPerMinute)
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

// runFunc is a server's whole life as its command runs it: serve until
// ctx ends, printing "<name> ready key=value…" on stdout once serving.
type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// service is one server run in this process by the same Run its command
// calls, its ports learnt from its ready line as if it were a child.
type service struct {
	name   string
	fields map[string]string
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
}

// startService runs name's run in a goroutine and returns once it said
// ready; a run that ends, stays silent past readyTimeout, or outlives ctx
// first is stopped and reported with the end of its log.
func startService(ctx context.Context, name string, run runFunc, args ...string) (*service, error) {
	sctx, cancel := context.WithCancel(context.Background())
	sv := &service{name: name, cancel: cancel, done: make(chan error, 1), logs: &logBuffer{}}
	pr, pw := io.Pipe()
	ready := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), name+" ready")
			if ok && (rest == "" || rest[0] == ' ') {
				ready <- proc.ReadyFields(rest)
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr) // a server's later stdout is not ours to block
	}()
	go func() {
		err := run(sctx, args, pw, sv.logs)
		pw.Close()
		sv.done <- err
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var err error
	select {
	case sv.fields = <-ready:
		return sv, nil
	case err = <-sv.done:
		cancel()
		return nil, fmt.Errorf("%s ended before it was ready (%v); its log ends:\n%s", name, err, sv.logs.tail())
	case <-timer.C:
		err = fmt.Errorf("%s said no ready line within %v; its log ends:\n%s", name, readyTimeout, sv.logs.tail())
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(err, sv.stop())
}

// stop ends the service's run as a signal ends its command and waits for
// its clean exit, up to stopTimeout.
func (sv *service) stop() error {
	sv.cancel()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case err := <-sv.done:
		sv.done <- err // a second stop sees the same end
		if err != nil {
			return fmt.Errorf("%s: %w; its log ends:\n%s", sv.name, err, sv.logs.tail())
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("%s did not stop within %v", sv.name, stopTimeout)
	}
}

// logBuffer keeps what a service logged, for error messages.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*proc.TailBytes {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-proc.TailBytes:]...)
	}
	return len(p), nil
}

func (b *logBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return proc.Tail(string(b.buf), proc.TailBytes)
}
