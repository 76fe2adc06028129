package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokengate/tokengate/extproc"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// checkConfigRun runs tokengate --check-config with args and returns its
// error, stdout and stderr. It must return without serving.
func checkConfigRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errw bytes.Buffer
	err = Run(ctx, append([]string{"--check-config"}, args...), &out, &errw)
	if ctx.Err() != nil || strings.Contains(out.String(), "tokengate ready") {
		t.Fatalf("--check-config served instead of exiting (stdout %q)", out.String())
	}
	return out.String(), errw.String(), err
}

func TestCheckConfigWarnsOfSeveralKeyHeaders(t *testing.T) {
	tests := []struct {
		name, cfg string
		warn      []string // substrings of stderr; nil: no warning at all
	}{
		{"several", "policies:\n- {name: chat, tokens_per_minute: 10, counter_key: {header: [api-key, authorization]}}\n",
			[]string{`warning: policies[0] ("chat"): counter_key.header lists several headers (api-key, authorization)`, "List exactly one header"}},
		{"default list", "policies:\n- {name: lab, tokens_per_minute: 10}\n",
			[]string{`warning: policies[0] ("lab"): counter_key.header is not set, so the default list applies (api-key, ocp-apim-subscription-key, authorization)`}},
		{"one header", "policies:\n- {name: p, tokens_per_minute: 10, counter_key: {header: [x-jwt-sub]}}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.cfg)
			stdout, stderr, err := checkConfigRun(t, "--config", path)
			if err != nil {
				t.Fatalf("--check-config = %v, want exit 0 (warnings do not fail it); stderr %q", err, stderr)
			}
			n := min(len(tt.warn), 1)
			if want := fmt.Sprintf("config ok: %s (policies: 1, warnings: %d)\n", path, n); stdout != want {
				t.Errorf("stdout = %q, want %q", stdout, want)
			}
			if tt.warn == nil && stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			for _, w := range tt.warn {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q\ndoes not contain %q", stderr, w)
				}
			}
		})
	}
}

func TestCheckConfigDefaultAndInvalid(t *testing.T) {
	// The embedded default is keyed by api-key alone: no warning.
	stdout, stderr, err := checkConfigRun(t)
	if err != nil || stdout != "config ok: the embedded default (policies: 1, warnings: 0)\n" || stderr != "" {
		t.Errorf("embedded default: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	// An invalid file exits 2 with the error, as a normal start does.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("policies:\n- {name: p, tokens_per_minut: 10}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = checkConfigRun(t, "--config", bad)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "unknown field tokens_per_minut") || stdout != "" {
		t.Errorf("invalid config: err %v, stdout %q; want exit 2 naming the field and no \"config ok\"", err, stdout)
	}
}

// The server logs the same warnings at start, at warn level.
func TestStartupLogWarnsOfSeveralKeyHeaders(t *testing.T) {
	var logs syncBuffer
	startRunLog(t, "store: {backend: memory}\npolicies:\n- {name: chat, tokens_per_minute: 10, counter_key: {header: [api-key, authorization]}}\n", &logs)
	var found bool
	for _, line := range strings.Split(logs.String(), "\n") {
		var e struct{ Level, Msg, Warning string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Level == "warn" && e.Msg == "config warning" && strings.Contains(e.Warning, `policies[0] ("chat"): counter_key.header lists several headers (api-key, authorization)`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no warn-level config warning in the startup log:\n%s", logs.String())
	}
}

// And again when SIGHUP loads a file that earns them.
func TestReloadLogsWarnings(t *testing.T) {
	path := writeConfig(t, "policies:\n- {name: lab, tokens_per_minute: 10}\n")
	core, logs := observer.New(zapcore.InfoLevel)
	proc := extproc.New(extproc.Options{Policies: policy.MustCompileAll(config.Default().Policies, config.Default().Prices), Store: memstore.New()})
	reload(path, proc, newMetrics(prometheus.NewRegistry()), zap.New(core))
	warns := logs.FilterMessage("SIGHUP: config warning").All()
	if len(warns) != 1 || warns[0].Level != zapcore.WarnLevel ||
		!strings.Contains(warns[0].ContextMap()["warning"].(string), `policies[0] ("lab"): counter_key.header is not set`) {
		t.Errorf("reload logged %v, want one SIGHUP config warning for policies[0]", logs.All())
	}
	if logs.FilterMessageSnippet("config reloaded").Len() != 1 {
		t.Errorf("reload did not apply the file: %v", logs.All())
	}
}
