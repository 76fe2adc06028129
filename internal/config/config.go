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
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/limiter"
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
	TLS      TLS      `yaml:"tls"`
	Admin    Admin    `yaml:"admin"`
	Store    Store    `yaml:"store"`
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
	// HoldTTL bounds how long a dead replica's in-flight reservation
	// holds budget.
	HoldTTL time.Duration `yaml:"hold_ttl"`
	// RetryInterval is how long a failed Redis is left alone before a
	// call tries it again.
	RetryInterval time.Duration `yaml:"retry_interval"`
}

// Bbolt configures the embedded store.
type Bbolt struct {
	Path          string        `yaml:"path"`
	FlushInterval time.Duration `yaml:"flush_interval"`
}

// Policy is one budget rule; the first policy that matches a request wins.
type Policy struct {
	Name            string     `yaml:"name"`
	Match           Match      `yaml:"match"`
	CounterKey      CounterKey `yaml:"counter_key"`
	TokensPerMinute int64      `yaml:"tokens_per_minute"`
	// TokenQuota is a budget per calendar period (TokenQuotaPeriod), beside
	// or instead of the window, as APIM's token-quota.
	TokenQuota           int64  `yaml:"token_quota"`
	TokenQuotaPeriod     string `yaml:"token_quota_period"`
	EstimatePromptTokens bool   `yaml:"estimate_prompt_tokens"`
	// Count says which tokens are charged: total, prompt or completion.
	Count string `yaml:"count"`
	// ReserveCompletion turns on strict mode: none, max_tokens, or a
	// number of tokens (see Strict).
	ReserveCompletion string `yaml:"reserve_completion"`
	// Shadow decides and reports but never refuses.
	Shadow    bool       `yaml:"shadow"`
	Overrides []Override `yaml:"overrides"`
	// InjectStreamUsage asks streamed requests for a final usage chunk
	// (stream_options.include_usage) when they don't ask themselves, so
	// streams are charged what the upstream reports. Default on.
	InjectStreamUsage *bool   `yaml:"inject_stream_usage"`
	Headers           Headers `yaml:"headers"`
	// ChargeUnanswered is what a request costs whose stream ends after
	// its body with no response at all: a client that walked away, an
	// Envoy reset, or (Envoy 1.34–1.36) a local reply tokengate never sees.
	// prompt (the default: the upstream may have read it) or none.
	ChargeUnanswered string `yaml:"charge_unanswered"`
	// UnreadableBody is what happens to a request whose body tokengate
	// cannot read (an unknown content-encoding, not the JSON of its API)
	// when the policy needs the body: refuse (400), charge_bytes (the
	// body's length stands for its prompt) or pass. Default: refuse in
	// strict mode, charge_bytes otherwise. See UnreadableAction.
	UnreadableBody string `yaml:"unreadable_body"`

	// Derived while filling defaults and validating.
	defaultKeyHeaders bool // counter_key.header was not given
	period            limiter.Period
	strict            bool
	completionBudget  int64
	overrides         map[string]Override
}

// InjectsStreamUsage reports the effective inject_stream_usage.
func (p *Policy) InjectsStreamUsage() bool {
	return p.InjectStreamUsage == nil || *p.InjectStreamUsage
}

// Override gives one key its own budgets (a tier). The key is named by the
// SHA-256 of its value, in hex, so the config holds no secret.
type Override struct {
	KeySHA256       string `yaml:"key_sha256"`
	TokensPerMinute int64  `yaml:"tokens_per_minute"`
	TokenQuota      int64  `yaml:"token_quota"`
}

// What happens to a body tokengate cannot read (unreadable_body).
const (
	UnreadableRefuse      = "refuse"
	UnreadableChargeBytes = "charge_bytes"
	UnreadablePass        = "pass"
)

// What an unanswered request is charged (charge_unanswered).
const (
	ChargePrompt = "prompt"
	ChargeNone   = "none"
)

// Count modes.
const (
	CountTotal      = "total"
	CountPrompt     = "prompt"
	CountCompletion = "completion"
)

// Match selects the requests a policy applies to.
type Match struct {
	PathPrefix string `yaml:"path_prefix"`
	// Models, when set, restricts the policy to these models: the body's
	// model, or the deployment name of an Azure path.
	Models []string `yaml:"models"`
}

// Missing-key behaviours.
const (
	MissingReject    = "reject"
	MissingAnonymous = "anonymous"
)

// CounterKey says where the subscription key comes from.
type CounterKey struct {
	Header  []string `yaml:"header"`
	Missing string   `yaml:"missing"`
	// PerModel gives each model its own budget under the key.
	PerModel bool `yaml:"per_model"`
}

// DefaultKeyHeaders are the counter key headers of a policy that names
// none: APIM's and Azure OpenAI's, first present wins. Being several, they
// draw a warning (see Warnings).
var DefaultKeyHeaders = []string{"api-key", "ocp-apim-subscription-key", "authorization"}

// Headers are the policy's custom response header names, sent in addition
// to the standard ones (APIM's retry-after-header-name and friends). Empty
// means not sent.
type Headers struct {
	RetryAfter           string `yaml:"retry_after"`
	RemainingTokens      string `yaml:"remaining_tokens"`
	RemainingQuotaTokens string `yaml:"remaining_quota_tokens"`
	TokensConsumed       string `yaml:"tokens_consumed"`
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
		p.Match.PathPrefix = cmp.Or(p.Match.PathPrefix, "/")
		if len(p.CounterKey.Header) == 0 {
			p.CounterKey.Header = slices.Clone(DefaultKeyHeaders)
			p.defaultKeyHeaders = true
		}
		for j, h := range p.CounterKey.Header {
			p.CounterKey.Header[j] = strings.ToLower(h)
		}
		p.CounterKey.Missing = cmp.Or(p.CounterKey.Missing, MissingReject)
		p.Count = cmp.Or(p.Count, CountTotal)
		p.ChargeUnanswered = cmp.Or(p.ChargeUnanswered, ChargePrompt)
		p.ReserveCompletion = cmp.Or(p.ReserveCompletion, "none")
		for j := range p.Overrides {
			p.Overrides[j].KeySHA256 = strings.ToLower(p.Overrides[j].KeySHA256)
		}
		p.Headers.lower()
	}
}

func (h *Headers) lower() {
	for _, s := range []*string{&h.RetryAfter, &h.RemainingTokens, &h.RemainingQuotaTokens, &h.TokensConsumed} {
		*s = strings.ToLower(*s)
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
		if strings.Contains(p.Name, ":") {
			// Counter keys are policy:hash[:model]: a policy a:b would
			// share the prefix of policy a in the store and the admin API.
			bad(f+".name", "must not contain ':', got %q", p.Name)
		}
		names[p.Name] = true
		if !strings.HasPrefix(p.Match.PathPrefix, "/") {
			bad(f+".match.path_prefix", "must start with /, got %q", p.Match.PathPrefix)
		}
		p.validateBudgets(f, bad)
		if p.CounterKey.Missing != MissingReject && p.CounterKey.Missing != MissingAnonymous {
			bad(f+".counter_key.missing", "must be reject or anonymous, got %q", p.CounterKey.Missing)
		}
		for j, h := range p.CounterKey.Header {
			if h == "" || strings.HasPrefix(h, ":") {
				bad(fmt.Sprintf("%s.counter_key.header[%d]", f, j), "must be a header name, got %q", h)
			}
		}
	}
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
		for _, h := range p.CounterKey.Header {
			if !slices.Contains(names, h) {
				names = append(names, h)
			}
		}
		if len(names) < 2 {
			continue
		}
		list := strings.Join(names, ", ")
		what := "lists several headers (" + list + ")"
		if p.defaultKeyHeaders {
			what = "is not set, so the default list applies (" + list + ")"
		}
		out = append(out, fmt.Sprintf("policies[%d] (%q): counter_key.header %s. The first of them a request carries is its key, "+
			"so unless the mesh authenticates every one of them, a client can put a made-up value in an earlier one "+
			"and get a fresh budget per value. List exactly one header, the one that carries the identity the mesh "+
			"authenticated (README: \"Choosing the counter key\").", i, p.Name, what))
	}
	return out
}

// validateBudgets checks the limits, strict mode and tiers, and derives
// what requests need from them.
func (p *Policy) validateBudgets(f string, bad func(field, format string, a ...any)) {
	switch {
	case p.TokensPerMinute < 0:
		bad(f+".tokens_per_minute", "must be a positive number of tokens, got %d", p.TokensPerMinute)
	case p.TokenQuota < 0:
		bad(f+".token_quota", "must be a positive number of tokens, got %d", p.TokenQuota)
	case p.TokensPerMinute == 0 && p.TokenQuota == 0:
		bad(f+".tokens_per_minute", "a policy needs tokens_per_minute, token_quota or both")
	}
	if p.TokenQuota > 0 || p.TokenQuotaPeriod != "" {
		period, err := limiter.ParsePeriod(p.TokenQuotaPeriod)
		if err != nil {
			bad(f+".token_quota_period", "%v", err)
		}
		p.period = period
	}
	if p.TokenQuotaPeriod != "" && p.TokenQuota == 0 {
		bad(f+".token_quota", "token_quota_period is set but token_quota is not")
	}
	switch p.Count {
	case CountTotal, CountPrompt, CountCompletion:
	default:
		bad(f+".count", "must be total, prompt or completion, got %q", p.Count)
	}
	switch p.UnreadableBody {
	case "", UnreadableRefuse, UnreadableChargeBytes, UnreadablePass:
	default:
		bad(f+".unreadable_body", "must be refuse, charge_bytes or pass, got %q", p.UnreadableBody)
	}
	if p.ChargeUnanswered != ChargePrompt && p.ChargeUnanswered != ChargeNone {
		bad(f+".charge_unanswered", "must be prompt or none, got %q", p.ChargeUnanswered)
	}
	switch p.ReserveCompletion {
	case "none":
	case "max_tokens":
		p.strict, p.completionBudget = true, DefaultCompletionBudget
	default:
		n, err := strconv.ParseInt(p.ReserveCompletion, 10, 64)
		if err != nil || n <= 0 {
			bad(f+".reserve_completion", "must be none, max_tokens or a positive number of tokens, got %q", p.ReserveCompletion)
		}
		p.strict, p.completionBudget = true, n
	}
	p.overrides = make(map[string]Override, len(p.Overrides))
	for j, o := range p.Overrides {
		of := fmt.Sprintf("%s.overrides[%d]", f, j)
		if len(o.KeySHA256) != 64 || strings.Trim(o.KeySHA256, "0123456789abcdef") != "" {
			bad(of+".key_sha256", "must be 64 hex digits (the SHA-256 of the key), got %q", o.KeySHA256)
		}
		if _, dup := p.overrides[o.KeySHA256]; dup {
			bad(of+".key_sha256", "the key has an earlier override")
		}
		if o.TokensPerMinute < 0 || o.TokenQuota < 0 {
			bad(of, "budgets must be positive")
		}
		if o.TokenQuota > 0 && p.TokenQuota == 0 {
			bad(of+".token_quota", "the policy has no token_quota for it to override")
		}
		p.overrides[o.KeySHA256] = o
	}
}

// DefaultCompletionBudget is what strict mode reserves for a request that
// names no max_tokens when the policy says only "max_tokens".
const DefaultCompletionBudget = 4096

// Strict reports whether the policy reserves completions (strict mode),
// and the budget for a request that names none.
func (p *Policy) Strict() (bool, int64) { return p.strict, p.completionBudget }

// UnreadableAction is the effective unreadable_body: a strict policy
// refuses what it cannot bound, any other charges the body's bytes.
func (p *Policy) UnreadableAction() string {
	switch {
	case p.UnreadableBody != "":
		return p.UnreadableBody
	case p.strict:
		return UnreadableRefuse
	}
	return UnreadableChargeBytes
}

// LimitsFor returns the budgets of a key, by its hash: the policy's, with
// the key's override applied.
func (p *Policy) LimitsFor(keyHash string) limiter.Limits {
	lim := limiter.Limits{TokensPerMinute: p.TokensPerMinute, Quota: p.TokenQuota, Period: p.period}
	if o, ok := p.overrides[keyHash]; ok {
		if o.TokensPerMinute > 0 {
			lim.TokensPerMinute = o.TokensPerMinute
		}
		if o.TokenQuota > 0 {
			lim.Quota = o.TokenQuota
		}
	}
	return lim
}

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
	r.RetryInterval = cmp.Or(r.RetryInterval, 500*time.Millisecond)
}

func (r *Redis) validate(bad func(field, format string, a ...any)) {
	switch r.OnError {
	case "fail_open", "fail_closed", "local":
	default:
		bad("store.redis.on_error", "must be fail_open, fail_closed or local, got %q", r.OnError)
	}
	if r.Clock != "server" && r.Clock != "client" {
		bad("store.redis.clock", "must be server or client, got %q", r.Clock)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial_timeout", r.DialTimeout}, {"read_timeout", r.ReadTimeout}, {"write_timeout", r.WriteTimeout}, {"hold_ttl", r.HoldTTL}, {"retry_interval", r.RetryInterval}} {
		if d.v < 0 {
			bad("store.redis."+d.name, "must be positive, got %s", d.v)
		}
	}
	if r.PoolSize < 0 {
		bad("store.redis.pool_size", "must be positive, got %d", r.PoolSize)
	}
}
