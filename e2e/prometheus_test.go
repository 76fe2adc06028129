package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/deploy/grafana"
	"github.com/tokengate/tokengate/e2e/harness"
)

// promConfig meters one policy by requests (6 a minute per key, so a
// key's 7th is refused) and by cost, gpt-4o at 2 and 8 per million
// tokens: whole micro-units per token, so the expected cost is exact.
const promConfig = `store: {backend: memory}
prices:
  models:
    gpt-4o: {input: 2, output: 8}
policies:
- name: metered
  counter_key: {header: [api-key]}
  limits:
  - {name: requests, unit: requests, max: 6, window: 1m}
  - {name: dollars, unit: cost, max: 100, period: daily}
`

// promScrapeWait bounds the wait for Prometheus to have scraped the load
// (scrapes are a second apart) and for its rules to have run on it.
const promScrapeWait = 30 * time.Second

// TestPrometheusScrapesLoadedTokengate runs a real Prometheus (Debian's
// prometheus package) scraping tokengate's admin port every second, with
// deploy/prometheus/alerts.yaml loaded, puts a known load through
// tokengate, and queries Prometheus's HTTP API: the decision, token, cost
// and latency series hold what the load sent, the alert rules evaluate
// on the real series without error, and every query of the Grafana
// dashboard runs.
func TestPrometheusScrapesLoadedTokengate(t *testing.T) {
	needBinaries(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: promConfig, FakeClock: labClock})
	admin := s.Tokengate.Field("admin")
	prom := harness.StartPrometheus(t, harness.PrometheusOptions{
		Job:       "tokengate",
		Targets:   []string{admin},
		RuleFiles: []string{filepath.Join(root, "deploy", "prometheus", "alerts.yaml")},
	})

	// The load: alice sends 4 chats, bob 8 (his 7th and 8th are refused
	// by the requests limit), each with a prompt and a completion length
	// of its own; one chat has no key; one GET is no inference call.
	type want struct {
		allowed, limited, missingKey, passthrough int
		prompt, completion, costMicros            int64
	}
	var w want
	sent := 0
	chat := func(key string, i int) {
		t.Helper()
		body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []harness.Message{
			{Role: "user", Content: fmt.Sprintf("Question %d: %s?", i, strings.Repeat("why ", i))},
		}})
		if err != nil {
			t.Fatal(err)
		}
		req := s.Request(http.MethodPost, "/v1/chat/completions", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-mock-completion-tokens", strconv.Itoa(5+3*i))
		if key != "" {
			req.Header.Set("api-key", key)
		}
		resp, respBody := s.Do(req)
		sent++
		step := fmt.Sprintf("%s's chat %d", key, i)
		switch resp.StatusCode {
		case http.StatusOK:
			var c struct {
				Usage struct {
					PromptTokens     int64 `json:"prompt_tokens"`
					CompletionTokens int64 `json:"completion_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(respBody, &c); err != nil || c.Usage.PromptTokens == 0 {
				t.Fatalf("%s: body %s: %v", step, respBody, err)
			}
			w.allowed++
			w.prompt += c.Usage.PromptTokens
			w.completion += c.Usage.CompletionTokens
			w.costMicros += 2*c.Usage.PromptTokens + 8*c.Usage.CompletionTokens
		case http.StatusTooManyRequests:
			w.limited++
		case http.StatusUnauthorized:
			w.missingKey++
		default:
			t.Fatalf("%s: status %d: %s", step, resp.StatusCode, respBody)
		}
	}
	for i := 1; i <= 4; i++ {
		chat("alice", i)
	}
	for i := 1; i <= 8; i++ {
		chat("bob", i)
	}
	chat("", 1)
	resp, body := s.Do(s.Request(http.MethodGet, "/v1/models", nil))
	sent++
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /v1/models: %d %s, want the mock's 404", resp.StatusCode, body)
	}
	w.passthrough++
	if w.allowed != 10 || w.limited != 2 || w.missingKey != 1 {
		t.Fatalf("the load: %d allowed, %d refused by the limit, %d without a key; want 10, 2, 1", w.allowed, w.limited, w.missingKey)
	}
	t.Logf("the load: %+v, %d requests", w, sent)

	// What Prometheus must hold once it has scraped the load. Counters
	// are compared exactly: every value is a whole number.
	expect := []struct {
		expr string
		want float64
	}{
		{`sum(tokengate_requests_total)`, float64(sent - w.passthrough)},
		{`sum(tokengate_requests_total{policy="metered", decision="allowed"})`, float64(w.allowed)},
		{`sum(tokengate_requests_total{policy="metered", decision="rate_limited"})`, float64(w.limited)},
		{`sum(tokengate_requests_total{decision="missing_key"})`, float64(w.missingKey)},
		{`sum(tokengate_limit_refusals_total{policy="metered", limit="requests"})`, float64(w.limited)},
		{`sum(tokengate_tokens_total{kind="prompt"})`, float64(w.prompt)},
		{`sum(tokengate_tokens_total{kind="prompt", source="reported"})`, float64(w.prompt)},
		{`sum(tokengate_tokens_total{kind="completion"})`, float64(w.completion)},
		{`sum(tokengate_tokens_total{kind="completion", source="reported"})`, float64(w.completion)},
		{`sum(tokengate_cost_micros_total{policy="metered"})`, float64(w.costMicros)},
		{`sum(tokengate_passthrough_total)`, float64(w.passthrough)},
		// Every request's headers reach tokengate once.
		{`sum(tokengate_decision_duration_seconds_count{phase="request_headers"})`, float64(sent)},
		{`sum(tokengate_decision_duration_seconds_bucket{phase="request_headers", le="+Inf"})`, float64(sent)},
		{`tokengate_store_fallback`, 0},
		{`up{job="tokengate"}`, 1},
	}
	var last []string
	harness.Eventually(t, promScrapeWait, func() error {
		last = last[:0]
		for _, e := range expect {
			got, err := prom.Value(e.expr)
			if err != nil {
				last = append(last, err.Error())
			} else if got != e.want {
				last = append(last, fmt.Sprintf("%s = %v, want %v", e.expr, got, e.want))
			}
		}
		if len(last) > 0 {
			return fmt.Errorf("Prometheus does not hold the load after %v:\n%s", promScrapeWait, strings.Join(last, "\n"))
		}
		return nil
	})

	// Latency: what Prometheus holds is what tokengate serves, and the
	// quantiles the dashboard and the alerts compute come out in range.
	for _, name := range []string{"tokengate_decision_duration_seconds_sum", "tokengate_decision_duration_seconds_count"} {
		direct, err := harness.ScrapeMetric(http.DefaultClient, admin, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := prom.Value("sum(" + name + ")")
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-direct) > 1e-9*math.Max(1, direct) {
			t.Errorf("Prometheus's sum(%s) = %v, tokengate's /metrics %v", name, got, direct)
		}
	}
	byPhase, err := prom.Query(`histogram_quantile(0.99, sum by (phase, le) (tokengate_decision_duration_seconds_bucket))`)
	if err != nil {
		t.Fatal(err)
	}
	phases := map[string]float64{}
	for _, s := range byPhase {
		phases[s.Metric["phase"]] = s.Value
	}
	for _, phase := range []string{"request_headers", "request_body", "response_headers", "response_body"} {
		// Past the histogram's last bucket (0.2 s) the quantile reads 0.2.
		if v, ok := phases[phase]; !ok || !(v > 0 && v <= 0.2) {
			t.Errorf("p99 decision latency of %s = %v (present: %v), want in (0, 0.2] s; all: %v", phase, v, ok, phases)
		}
	}

	// The alert rules ran on these series without error.
	harness.Eventually(t, promScrapeWait, func() error {
		rules, err := prom.Rules()
		if err != nil {
			return err
		}
		if len(rules) < 10 {
			return fmt.Errorf("Prometheus loaded %d rules from alerts.yaml", len(rules))
		}
		var errs []error
		for _, r := range rules {
			if r.Health != "ok" || r.LastError != "" || r.LastEvaluation.IsZero() {
				errs = append(errs, fmt.Errorf("rule %s: health %q, last error %q, last evaluated %v", r.Name, r.Health, r.LastError, r.LastEvaluation))
			}
		}
		return errors.Join(errs...)
	})

	// Every dashboard query runs on the real server, and the panels on
	// decisions, refusals, tokens, cost and latency show the load.
	queries, err := grafana.Queries("1m")
	if err != nil {
		t.Fatal(err)
	}
	mustShow := map[string]bool{
		"Decisions by policy and outcome": true, "Refusals by limit": true, "Tokens by kind and source": true,
		"Tokens by policy": true, "Cost by policy": true, "Decision latency per phase": true, "Store fallback": true,
	}
	shown := map[string]bool{}
	harness.Eventually(t, promScrapeWait, func() error {
		var errs []error
		for _, q := range queries {
			res, err := prom.Query(q.Expr)
			if err != nil {
				t.Fatalf("panel %q, query %s: %v", q.Panel, q.RefID, err)
			}
			if len(res) > 0 {
				shown[q.Panel] = true
			}
		}
		for panel := range mustShow {
			if !shown[panel] {
				errs = append(errs, fmt.Errorf("panel %q shows nothing after the load", panel))
			}
		}
		return errors.Join(errs...)
	})
	t.Logf("%d dashboard queries ran on Prometheus; panels with data: %v", len(queries), shown)
}
