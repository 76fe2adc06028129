package deploy

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/internal/proc"
)

// repoRoot is the repository root, where the Dockerfile, .dockerignore and
// docker-compose.yaml live and where docker builds from.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := proc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts, from 1
	cmd  string // upper case: FROM, RUN, COPY…
	args string
}

type stage struct {
	name, from string
	instrs     []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions. It knows
// only what the repository's Dockerfile uses (comments, backslash
// continuations, FROM … AS …) and is not a BuildKit parser.
func parseDockerfile(data []byte) ([]stage, error) {
	var (
		stages []stage
		cur    strings.Builder
		start  int
	)
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			} else if len(f) != 1 {
				return fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			return fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
		}
		st := &stages[len(stages)-1]
		st.instrs = append(st.instrs, in)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: continuation runs past the end of the file", start)
	}
	return stages, sc.Err()
}

func loadDockerfile(t *testing.T) []stage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(data)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return stages
}

func stageNamed(t *testing.T, stages []stage, name string) stage {
	t.Helper()
	for _, s := range stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

// all returns the arguments of every instruction cmd in the stage.
func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// execForm decodes the JSON array form of ENTRYPOINT or CMD. The shell
// form would need a shell, which distroless does not have.
func execForm(t *testing.T, s stage, cmd string) []string {
	t.Helper()
	args := s.all(cmd)
	if len(args) != 1 {
		t.Fatalf("stage %s: got %d %s instructions, want 1", s.name, len(args), cmd)
	}
	var v []string
	if err := json.Unmarshal([]byte(args[0]), &v); err != nil || len(v) == 0 {
		t.Fatalf("stage %s: %s %s: want the exec form, a JSON array of strings (%v)", s.name, cmd, args[0], err)
	}
	return v
}

// flagValue returns the value of --name in args, given as "--name v" or
// "--name=v".
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// shellWords splits a RUN command the way sh would for the simple commands
// the Dockerfile uses: words, single and double quotes, backslash escapes.
// Anything that would need a real shell (variables, pipes, lists,
// redirections, globs) is refused, so the test never runs something other
// than what Docker would.
func shellWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote rune
	)
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case quote == '"':
			switch c {
			case '"':
				quote = 0
			case '$', '`', '\\':
				return nil, fmt.Errorf("%q inside double quotes needs a real shell", c)
			default:
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case strings.ContainsRune("$`;|&<>*?()", c):
			return nil, fmt.Errorf("%q needs a real shell", c)
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// goCommand is a RUN of the build stage that runs the go tool.
type goCommand struct {
	env  []string // leading NAME=value words
	args []string // after "go"
}

func goCommands(t *testing.T, build stage) []goCommand {
	t.Helper()
	var out []goCommand
	for _, run := range build.all("RUN") {
		words, err := shellWords(run)
		if err != nil {
			t.Fatalf("RUN %s: %v", run, err)
		}
		i := 0
		for i < len(words) && strings.Contains(words[i], "=") {
			i++
		}
		if i < len(words) && words[i] == "go" {
			out = append(out, goCommand{env: words[:i], args: words[i+1:]})
		}
	}
	return out
}

// output is where a go command writes its binary in the build stage.
func (g goCommand) output() string {
	switch g.args[0] {
	case "build":
		o, _ := flagValue(g.args, "-o")
		return o
	case "install":
		// GOBIN/<last element of the package path, version stripped>.
		bin := ""
		for _, e := range g.env {
			if v, ok := strings.CutPrefix(e, "GOBIN="); ok {
				bin = v
			}
		}
		pkg, _, _ := strings.Cut(g.args[len(g.args)-1], "@")
		if bin == "" {
			return ""
		}
		return path.Join(bin, path.Base(pkg))
	}
	return ""
}

func TestDockerfileStages(t *testing.T) {
	stages := loadDockerfile(t)
	build := stageNamed(t, stages, "build")
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26 (go.mod's Go)", build.from)
	}
	if last := stages[len(stages)-1].name; last != "tokengate" {
		t.Errorf("last stage: got %q, want tokengate, what a plain `docker build .` produces", last)
	}

	// What the build stage makes, for the final stages to copy.
	built := map[string]bool{}
	for _, g := range goCommands(t, build) {
		if o := g.output(); o != "" {
			built[o] = true
		}
	}

	for _, name := range []string{"tokengate", "openai-mock"} {
		t.Run(name, func(t *testing.T) {
			s := stageNamed(t, stages, name)
			if s.from != "gcr.io/distroless/static-debian12:nonroot" {
				t.Errorf("FROM %s, want gcr.io/distroless/static-debian12:nonroot", s.from)
			}
			users := s.all("USER")
			if len(users) == 0 {
				t.Error("no USER: the image's user would be implicit")
			}
			for _, u := range users {
				if name, _, _ := strings.Cut(u, ":"); name == "root" || name == "0" {
					t.Errorf("USER %s: want a non-root user", u)
				}
			}
			copied := map[string]bool{} // paths in the image
			for _, c := range s.all("COPY") {
				f := strings.Fields(c)
				if f[0] != "--from=build" {
					continue
				}
				dst := f[len(f)-1]
				for _, src := range f[1 : len(f)-1] {
					if !built[src] {
						t.Errorf("COPY --from=build %s: no go build or install in the build stage writes it", src)
					}
					copied[path.Join(dst, path.Base(src))] = true
				}
			}
			entry := execForm(t, s, "ENTRYPOINT")
			if !copied[entry[0]] {
				t.Errorf("ENTRYPOINT %s: not a binary copied from the build stage (%v)", entry[0], copied)
			}
			if base := path.Base(entry[0]); base != name {
				t.Errorf("ENTRYPOINT %s: want the %s binary", entry[0], name)
			}
		})
	}
}

func TestDockerfileTokengateConfig(t *testing.T) {
	root := repoRoot(t)
	s := stageNamed(t, loadDockerfile(t), "tokengate")
	cmd := execForm(t, s, "CMD")
	cfgPath, ok := flagValue(cmd, "--config")
	if !ok {
		t.Fatalf("CMD %q: no --config; the image would run on the embedded default (bbolt in a read-only image)", cmd)
	}
	var baked string
	for _, c := range s.all("COPY") {
		f := strings.Fields(c)
		if len(f) == 2 && f[1] == cfgPath {
			baked = f[0]
		}
	}
	if baked == "" {
		t.Fatalf("no COPY writes %s, the CMD's --config", cfgPath)
	}
	cfg, err := config.Load(filepath.Join(root, baked))
	if err != nil {
		t.Fatalf("the baked config: %v", err)
	}

	var exposed []string
	for _, e := range s.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(e)...)
	}
	for field, addr := range map[string]string{"listen": cfg.Listen, "admin_listen": cfg.AdminListen} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s %q: %v", field, addr, err)
		}
		if !slices.Contains(exposed, port) {
			t.Errorf("%s port %s is not EXPOSEd (%v)", field, port, exposed)
		}
		// Loopback inside a container is unreachable from any other.
		if host != "0.0.0.0" && host != "" {
			t.Errorf("%s %q: want all interfaces inside the container", field, addr)
		}
	}

	mock := stageNamed(t, loadDockerfile(t), "openai-mock")
	listen, ok := flagValue(execForm(t, mock, "CMD"), "--listen")
	if !ok {
		t.Fatal("openai-mock CMD: no --listen; its default is loopback, out of Envoy's reach")
	}
	if host, port, err := net.SplitHostPort(listen); err != nil || host != "0.0.0.0" || !slices.Contains(mock.all("EXPOSE"), port) {
		t.Errorf("openai-mock --listen %s: want 0.0.0.0 and an EXPOSEd port (%v)", listen, mock.all("EXPOSE"))
	}
}

// TestDockerfileBuildsStaticBinaries runs every `go build` of the build
// stage as written (its environment, flags and package), only with -o
// pointing into a temporary directory, and checks that what comes out can
// run on distroless/static: statically linked, stripped, built with the
// intended flags.
func TestDockerfileBuildsStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binaries; skipped with -short")
	}
	root := repoRoot(t)
	var builds []goCommand
	for _, g := range goCommands(t, stageNamed(t, loadDockerfile(t), "build")) {
		if g.args[0] == "build" {
			builds = append(builds, g)
		}
	}
	if len(builds) != 3 {
		t.Fatalf("got %d go build commands, want 3 (tokengate, openai-mock, httpcheck)", len(builds))
	}
	dir := t.TempDir()
	for _, g := range builds {
		out := g.output()
		pkg := g.args[len(g.args)-1]
		t.Run(path.Base(out), func(t *testing.T) {
			args := slices.Clone(g.args)
			i := slices.Index(args, "-o")
			if i < 0 {
				t.Fatalf("go %v: no -o", g.args)
			}
			bin := filepath.Join(dir, path.Base(out))
			args[i+1] = bin
			cmd := exec.Command("go", args...)
			cmd.Dir = root
			// Docker builds for Linux whatever the host; the RUN's own
			// variables come last and win.
			cmd.Env = append(append(os.Environ(), "GOOS=linux"), g.env...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s go %s: %v\n%s", strings.Join(g.env, " "), strings.Join(g.args, " "), err, b)
			}
			checkStatic(t, bin)
			checkBuildInfo(t, bin, pkg, root)
		})
	}
}

func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("has a PT_INTERP program header: dynamically linked, needs a loader distroless/static lacks")
		case elf.PT_DYNAMIC:
			t.Error("has a PT_DYNAMIC program header: needs shared libraries")
		}
	}
	if f.Section(".dynamic") != nil {
		t.Error("has a .dynamic section")
	}
	if f.Section(".symtab") != nil {
		t.Error("has a .symtab section: -ldflags -s did not apply")
	}
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("has a %s section: -ldflags -w did not apply", s.Name)
			break
		}
	}
}

func checkBuildInfo(t *testing.T, bin, pkg, root string) {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if want := path.Join(info.Main.Path, strings.TrimPrefix(pkg, "./")); info.Path != want {
		t.Errorf("main package: got %s, want %s", info.Path, want)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	// -ldflags is not recorded under -trimpath (it could hold paths);
	// checkStatic sees its effect instead.
	for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux"} {
		if settings[k] != want {
			t.Errorf("build setting %s: got %q, want %q", k, settings[k], want)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(root)) {
		t.Errorf("the binary contains the build directory %s: -trimpath did not apply", root)
	}
}

func TestShellWords(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{`CGO_ENABLED=0 go build -ldflags="-s -w" -o /out/x ./cmd/x`, []string{"CGO_ENABLED=0", "go", "build", "-ldflags=-s -w", "-o", "/out/x", "./cmd/x"}, false},
		{`a 'b c' d\ e`, []string{"a", "b c", "d e"}, false},
		{`a ""`, []string{"a", ""}, false},
		{`go build $X`, nil, true},
		{`go mod download && go build`, nil, true},
		{`go build "$X"`, nil, true},
		{`echo 'unterminated`, nil, true},
		{`ls *.go`, nil, true},
	}
	for _, tt := range tests {
		got, err := shellWords(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("shellWords(%q): got %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseDockerfile(t *testing.T) {
	good := "# syntax=docker/dockerfile:1\nFROM a AS b\n# note\nRUN x \\\n  y\n\nFROM c\nCOPY --from=b /o /p\n"
	stages, err := parseDockerfile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []stage{
		{name: "b", from: "a", instrs: []instruction{{4, "RUN", "x    y"}}},
		{name: "", from: "c", instrs: []instruction{{8, "COPY", "--from=b /o /p"}}},
	}
	if fmt.Sprint(stages) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", stages, want)
	}
	for _, bad := range []string{"RUN x\n", "FROM a AS\n", "FROM a\nRUN x \\\n"} {
		if _, err := parseDockerfile([]byte(bad)); err == nil {
			t.Errorf("parseDockerfile(%q): accepted", bad)
		}
	}
}

// TestHealthProbeVersion keeps the grpc-health-probe baked into the image
// at the version CI runs against a real tokengate, so the image's
// healthcheck is one that has been seen to work.
func TestHealthProbeVersion(t *testing.T) {
	const mod = "github.com/grpc-ecosystem/grpc-health-probe@"
	version := func(file string) string {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), file))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := strings.Cut(string(data), mod)
		if !ok {
			t.Fatalf("%s does not install %s…", file, mod)
		}
		return strings.Fields(rest)[0]
	}
	if image, ci := version("Dockerfile"), version(".ci/run"); image != ci {
		t.Errorf("grpc-health-probe: the image has %s, CI tests %s", image, ci)
	}
}
