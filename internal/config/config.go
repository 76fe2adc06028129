// Package config reads tokengate's YAML configuration: strictly (unknown
// fields are errors), with defaults filled in, and validated so that every
// problem names its field.
package config

import (
	"bytes"
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var defaultYAML []byte

// Config is the whole file.
type Config struct {
	Listen      string `yaml:"listen"`
	AdminListen string `yaml:"admin_listen"`
	// MaxReceiveBytes caps one gRPC message from Envoy, and so the largest
	// buffered body tokengate accepts.
	MaxReceiveBytes int `yaml:"max_receive_bytes"`
	// EstimateBudget bounds the time one request's prompt estimate may
	// take inside its ext_proc reply; past it, the rest of the prompt is
	// bounded by its size in bytes.
	EstimateBudget time.Duration `yaml:"estimate_budget"`
	// KeySaltEnv names the environment variable holding a secret salt for
	// key hashes (HMAC-SHA256); unset: plain SHA-256.
	KeySaltEnv string `yaml:"key_salt_env"`
	// TLS secures the ext_proc listener; with client_ca_file, mutually.
	TLS   TLS   `yaml:"tls"`
	Admin Admin `yaml:"admin"`
	Store Store `yaml:"store"`
	// Prices price requests for the policies' cost limits.
	Prices   Prices   `yaml:"prices"`
	Policies []Policy `yaml:"policies"`
}

// Admin configures the admin API on admin_listen.
type Admin struct {
	// TokenEnv names the environment variable holding the bearer token
	// admin calls must carry; unset or empty variable: no token needed.
	TokenEnv string `yaml:"token_env"`
}

// TLS names the PEM files of the ext_proc listener's TLS.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listener serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Store chooses and configures the limiter's store.
type Store struct {
	Backend string `yaml:"backend"`
	Bbolt   Bbolt  `yaml:"bbolt"`
	Redis   Redis  `yaml:"redis"`
}

// Redis configures the shared store. One address is a single node; several
// (or cluster: true) a Cluster; master_name selects Sentinel, with the
// addresses being the sentinels'.
type Redis struct {
	Addrs       []string `yaml:"addrs"`
	MasterName  string   `yaml:"master_name"`
	Cluster     bool     `yaml:"cluster"`
	Username    string   `yaml:"username"`
	PasswordEnv string   `yaml:"password_env"`
	TLS         bool     `yaml:"tls"`
	KeyPrefix   string   `yaml:"key_prefix"`
	PoolSize    int      `yaml:"pool_size"`
	// Timeouts stay well under Envoy's message timeout (200 ms by
	// default): a slow Redis must become on_error's decision, not Envoy's.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	OnError      string        `yaml:"on_error"`
	// Clock is server (Redis's clock decides, so replicas agree) or
	// client (the replica's; for tests with an injected clock).
	Clock string `yaml:"clock"`
	// HoldLease is how long a reservation lives unless renewed: each
	// replica renews its requests' holds every hold_lease/3 while they
	// run, so a dead replica's holds free within one lease. Default 30s,
	// or hold_ttl when that is shorter; at most hold_ttl.
	HoldLease time.Duration `yaml:"hold_lease"`
	// HoldTTL bounds a reservation's life, renewed or not: a request a
	// live replica never settles holds budget no longer than this.
	HoldTTL time.Duration `yaml:"hold_ttl"`
	// RetryInterval is how long a failed Redis is left alone before a
	// call tries it again.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// Settle is when a request's charge reaches Redis: behind (the
	// default: the response goes on at once, the charge follows within a
	// round trip, batched with others) or inline (before the response).
	Settle string `yaml:"settle"`
}

// Bbolt configures the embedded store.
type Bbolt struct {
	Path          string        `yaml:"path"`
	FlushInterval time.Duration `yaml:"flush_interval"`
}

// Default is the embedded configuration.
func Default() *Config {
	c, err := Parse(defaultYAML)
	if err != nil {
		panic("config: embedded default is invalid: " + err.Error())
	}
	return c
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML strictly, fills defaults and validates.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, cleanYAMLError(err)
	}
	c.fillDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// cleanYAMLError turns yaml's "field x not found in type config.Policy" into
// words an operator reads without knowing our Go types.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if i := strings.Index(m, " not found in type "); i >= 0 && strings.Contains(m, "field ") {
			m = strings.Replace(m[:i], "field ", "unknown field ", 1)
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

func (c *Config) fillDefaults() {
	c.Listen = cmp.Or(c.Listen, "0.0.0.0:50051")
	c.AdminListen = cmp.Or(c.AdminListen, "127.0.0.1:9090")
	c.MaxReceiveBytes = cmp.Or(c.MaxReceiveBytes, 64<<20)
	c.EstimateBudget = cmp.Or(c.EstimateBudget, 50*time.Millisecond)
	c.Store.Backend = cmp.Or(c.Store.Backend, "bbolt")
	c.Store.Bbolt.Path = cmp.Or(c.Store.Bbolt.Path, "./data/tokengate.db")
	c.Store.Bbolt.FlushInterval = cmp.Or(c.Store.Bbolt.FlushInterval, time.Second)
	c.Store.Redis.fillDefaults()
	for i := range c.Policies {
		p := &c.Policies[i]
		p.Name = cmp.Or(p.Name, fmt.Sprintf("policy-%d", i))
		p.fillDefaults()
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, a...)...))
	}
	if c.MaxReceiveBytes < 0 {
		bad("max_receive_bytes", "must be positive, got %d", c.MaxReceiveBytes)
	}
	if c.EstimateBudget < 0 {
		bad("estimate_budget", "must be positive, got %s", c.EstimateBudget)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		bad("tls.client_ca_file", "mutual TLS needs cert_file and key_file too")
	}
	switch c.Store.Backend {
	case "memory", "bbolt":
	case "redis":
		c.Store.Redis.validate(bad)
	default:
		bad("store.backend", "must be memory, bbolt or redis, got %q", c.Store.Backend)
	}
	if c.Store.Bbolt.FlushInterval < 0 {
		bad("store.bbolt.flush_interval", "must be positive, got %s", c.Store.Bbolt.FlushInterval)
	}
	if len(c.Policies) == 0 {
		bad("policies", "at least one policy is required")
	}
	names := map[string]bool{}
	for i := range c.Policies {
		p := &c.Policies[i]
		f := fmt.Sprintf("policies[%d]", i)
		if names[p.Name] {
			bad(f+".name", "%q is used by an earlier policy", p.Name)
		}
		names[p.Name] = true
		p.check(f, bad)
		if p.HasCost() && c.Prices.Empty() {
			bad(f+".limits", "a cost limit needs prices (prices.models, prices.default)")
		}
	}
	c.Prices.check(bad)
	return errors.Join(errs...)
}

// Warnings returns what is valid but probably wrong in the configuration,
// one message per finding, for --check-config and the logs. They name
// fields and headers, never a key.
//
// Today there is one: a policy whose counter key may come from several
// headers. The first present one is the key, so a client that the mesh
// authenticates by one of them can put any value in another listed before
// it and get a fresh budget per value.
func (c *Config) Warnings() []string {
	var out []string
	for i := range c.Policies {
		p := &c.Policies[i]
		var names []string
		for _, h := range p.KeyHeaders() {
			if !slices.Contains(names, h) {
				names = append(names, h)
			}
		}
		if len(names) < 2 {
			continue
		}
		list := strings.Join(names, ", ")
		what := "lists several headers (" + list + ")"
		if len(p.CounterKey.Header) == 0 {
			what = "is not set, so the default list applies (" + list + ")"
		}
		out = append(out, fmt.Sprintf("policies[%d] (%q): counter_key.header %s. The first of them a request carries is its key, "+
			"so unless the mesh authenticates every one of them, a client can put a made-up value in an earlier one "+
			"and get a fresh budget per value. List exactly one header, the one that carries the identity the mesh "+
			"authenticated (README: \"Choosing the counter key\").", i, p.Name, what))
	}
	return out
}

// When a charge reaches Redis (store.redis.settle).
const (
	SettleBehind = "behind"
	SettleInline = "inline"
)

func (r *Redis) fillDefaults() {
	if len(r.Addrs) == 0 {
		r.Addrs = []string{"127.0.0.1:6379"}
	}
	r.PasswordEnv = cmp.Or(r.PasswordEnv, "REDIS_PASSWORD")
	r.KeyPrefix = cmp.Or(r.KeyPrefix, "tokengate:")
	r.DialTimeout = cmp.Or(r.DialTimeout, 100*time.Millisecond)
	r.ReadTimeout = cmp.Or(r.ReadTimeout, 50*time.Millisecond)
	r.WriteTimeout = cmp.Or(r.WriteTimeout, 50*time.Millisecond)
	r.OnError = cmp.Or(r.OnError, "fail_open")
	r.Clock = cmp.Or(r.Clock, "server")
	r.HoldTTL = cmp.Or(r.HoldTTL, 10*time.Minute)
	// A config from before leases, with a hold_ttl under 30s, keeps it as
	// the dead replica's bound.
	r.HoldLease = cmp.Or(r.HoldLease, min(30*time.Second, max(r.HoldTTL, 0)))
	r.RetryInterval = cmp.Or(r.RetryInterval, 500*time.Millisecond)
	// A Cluster settles in line unless told otherwise: after a master's
	// failover, the settles queued at it are replayed late, and answers
	// took longer to be normal again (TestRedisClusterFaults: 8.4 s
	// against 4.8 s in line).
	def := SettleBehind
	if r.Cluster || len(r.Addrs) > 1 && r.MasterName == "" {
		def = SettleInline
	}
	r.Settle = cmp.Or(r.Settle, def)
}

func (r *Redis) validate(bad func(field, format string, a ...any)) {
	switch r.OnError {
	case "fail_open", "fail_closed", "local":
	default:
		bad("store.redis.on_error", "must be fail_open, fail_closed or local, got %q", r.OnError)
	}
	if r.Settle != SettleBehind && r.Settle != SettleInline {
		bad("store.redis.settle", "must be behind or inline, got %q", r.Settle)
	}
	if r.Clock != "server" && r.Clock != "client" {
		bad("store.redis.clock", "must be server or client, got %q", r.Clock)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial_timeout", r.DialTimeout}, {"read_timeout", r.ReadTimeout}, {"write_timeout", r.WriteTimeout}, {"hold_ttl", r.HoldTTL}, {"hold_lease", r.HoldLease}, {"retry_interval", r.RetryInterval}} {
		if d.v < 0 {
			bad("store.redis."+d.name, "must be positive, got %s", d.v)
		}
	}
	if r.HoldLease > r.HoldTTL && r.HoldTTL >= 0 {
		bad("store.redis.hold_lease", "must be at most hold_ttl (%s), got %s", r.HoldTTL, r.HoldLease)
	}
	if r.PoolSize < 0 {
		bad("store.redis.pool_size", "must be positive, got %d", r.PoolSize)
	}
}
