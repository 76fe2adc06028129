package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ignoreRule is one .dockerignore pattern compiled to a regexp on
// slash-separated paths from the context root.
type ignoreRule struct {
	pattern string
	re      *regexp.Regexp
}

// parseDockerignore compiles the patterns Docker's matcher accepts that
// the repository uses: *, ? and ** (any number of directories), matched
// from the context root, a match on a directory covering everything in
// it. Exceptions (!) and character classes are refused rather than
// half-understood.
func parseDockerignore(data []byte) ([]ignoreRule, error) {
	var rules []ignoreRule
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.ContainsAny(p, "![]\\") {
			return nil, fmt.Errorf("line %d: %q: exceptions, classes and escapes are beyond this check", n, p)
		}
		p = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		// A directory's pattern excludes what is under it.
		re.WriteString("(/.*)?$")
		rules = append(rules, ignoreRule{p, regexp.MustCompile(re.String())})
	}
	return rules, sc.Err()
}

// excludedBy returns the pattern that keeps file (slash-separated, from the
// context root) out of the build context, or "".
func excludedBy(rules []ignoreRule, file string) string {
	for _, r := range rules {
		if r.re.MatchString(file) {
			return r.pattern
		}
	}
	return ""
}

func loadDockerignore(t *testing.T) []ignoreRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseDockerignore(data)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	return rules
}

// buildInputs lists, from the repository root, every file of this module
// that `go build` reads for the binaries the Dockerfile builds.
func buildInputs(t *testing.T, root string, mains ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json=Dir,GoFiles,SFiles,HFiles,EmbedFiles,Module"}, mains...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir                                 string
			GoFiles, SFiles, HFiles, EmbedFiles []string
			Module                              *struct{ Main bool }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue // from the module cache, downloaded by `go mod download`
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, group := range [][]string{p.GoFiles, p.SFiles, p.HFiles, p.EmbedFiles} {
			for _, f := range group {
				files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	return files
}

func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	root := repoRoot(t)
	rules := loadDockerignore(t)
	stages := loadDockerfile(t)

	var mains []string
	for _, g := range goCommands(t, stageNamed(t, stages, "build")) {
		if g.args[0] == "build" {
			mains = append(mains, g.args[len(g.args)-1])
		}
	}
	inputs := buildInputs(t, root, mains...)
	if len(inputs) < 10 {
		t.Fatalf("go list found only %v; the check would prove nothing", inputs)
	}
	// Files the final stages COPY from the context.
	for _, s := range stages {
		for _, c := range s.all("COPY") {
			f := strings.Fields(c)
			if strings.HasPrefix(f[0], "--from=") || len(f) < 2 {
				continue
			}
			for _, src := range f[:len(f)-1] {
				if src != "." {
					inputs = append(inputs, src)
				}
			}
		}
	}
	for _, f := range inputs {
		if p := excludedBy(rules, f); p != "" {
			t.Errorf("%s is needed by the image build but .dockerignore's %q excludes it", f, p)
		}
	}
}

func TestDockerignoreDropsLeftovers(t *testing.T) {
	rules := loadDockerignore(t)
	for _, f := range []string{
		".git/HEAD",
		"extproc.test",         // go test -c at the root
		"limiter/limiter.test", // … or in a package
		"data/tokengate.db",    // the embedded default's store
		"cmd/tokengate/data/x", // … run from elsewhere
		"tokengate",            // go build at the root
		"cpu.prof",
		"docker-compose.yaml", // editing the stack must not rebuild
		"envoy/istio/tokengate.yaml",
	} {
		if excludedBy(rules, f) == "" {
			t.Errorf("%s would be sent to the build context", f)
		}
	}
}

func TestParseDockerignore(t *testing.T) {
	rules, err := parseDockerignore([]byte("# c\n\n.git\n**/*.test\n/docs\nenvoy/istio\na?c\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file, want string
	}{
		{".git", ".git"},
		{".git/objects/x", ".git"},
		{".github/x", ""},
		{"x.test", "**/*.test"},
		{"a/b/x.test", "**/*.test"},
		{"a/b/x.tests", ""},
		{"docs/a.md", "docs"},
		{"cmd/docs/a.go", ""},
		{"envoy/istio/x.yaml", "envoy/istio"},
		{"envoy/envoy.yaml", ""},
		{"abc", "a?c"},
		{"a/c", ""},
	}
	for _, tt := range tests {
		if got := excludedBy(rules, tt.file); got != tt.want {
			t.Errorf("excludedBy(%q): got %q, want %q", tt.file, got, tt.want)
		}
	}
	for _, bad := range []string{"!keep\n", "[ab]\n", `a\*` + "\n"} {
		if _, err := parseDockerignore([]byte(bad)); err == nil {
			t.Errorf("parseDockerignore(%q): accepted", bad)
		}
	}
}
