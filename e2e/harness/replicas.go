package harness

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/tokengate/tokengate/e2e/front"
)

// ReplicaOptions describe a replicated deployment: N tokengate processes
// on one configuration (so one shared store), each behind its own front,
// all forwarding to one openai-mock. It is a mesh whose load balancer is
// the test: a request sent to URLs[i] is decided by replica i.
type ReplicaOptions struct {
	N int
	// ConfigYAML is every replica's configuration.
	ConfigYAML string
	// Configs, when set, are the replicas' own configurations, replica by
	// replica (ConfigYAML is then unused): one replica may reach the store
	// another way (a partition's proxies) than the others.
	Configs []string
	// FakeClock, when set, starts every replica's limiter clock at this
	// RFC 3339 time; the replicas must then be advanced together
	// (load.ClockAdvancer(r.Admins()...)).
	FakeClock     string
	MockArgs      []string
	TokengateArgs []string
	// OnRequest, when set, receives each front's request records, tagged
	// with the replica's index.
	OnRequest func(replica int, st front.RequestStats)
	// Filter, when set, changes the ext_proc filter configuration read
	// from envoy.yaml (Replicas.Filter) before the fronts use it, as
	// StackOptions.Filter does for a stack.
	Filter func(*extprocv3.ExternalProcessor)
	// Bins are the binaries by name; nil means the set BuildBinaries built
	// last.
	Bins map[string]string
}

// Replicas is a running replicated deployment.
type Replicas struct {
	t testing.TB

	Dir        string
	ConfigPath string
	Bootstrap  *bootstrapv3.Bootstrap
	Filter     *extprocv3.ExternalProcessor

	Mock       *Process
	Tokengates []*Process
	Fronts     []*front.Front
	// URLs are the fronts' base URLs, replica by replica.
	URLs []string

	client *http.Client
}

// StartReplicas starts the mock and N tokengates (in parallel, then waits
// for every ready line) and a front before each; everything stops when the
// test ends.
func StartReplicas(t testing.TB, opts ReplicaOptions) *Replicas {
	t.Helper()
	if opts.N < 1 {
		t.Fatalf("harness: %d replicas", opts.N)
	}
	bins := binaries(t, opts.Bins)
	// No keep-alive on the admin port: an idle connection is a goroutine
	// in tokengate, and tests compare its goroutine count over time.
	r := &Replicas{t: t, Dir: t.TempDir(), client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
	t.Cleanup(r.client.CloseIdleConnections)
	r.ConfigPath = filepath.Join(r.Dir, "tokengate.yaml")
	if err := os.WriteFile(r.ConfigPath, []byte(opts.ConfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Bootstrap, r.Filter = loadEnvoy(t, opts.Filter)
	r.Mock = Launch(t, bins["openai-mock"], append([]string{"--listen", "127.0.0.1:0"}, opts.MockArgs...)...)
	args := TokengateArgs(r.ConfigPath, opts.FakeClock, opts.TokengateArgs...)
	if opts.Configs != nil && len(opts.Configs) != opts.N {
		t.Fatalf("harness: %d configurations for %d replicas", len(opts.Configs), opts.N)
	}
	for i := range opts.N {
		a := args
		if opts.Configs != nil {
			path := filepath.Join(r.Dir, "tokengate-"+strconv.Itoa(i)+".yaml")
			if err := os.WriteFile(path, []byte(opts.Configs[i]), 0o600); err != nil {
				t.Fatal(err)
			}
			a = TokengateArgs(path, opts.FakeClock, opts.TokengateArgs...)
		}
		r.Tokengates = append(r.Tokengates, Launch(t, bins["tokengate"], a...))
	}
	for _, p := range append([]*Process{r.Mock}, r.Tokengates...) {
		if err := p.WaitReady(ReadyTimeout); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range r.Tokengates {
		cfg, err := frontConfig(r.Bootstrap, r.Filter, p.Field("grpc"), "http://"+r.Mock.Field("http"))
		if err != nil {
			t.Fatal(err)
		}
		if opts.OnRequest != nil {
			cfg.OnRequest = func(st front.RequestStats) { opts.OnRequest(i, st) }
		}
		f, u := StartFront(t, cfg)
		r.Fronts = append(r.Fronts, f)
		r.URLs = append(r.URLs, u)
	}
	return r
}

// Admins are the replicas' admin addresses (host:port), in order.
func (r *Replicas) Admins() []string {
	out := make([]string, len(r.Tokengates))
	for i, p := range r.Tokengates {
		out[i] = p.Field("admin")
	}
	return out
}

// Metric returns the sum of the series of name, on replica i, whose labels
// include every name/value pair of labels; it fails the test when the
// admin port does not answer.
func (r *Replicas) Metric(i int, name string, labels ...string) float64 {
	r.t.Helper()
	v, err := ScrapeMetric(r.client, r.Tokengates[i].Field("admin"), name, labels...)
	if err != nil {
		r.t.Fatalf("replica %d: %v", i, err)
	}
	return v
}

// WaitMetric polls name on every replica until each reads want, and
// returns how long that took; it fails the test after timeout, naming
// the replicas that did not get there.
func (r *Replicas) WaitMetric(name string, want float64, timeout time.Duration, labels ...string) time.Duration {
	r.t.Helper()
	began := time.Now()
	got, err := PollAll(len(r.Tokengates), timeout, func(i int) (bool, string) {
		v, err := ScrapeMetric(r.client, r.Tokengates[i].Field("admin"), name, labels...)
		if err != nil {
			return false, err.Error()
		}
		return v == want, strconv.FormatFloat(v, 'g', -1, 64)
	})
	if err != nil {
		r.t.Fatalf("%s: want %v on every replica: %v (last: %v)", name, want, err, got)
	}
	return time.Since(began)
}

// Readyz returns replica i's GET /readyz status code.
func (r *Replicas) Readyz(i int) int {
	r.t.Helper()
	code, err := getStatus(r.client, "http://"+r.Tokengates[i].Field("admin")+"/readyz")
	if err != nil {
		r.t.Fatalf("replica %d: readyz: %v", i, err)
	}
	return code
}
