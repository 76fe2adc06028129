// Package harness builds and starts tokengate's real binaries for the
// end-to-end tests, and wires them behind the Envoy-faithful front (or a
// real Envoy) as one Stack.
package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// Binaries are the commands the end-to-end tests run.
var Binaries = []string{"tokengate", "openai-mock"}

var (
	builtMu sync.Mutex
	built   map[string]string // the set last built, StartStack's default
)

// ModuleRoot finds the module's root by walking up from the working
// directory to go.mod, so tests run from any package directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildBinaries builds every command of Binaries into dir and returns
// their paths by name. Tests call it once, from TestMain, into a temporary
// directory; the result also becomes StartStack's default.
func BuildBinaries(dir string) (map[string]string, error) {
	root, err := ModuleRoot()
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

func lastBuilt() map[string]string {
	builtMu.Lock()
	defer builtMu.Unlock()
	return built
}
