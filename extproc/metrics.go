package extproc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extproc/llm"
)

// Metrics are the ext_proc service's Prometheus series: decisions, tokens,
// latency per phase, estimates. (The server registers the store's, reloads
// and panics.) No label carries a key: keys
// are unbounded and secret.
type Metrics struct {
	requests    *prometheus.CounterVec
	tokens      *prometheus.CounterVec
	passthrough prometheus.Counter
	latency     *prometheus.HistogramVec
	phases      [numPhases]prometheus.Observer // latency's series, resolved once: observed per message
	estimateErr *prometheus.HistogramVec
	bounds      prometheus.Counter
	unreadable  *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	cost        *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_requests_total",
			Help: "Counted requests by policy and decision.",
		}, []string{"policy", "decision"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_tokens_total",
			Help: "Tokens charged, by policy, kind (prompt, completion) and source of the count (reported, counted, estimated, background, unreadable, unanswered, none).",
		}, []string{"policy", "kind", "source"}),
		passthrough: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_passthrough_total",
			Help: "Requests to paths that are not a known inference API, passed through uncounted.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokengate_decision_duration_seconds",
			Help:    "Time to answer one ext_proc message, by phase.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 200e-3},
		}, []string{"phase"}),
		estimateErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokengate_prompt_estimate_error_ratio",
			Help:    "(estimated - reported) / reported prompt tokens, for requests that had both, by API: Claude and Gemini are estimated with o200k_base.",
			Buckets: []float64{-0.5, -0.2, -0.1, -0.05, -0.01, 0, 0.01, 0.05, 0.1, 0.2, 0.5},
		}, []string{"api"}),
	}
	m.bounds = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokengate_estimates_bounded_total",
		Help: "Prompt estimates that ran out of estimate_budget and bounded the rest of the prompt by its bytes.",
	})
	m.unreadable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_unreadable_bodies_total",
		Help: "Request bodies tokengate could not read, by policy, reason (encoding, too_large, json, prompt) and action (refuse, charge_bytes, pass).",
	}, []string{"policy", "reason", "action"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_limit_refusals_total",
		Help: "Requests refused by a limit, by policy and the limit's name (the first of the key's limits that refused).",
	}, []string{"policy", "limit"})
	m.cost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokengate_cost_micros_total",
		Help: "What settled requests cost under policies with a cost limit, in micro-units of the prices' currency.",
	}, []string{"policy"})
	for i, name := range phaseNames {
		m.phases[i] = m.latency.WithLabelValues(name)
	}
	reg.MustRegister(m.requests, m.tokens, m.passthrough, m.latency, m.estimateErr, m.bounds, m.unreadable, m.refusals, m.cost)
	return m
}

// The methods accept a nil *Metrics so that tests and benchmarks can run
// without a registry.

func (m *Metrics) request(policy, decision string) {
	if m != nil {
		m.requests.WithLabelValues(policy, decision).Inc()
	}
}

func (m *Metrics) charged(policy, source string, prompt, completion int64) {
	if m == nil {
		return
	}
	m.tokens.WithLabelValues(policy, "prompt", source).Add(float64(prompt))
	m.tokens.WithLabelValues(policy, "completion", source).Add(float64(completion))
}

// breakdown counts the parts of a reported usage: prompt tokens read from
// or written to a cache, completion tokens spent reasoning. They are
// parts of prompt and completion, not more tokens beside them.
func (m *Metrics) breakdown(policy string, api llm.API, u llm.Usage) {
	if m == nil {
		return
	}
	for _, k := range []struct {
		kind string
		n    int64
	}{{"cached", u.CacheRead}, {"cache_write", u.CacheWrite}, {"reasoning", u.Reasoning}} {
		if k.n > 0 {
			m.tokens.WithLabelValues(policy, k.kind, sourceReported).Add(float64(k.n))
		}
	}
}

func (m *Metrics) refused(policy, limit string) {
	if m != nil {
		m.refusals.WithLabelValues(policy, limit).Inc()
	}
}

func (m *Metrics) costed(policy string, micros int64) {
	if m != nil && micros > 0 {
		m.cost.WithLabelValues(policy).Add(float64(micros))
	}
}

func (m *Metrics) unreadableBody(policy, reason, action string) {
	if m != nil {
		m.unreadable.WithLabelValues(policy, reason, action).Inc()
	}
}

func (m *Metrics) passed() {
	if m != nil {
		m.passthrough.Inc()
	}
}

func (m *Metrics) observe(ph phase, start time.Time) {
	if m != nil {
		m.phases[ph].Observe(time.Since(start).Seconds())
	}
}

func (m *Metrics) estimate(api llm.API, estimated, reported int64) {
	if m != nil && estimated > 0 && reported > 0 {
		m.estimateErr.WithLabelValues(api.String()).Observe(float64(estimated-reported) / float64(reported))
	}
}

func (m *Metrics) bounded() {
	if m != nil {
		m.bounds.Inc()
	}
}
