// Package harness builds and starts tokengate's real binaries for the
// end-to-end tests, and wires them behind the Envoy-faithful front (or a
// real Envoy) as one Stack.
package harness

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokengate/tokengate/internal/proc"
)

// Binaries are the commands the end-to-end tests run.
var Binaries = []string{"tokengate", "openai-mock"}

var (
	builtMu sync.Mutex
	built   map[string]string // the set last built, StartStack's default
)

// ModuleRoot is proc.ModuleRoot: the module's root, found by walking up
// from the working directory to go.mod.
func ModuleRoot() (string, error) { return proc.ModuleRoot() }

// BuildBinaries builds every command of Binaries into dir and returns
// their paths by name. Tests call it once, from TestMain, into a temporary
// directory; the result also becomes StartStack's default.
func BuildBinaries(dir string) (map[string]string, error) {
	root, err := proc.ModuleRoot()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var errs []error
	for _, name := range Binaries {
		path := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", path, "./cmd/"+name)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, msg))
			continue
		}
		out[name] = path
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	builtMu.Lock()
	built = out
	builtMu.Unlock()
	return out, nil
}

// binaries is bins, or when nil the set BuildBinaries built last; it
// fails the test without tokengate and openai-mock.
func binaries(t testing.TB, bins map[string]string) map[string]string {
	t.Helper()
	if bins == nil {
		builtMu.Lock()
		bins = built
		builtMu.Unlock()
	}
	if bins["tokengate"] == "" || bins["openai-mock"] == "" {
		t.Fatal("harness: no binaries: call BuildBinaries first (in TestMain)")
	}
	return bins
}
