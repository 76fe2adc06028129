package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/internal/ports"
	"github.com/tokengate/tokengate/internal/proc"
)

// PrometheusReadyTimeout bounds a Prometheus start: it replays an empty
// WAL and loads its rules in well under a second on an idle machine.
const PrometheusReadyTimeout = 30 * time.Second

// Prometheus is a real Prometheus server (Debian's prometheus package)
// on a free loopback port, with its data in the test's temporary
// directory, scraping targets every second.
type Prometheus struct {
	URL    string // http://127.0.0.1:port
	client *http.Client
}

// PrometheusOptions describe one server.
type PrometheusOptions struct {
	// Job names the scrape job of Targets.
	Job string
	// Targets are host:port addresses whose /metrics it scrapes.
	Targets []string
	// RuleFiles are rule files it loads, evaluated every second.
	RuleFiles []string
}

// StartPrometheus starts the prometheus binary ($PROMETHEUS_BIN, else
// prometheus on $PATH) and waits until it is ready; it is killed when the
// test ends. Without the binary the test is skipped, except under CI,
// where .ci/run installs it and its absence is a failure.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	bin := os.Getenv("PROMETHEUS_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("prometheus"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("prometheus not found; .ci/run must install Debian's prometheus package")
			}
			t.Skip("prometheus not installed (apt-get install prometheus, or set PROMETHEUS_BIN): the Prometheus end-to-end test is skipped")
		}
	}
	dir := t.TempDir()
	targets, _ := json.Marshal(opts.Targets)
	rules, _ := json.Marshal(opts.RuleFiles)
	// YAML is a superset of JSON: the lists are written as JSON arrays.
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: %s
scrape_configs:
- job_name: %q
  static_configs: [{targets: %s}]
`, rules, opts.Job, targets)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports.Free(t))
	p := &Prometheus{URL: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	pp := launch(t, bin, []string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--log.level=warn",
	}, proc.Options{Name: "prometheus", Probe: func() error {
		code, err := getStatus(p.client, p.URL+"/-/ready")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/-/ready: %d", code)
		}
		return err
	}, ProbeEvery: 50 * time.Millisecond})
	if err := pp.WaitReady(PrometheusReadyTimeout); err != nil {
		t.Fatal(err)
	}
	return p
}

// Sample is one element of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query runs an instant query (/api/v1/query) and returns its vector or
// scalar result (a scalar as one sample without labels). A query
// Prometheus rejects is an error that quotes its message.
func (p *Prometheus) Query(expr string) ([]Sample, error) {
	form := url.Values{"query": {expr}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, p.URL+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("query %s: %d %q: %w", expr, resp.StatusCode, body, err)
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", expr, out.Error)
	}
	switch out.Data.ResultType {
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(out.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parseValue(v[1])
		return []Sample{{Value: f}}, err
	case "vector":
		var vs []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(out.Data.Result, &vs); err != nil {
			return nil, err
		}
		samples := make([]Sample, len(vs))
		for i, v := range vs {
			f, err := parseValue(v.Value[1])
			if err != nil {
				return nil, err
			}
			samples[i] = Sample{Metric: v.Metric, Value: f}
		}
		return samples, nil
	}
	return nil, fmt.Errorf("query %s: result type %q, want a vector or a scalar", expr, out.Data.ResultType)
}

// parseValue reads a sample value, which the API sends as a string
// ("1.5", "NaN", "+Inf").
func parseValue(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v)
	}
	return strconv.ParseFloat(s, 64)
}

// Value runs a query whose answer is one sample and returns its value;
// an empty answer is an error.
func (p *Prometheus) Value(expr string) (float64, error) {
	s, err := p.Query(expr)
	if err != nil {
		return 0, err
	}
	if len(s) != 1 {
		return 0, fmt.Errorf("query %s: %d samples %v, want one", expr, len(s), s)
	}
	return s[0].Value, nil
}

// Rule is one rule as /api/v1/rules reports it.
type Rule struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"` // alerts: inactive, pending, firing
	// LastEvaluation is when it was last evaluated (zero before the first).
	LastEvaluation time.Time `json:"lastEvaluation"`
}

// Rules returns every loaded rule.
func (p *Prometheus) Rules() ([]Rule, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, p.URL+"/api/v1/rules", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Rules []Rule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("rules: status %q", out.Status)
	}
	var rules []Rule
	for _, g := range out.Data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules, nil
}
