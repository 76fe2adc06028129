package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/tokengate/tokengate/e2e/front"
)

// StopTimeout bounds a graceful tokengate shutdown (drain and flush).
const StopTimeout = 20 * time.Second

// StackOptions describe one stack.
type StackOptions struct {
	// ConfigYAML is tokengate's configuration; every {{DB}} is replaced by
	// a bbolt file path inside the test's temporary directory.
	ConfigYAML string
	// FakeClock, when set, starts tokengate's limiter clock at this RFC
	// 3339 time; it then moves only through Stack.Advance.
	FakeClock string
	// MockArgs are extra openai-mock flags, e.g. --completion-tokens 100.
	MockArgs []string
	// TokengateArgs are extra tokengate flags.
	TokengateArgs []string
	// Bins are the binaries by name; nil means the set BuildBinaries built
	// last.
	Bins map[string]string

	// Envoy is the Envoy release line the front imitates where ext_proc
	// differs between releases (local replies, protocol_config, when the
	// stream is closed); front.EnvoyPinned, the zero value, is the line
	// docker-compose.yaml runs.
	Envoy front.EnvoyVersion
	// RouteTimeout, when set, replaces envoy.yaml's route timeout, for the
	// front and for a real Envoy started with StartEnvoy.
	RouteTimeout time.Duration
	// Filter, when set, changes the ext_proc filter configuration read
	// from envoy.yaml (Stack.Filter) before anything uses it; StartEnvoy
	// writes the changed filter into the real Envoy's bootstrap too.
	Filter func(*extprocv3.ExternalProcessor)
	// Front, when set, changes the front's configuration last (see
	// Stack.FrontConfig).
	Front func(*front.Config)
}

// Stack is openai-mock and tokengate, with the front (Envoy's stand-in)
// configured from envoy/envoy.yaml in front of them.
type Stack struct {
	t    testing.TB
	opts StackOptions
	bins map[string]string

	Dir        string
	ConfigPath string
	DBPath     string
	Bootstrap  *bootstrapv3.Bootstrap
	Filter     *extprocv3.ExternalProcessor

	Mock      *Process
	Tokengate *Process
	Front     *front.Front
	// URL is where clients send API calls: the front, or a real Envoy.
	URL string

	client *http.Client
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// StartStack starts the mock and tokengate and puts the front before
// them; everything stops when the test ends.
func StartStack(t testing.TB, opts StackOptions) *Stack {
	t.Helper()
	bins := binaries(t, opts.Bins)
	s := &Stack{t: t, opts: opts, bins: bins, Dir: t.TempDir(), client: &http.Client{Timeout: 60 * time.Second}}
	s.DBPath = filepath.Join(s.Dir, "tokengate.db")
	s.ConfigPath = filepath.Join(s.Dir, "tokengate.yaml")
	cfg := strings.ReplaceAll(opts.ConfigYAML, "{{DB}}", s.DBPath)
	if err := os.WriteFile(s.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Bootstrap, s.Filter = loadEnvoy(t, opts.Filter)
	s.Mock = StartProcess(t, bins["openai-mock"], append([]string{"--listen", "127.0.0.1:0"}, opts.MockArgs...)...)
	s.StartTokengate()
	return s
}

// TokengateArgs are the flags a stack starts tokengate with.
func (s *Stack) TokengateArgs() []string {
	return TokengateArgs(s.ConfigPath, s.opts.FakeClock, s.opts.TokengateArgs...)
}

// TokengateArgs builds tokengate's command line for tests: loopback ports
// chosen by the kernel, console logs at debug level.
func TokengateArgs(configPath, fakeClock string, extra ...string) []string {
	args := []string{"--config", configPath, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--log-format", "console", "--log-level", "debug"}
	if fakeClock != "" {
		args = append(args, "--fake-clock", fakeClock)
	}
	return append(args, extra...)
}

// StartTokengate starts tokengate on the stack's config (again, after
// StopTokengate) and puts a new front before it: its port is new.
func (s *Stack) StartTokengate() {
	s.t.Helper()
	s.Tokengate = StartProcess(s.t, s.bins["tokengate"], s.TokengateArgs()...)
	if s.Front != nil {
		s.Front.Close()
	}
	s.Front, s.URL = StartFront(s.t, s.FrontConfig("http://"+s.Mock.Field("http")))
}

// StopTokengate sends SIGTERM and returns tokengate's exit code once it
// has drained and flushed.
func (s *Stack) StopTokengate() int {
	s.t.Helper()
	if err := s.Tokengate.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	code, err := s.Tokengate.Wait(StopTimeout)
	if err != nil {
		s.t.Fatal(err)
	}
	return code
}

// LaunchTokengate starts another tokengate on the stack's config without
// waiting for it to be ready, for runs expected to fail.
func (s *Stack) LaunchTokengate() *Process {
	s.t.Helper()
	return Launch(s.t, s.bins["tokengate"], s.TokengateArgs()...)
}

// Chat sends a gpt-4o chat completion with key in api-key (none when
// empty) and returns the response with its whole body.
func (s *Stack) Chat(key string, messages ...Message) (*http.Response, []byte) {
	s.t.Helper()
	body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": messages})
	if err != nil {
		s.t.Fatal(err)
	}
	req := s.Request("POST", "/v1/chat/completions", body)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("api-key", key)
	}
	return s.Do(req)
}

// Request builds a request to path on the stack's URL.
func (s *Stack) Request(method, path string, body []byte) *http.Request {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	return req
}

// Do sends req and returns the response with its whole body.
func (s *Stack) Do(req *http.Request) (*http.Response, []byte) {
	s.t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, body
}

// Advance moves tokengate's fake clock forward by d and returns the new
// time.
func (s *Stack) Advance(d time.Duration) time.Time {
	s.t.Helper()
	u := "http://" + s.Tokengate.Field("admin") + "/debug/clock?advance=" + url.QueryEscape(d.String())
	resp, body := s.Do(mustRequest(s.t, "POST", u))
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("advance clock by %v: %d %s", d, resp.StatusCode, body)
	}
	now, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(body)))
	if err != nil {
		s.t.Fatalf("advance clock by %v: answer %q: %v", d, body, err)
	}
	return now
}

// MockCalls returns how many inference calls reached openai-mock, in all
// and by path.
func (s *Stack) MockCalls() (int, map[string]int) {
	s.t.Helper()
	resp, body := s.Do(mustRequest(s.t, "GET", "http://"+s.Mock.Field("http")+"/mock/calls"))
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("mock calls: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Calls  int            `json:"calls"`
		ByPath map[string]int `json:"by_path"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Fatalf("mock calls: %q: %v", body, err)
	}
	return out.Calls, out.ByPath
}

func mustRequest(t testing.TB, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		t.Fatal(fmt.Errorf("harness: %w", err))
	}
	return req
}
