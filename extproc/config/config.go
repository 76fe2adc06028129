// Package config reads tokengate's YAML configuration: strictly (unknown
// fields are errors), with defaults filled in, and validated so that every
// problem names its field.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
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
	MaxReceiveBytes int      `yaml:"max_receive_bytes"`
	Store           Store    `yaml:"store"`
	Policies        []Policy `yaml:"policies"`
}

// Store chooses and configures the limiter's store.
type Store struct {
	Backend string `yaml:"backend"`
	Bbolt   Bbolt  `yaml:"bbolt"`
}

// Bbolt configures the embedded store.
type Bbolt struct {
	Path          string        `yaml:"path"`
	FlushInterval time.Duration `yaml:"flush_interval"`
}

// Policy is one budget rule; the first policy that matches a request wins.
type Policy struct {
	Name                 string     `yaml:"name"`
	Match                Match      `yaml:"match"`
	CounterKey           CounterKey `yaml:"counter_key"`
	TokensPerMinute      int64      `yaml:"tokens_per_minute"`
	EstimatePromptTokens bool       `yaml:"estimate_prompt_tokens"`
	// InjectStreamUsage asks streamed requests for a final usage chunk
	// (stream_options.include_usage) when they don't ask themselves, so
	// streams are charged what the upstream reports. Default on.
	InjectStreamUsage *bool   `yaml:"inject_stream_usage"`
	Headers           Headers `yaml:"headers"`
}

// InjectsStreamUsage reports the effective inject_stream_usage.
func (p *Policy) InjectsStreamUsage() bool {
	return p.InjectStreamUsage == nil || *p.InjectStreamUsage
}

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
}

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
	if c.Listen == "" {
		c.Listen = "0.0.0.0:50051"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:9090"
	}
	if c.MaxReceiveBytes == 0 {
		c.MaxReceiveBytes = 64 << 20
	}
	if c.Store.Backend == "" {
		c.Store.Backend = "bbolt"
	}
	if c.Store.Bbolt.Path == "" {
		c.Store.Bbolt.Path = "./data/tokengate.db"
	}
	if c.Store.Bbolt.FlushInterval == 0 {
		c.Store.Bbolt.FlushInterval = time.Second
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if p.Name == "" {
			p.Name = fmt.Sprintf("policy-%d", i)
		}
		if p.Match.PathPrefix == "" {
			p.Match.PathPrefix = "/"
		}
		if len(p.CounterKey.Header) == 0 {
			p.CounterKey.Header = []string{"api-key", "ocp-apim-subscription-key", "authorization"}
		}
		for j, h := range p.CounterKey.Header {
			p.CounterKey.Header[j] = strings.ToLower(h)
		}
		if p.CounterKey.Missing == "" {
			p.CounterKey.Missing = MissingReject
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
	switch c.Store.Backend {
	case "memory", "bbolt":
	case "redis":
		bad("store.backend", "redis is not available in this build yet; use memory or bbolt")
	default:
		bad("store.backend", "must be memory or bbolt, got %q", c.Store.Backend)
	}
	if c.Store.Bbolt.FlushInterval < 0 {
		bad("store.bbolt.flush_interval", "must be positive, got %s", c.Store.Bbolt.FlushInterval)
	}
	if len(c.Policies) == 0 {
		bad("policies", "at least one policy is required")
	}
	names := map[string]bool{}
	for i, p := range c.Policies {
		f := fmt.Sprintf("policies[%d]", i)
		if names[p.Name] {
			bad(f+".name", "%q is used by an earlier policy", p.Name)
		}
		names[p.Name] = true
		if !strings.HasPrefix(p.Match.PathPrefix, "/") {
			bad(f+".match.path_prefix", "must start with /, got %q", p.Match.PathPrefix)
		}
		if p.TokensPerMinute <= 0 {
			bad(f+".tokens_per_minute", "must be a positive number of tokens, got %d", p.TokensPerMinute)
		}
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
