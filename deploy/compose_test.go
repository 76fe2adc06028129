package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/envoy"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

const composeFile = "docker-compose.yaml"

// loadCompose loads a compose file as `docker compose` would from the
// repository root, with the compose schema's validation on, and returns
// the variables its interpolation asked for. The environment offered is
// empty, so nothing of the shell running the test leaks in.
func loadCompose(t *testing.T, content []byte) (*types.Project, []string, error) {
	t.Helper()
	root := repoRoot(t)
	var asked []string
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, composeFile), Content: content}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.Interpolate.LookupValue = func(name string) (string, bool) {
			asked = append(asked, name)
			return "", false
		}
	})
	return p, asked, err
}

func loadShippedCompose(t *testing.T) *types.Project {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), composeFile))
	if err != nil {
		t.Fatal(err)
	}
	p, asked, err := loadCompose(t, data)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	if len(asked) > 0 {
		t.Errorf("%s reads variables %q: the stack would depend on the shell that starts it", composeFile, asked)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bindSource returns the host file bind-mounted at target in s, "" when
// there is none.
func bindSource(s types.ServiceConfig, target string) (source string, readOnly bool) {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source, v.ReadOnly
		}
	}
	return "", false
}

// stackConfig is the tokengate config the stack runs: the file mounted at
// the path its command's --config names.
func stackConfig(t *testing.T, p *types.Project) (*config.Config, string) {
	t.Helper()
	tg := service(t, p, "tokengate")
	path, ok := flagValue(tg.Command, "--config")
	if !ok {
		t.Fatalf("tokengate command %q: no --config", tg.Command)
	}
	src, ro := bindSource(tg, path)
	if src == "" {
		t.Fatalf("tokengate: nothing mounted at --config %s", path)
	}
	if !ro {
		t.Errorf("tokengate: %s mounted writable; tokengate only reads it", path)
	}
	cfg, err := config.Load(src)
	if err != nil {
		t.Fatalf("the stack's tokengate config: %v", err)
	}
	return cfg, src
}

func port(t *testing.T, field, addr string) (host string, port uint32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	return h, uint32(n)
}

// published maps a service's container ports to "hostIP:hostPort".
func published(s types.ServiceConfig) map[uint32]string {
	out := map[uint32]string{}
	for _, p := range s.Ports {
		out[p.Target] = net.JoinHostPort(p.HostIP, p.Published)
	}
	return out
}

// listens reports whether s serves on port inside the stack's network.
func listens(s types.ServiceConfig, port uint32) bool {
	if _, ok := published(s)[port]; ok {
		return true
	}
	return slices.Contains(s.Expose, strconv.Itoa(int(port)))
}

func TestComposeServices(t *testing.T) {
	p := loadShippedCompose(t)
	if got, want := p.ServiceNames(), []string{"envoy", "openai-mock", "redis", "tokengate"}; !slices.Equal(got, want) {
		t.Fatalf("services: got %q, want %q", got, want)
	}
	dockerfile := loadDockerfile(t)
	for _, name := range []string{"tokengate", "openai-mock"} {
		b := service(t, p, name).Build
		if b == nil {
			t.Errorf("%s: no build; it is made from this repository", name)
			continue
		}
		if b.Context != repoRoot(t) {
			t.Errorf("%s build context: got %s, want the repository root", name, b.Context)
		}
		if b.Dockerfile != "Dockerfile" {
			t.Errorf("%s build dockerfile: got %q, want Dockerfile", name, b.Dockerfile)
		}
		stageNamed(t, dockerfile, b.Target) // fails the test if absent
		if b.Target != name {
			t.Errorf("%s build target: got %q, want %q", name, b.Target, name)
		}
	}
	for name, prefix := range map[string]string{"envoy": "envoyproxy/envoy:v1.3", "redis": "redis:7-alpine"} {
		if img := service(t, p, name).Image; !strings.HasPrefix(img, prefix) {
			t.Errorf("%s image: got %q, want %s…", name, img, prefix)
		}
	}
}

// TestComposeEnvoy checks the Envoy service against the bootstrap it
// mounts: the file loads, its ports are the published ones, and its
// clusters point at services of the stack on ports they serve.
func TestComposeEnvoy(t *testing.T) {
	p := loadShippedCompose(t)
	e := service(t, p, "envoy")
	cfgPath, ok := flagValue(e.Command, "--config-path")
	if !ok {
		cfgPath, ok = flagValue(e.Command, "-c")
	}
	if !ok {
		t.Fatalf("envoy command %q: no --config-path", e.Command)
	}
	src, ro := bindSource(e, cfgPath)
	if src != filepath.Join(repoRoot(t), "envoy", "envoy.yaml") || !ro {
		t.Fatalf("envoy: %s is %q (read-only %v), want envoy/envoy.yaml read-only", cfgPath, src, ro)
	}
	b, err := envoy.LoadBootstrap(src)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := envoy.ListenerPort(b)
	if err != nil {
		t.Fatal(err)
	}
	pub := published(e)
	if got := pub[lp]; got != ":"+strconv.Itoa(int(lp)) {
		t.Errorf("envoy listener :%d published as %q, want the same port on every host interface", lp, got)
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()
	if got := pub[admin]; got != "127.0.0.1:"+strconv.Itoa(int(admin)) {
		t.Errorf("envoy admin :%d published as %q, want it on the host's loopback only", admin, got)
	}

	for _, cluster := range []string{"tokengate", "openai"} {
		addr, err := envoy.ClusterAddress(b, cluster)
		if err != nil {
			t.Fatal(err)
		}
		host, port := port(t, "cluster "+cluster, addr)
		s, err := p.GetService(host)
		if err != nil {
			t.Errorf("cluster %s → %s: no such service in the stack", cluster, addr)
			continue
		}
		if !listens(s, port) {
			t.Errorf("cluster %s → %s: service %s neither publishes nor exposes %d", cluster, addr, host, port)
		}
		if dep, ok := e.DependsOn[host]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("envoy depends_on %s: got %+v, want condition service_healthy", host, dep)
		}
	}
}

func TestComposeTokengate(t *testing.T) {
	p := loadShippedCompose(t)
	tg := service(t, p, "tokengate")
	cfg, src := stackConfig(t, p)

	_, grpcPort := port(t, "listen", cfg.Listen)
	adminHost, adminPort := port(t, "admin_listen", cfg.AdminListen)
	if adminHost != "0.0.0.0" {
		t.Errorf("admin_listen %q: want 0.0.0.0, or /metrics cannot be reached through the published port", cfg.AdminListen)
	}
	pub := published(tg)
	for _, port := range []uint32{grpcPort, adminPort} {
		if got := pub[port]; got != "127.0.0.1:"+strconv.Itoa(int(port)) {
			t.Errorf("tokengate :%d published as %q, want the host's loopback only", port, got)
		}
	}

	// The store: Redis, at a service of the stack, on_error said out loud.
	if cfg.Store.Backend != "redis" {
		t.Fatalf("store.backend: got %s, want redis", cfg.Store.Backend)
	}
	host, port := port(t, "store.redis.addrs[0]", cfg.Store.Redis.Addrs[0])
	if r, err := p.GetService(host); err != nil || !listens(r, port) {
		t.Errorf("store.redis.addrs[0] %s: not a service of the stack serving that port (%v)", cfg.Store.Redis.Addrs[0], err)
	}
	if dep, ok := tg.DependsOn[host]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("tokengate depends_on %s: got %+v, want condition service_healthy", host, dep)
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var written struct {
		Store struct {
			Redis map[string]any `yaml:"redis"`
		} `yaml:"store"`
	}
	if err := yaml.Unmarshal(raw, &written); err != nil {
		t.Fatal(err)
	}
	if _, ok := written.Store.Redis["on_error"]; !ok {
		t.Error("store.redis.on_error is left to its default; the demo should show the choice")
	}

	// The documented tier: the override's hash is that of the key named
	// in the comment.
	sum := sha256.Sum256([]byte("demo-gold-key"))
	pol, err := policy.Compile(cfg.Policies[0], cfg.Prices)
	if err != nil {
		t.Fatal(err)
	}
	perMinute := func(b limiter.Budget) int64 {
		for _, l := range b {
			if l.Name == limiter.WindowLimitName {
				return l.Max
			}
		}
		return 0
	}
	gold, plain := perMinute(pol.BudgetFor(hex.EncodeToString(sum[:]), "")), perMinute(pol.BudgetFor("", ""))
	if gold <= plain {
		t.Errorf("demo-gold-key: %d tokens per minute, want more than everyone else's %d", gold, plain)
	}

	// Shutdown: compose's stop_grace_period must outlast tokengate's drain.
	drain := 15 * time.Second // tokengate's default --drain-timeout
	if v, ok := flagValue(tg.Command, "--drain-timeout"); ok {
		if drain, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok := flagValue(tg.Command, "--drain-delay"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		drain += d
	}
	if g := tg.StopGracePeriod; g == nil || time.Duration(*g) <= drain {
		t.Errorf("stop_grace_period: got %v, want more than the drain (%v), or compose SIGKILLs open streams", g, drain)
	}
	if !tg.ReadOnly {
		t.Error("tokengate: want read_only; with the Redis store it writes nothing")
	}
}

// TestComposeHealthchecks checks that every service something waits for
// has a healthcheck, run in exec form by a binary its image has.
func TestComposeHealthchecks(t *testing.T) {
	p := loadShippedCompose(t)
	stages := loadDockerfile(t)
	cfg, _ := stackConfig(t, p)
	_, grpcPort := port(t, "listen", cfg.Listen)

	waitedOn := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				waitedOn[dep] = true
			}
		}
	}
	if len(waitedOn) != 3 {
		t.Errorf("services waited on until healthy: got %v, want tokengate, openai-mock and redis", waitedOn)
	}
	for name := range waitedOn {
		s := service(t, p, name)
		hc := s.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s: waited on until healthy, but has no healthcheck", name)
			continue
		}
		// CMD, not CMD-SHELL: the distroless images have no shell.
		if hc.Test[0] != "CMD" {
			t.Errorf("%s healthcheck: got %q, want the exec form [CMD, …]", name, hc.Test)
		}
		if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil {
			t.Errorf("%s healthcheck: want interval, timeout and retries set, not Docker's 30 s defaults", name)
		}
		if s.Build != nil {
			// The probe must be a binary the image's stage copies in.
			var copied []string
			for _, c := range stageNamed(t, stages, s.Build.Target).all("COPY") {
				f := strings.Fields(c)
				if !strings.HasPrefix(f[0], "--from=") {
					continue
				}
				for _, src := range f[1 : len(f)-1] {
					copied = append(copied, path.Join(f[len(f)-1], path.Base(src)))
				}
			}
			if !slices.Contains(copied, hc.Test[1]) {
				t.Errorf("%s healthcheck runs %s, which stage %s does not copy (%q)", name, hc.Test[1], s.Build.Target, copied)
			}
		}
	}
	tgTest := service(t, p, "tokengate").HealthCheck.Test
	if addr, ok := flagValue(tgTest, "-addr"); !ok || addr != "127.0.0.1:"+strconv.Itoa(int(grpcPort)) {
		t.Errorf("tokengate healthcheck %q: want -addr=127.0.0.1:%d, the ext_proc port", tgTest, grpcPort)
	}
	if got := service(t, p, "redis").HealthCheck.Test; !slices.Equal(got, []string{"CMD", "redis-cli", "ping"}) {
		t.Errorf("redis healthcheck: got %q, want [CMD redis-cli ping]", got)
	}
}

// TestComposeFilesExist checks every local file the stack names: build
// contexts and their Dockerfiles, and bind-mounted sources, which must be
// readable by anyone.
func TestComposeFilesExist(t *testing.T) {
	p := loadShippedCompose(t)
	var checked int
	for _, s := range p.Services {
		var files []string
		if s.Build != nil {
			files = append(files, s.Build.Context, filepath.Join(s.Build.Context, s.Build.Dockerfile))
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			files = append(files, v.Source)
			// The containers run as their images' own users (Envoy's,
			// distroless's nonroot), not as whoever checked the repo out.
			if fi, err := os.Stat(v.Source); err == nil && fi.Mode().Perm()&0o004 == 0 {
				t.Errorf("%s: %s is %v, not readable by the container's user", s.Name, v.Source, fi.Mode().Perm())
			}
		}
		for _, f := range files {
			checked++
			if !filepath.IsAbs(f) {
				t.Errorf("%s: %s was not resolved against the project directory", s.Name, f)
			} else if _, err := os.Stat(f); err != nil {
				t.Errorf("%s: %v", s.Name, err)
			}
		}
	}
	// tokengate and openai-mock: context and Dockerfile; envoy and
	// tokengate: one mounted config each.
	if checked != 6 {
		t.Errorf("checked %d files, want 6; update this test with the stack", checked)
	}
}

// TestComposeRejects checks that loading can fail: the compose schema
// refuses misspelt keys, a missing service dependency is an error, and a
// variable is reported.
func TestComposeRejects(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(repoRoot(t), composeFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new string
		wantErr        string // "" means it loads, and asks for a variable
	}{
		{"misspelt service key", "    healthcheck:\n      test: [\"CMD\", \"redis-cli\"", "    healtcheck:\n      test: [\"CMD\", \"redis-cli\"", "healtcheck"},
		{"misspelt depends_on condition", "condition: service_healthy", "condition: service_healty", "depends_on.tokengate.condition"},
		{"unknown dependency", "      redis:\n        condition", "      redis-server:\n        condition", "redis-server"},
		{"bad port", `"127.0.0.1:9090:9090"`, `"127.0.0.1:9090:90900"`, "90900"},
		{"variable", "envoyproxy/envoy:v1.36.4", "envoyproxy/envoy:${ENVOY_TAG}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := strings.Index(string(orig), tt.old)
			if i < 0 {
				t.Fatalf("%s no longer contains %q; update this case", composeFile, tt.old)
			}
			edited := string(orig[:i]) + tt.new + string(orig[i+len(tt.old):])
			_, asked, err := loadCompose(t, []byte(edited))
			if tt.wantErr == "" {
				if err != nil || len(asked) == 0 {
					t.Errorf("got error %v, variables asked %q; want it loaded and a variable asked for", err, asked)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q → %q", tt.old, tt.new)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error: got %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
