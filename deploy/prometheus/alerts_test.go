package prometheus

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/deploy/internal/promcheck"
)

const (
	rulesFile = "alerts.yaml"
	testsFile = "alerts_test.yaml"
)

// promtool returns promtool's path. Without it the test is skipped,
// except under CI, where .ci/run installs it and its absence is a failure.
func promtool(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found; .ci/run must install Debian's prometheus package")
		}
		t.Skip("promtool not installed (apt-get install prometheus): the promtool checks are skipped")
	}
	return bin
}

// runPromtool runs promtool in dir and returns its output and error.
func runPromtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readRules(t *testing.T, data []byte) []rule {
	t.Helper()
	var f ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
	return out
}

func shippedRules(t *testing.T) ([]byte, []rule) {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	return data, readRules(t, data)
}

// checkNames checks every rule's expression against tokengate's metrics.
func checkNames(t *testing.T, rules []rule) []error {
	t.Helper()
	known, err := promcheck.New()
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, r := range rules {
		if err := known.Check(r.Expr); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func TestRulesPromtoolCheck(t *testing.T) {
	out, err := runPromtool(t, ".", "check", "rules", rulesFile)
	t.Logf("promtool check rules %s:\n%s", rulesFile, out)
	if err != nil {
		t.Fatalf("promtool check rules: %v", err)
	}
}

func TestRulesPromtoolUnitTests(t *testing.T) {
	out, err := runPromtool(t, ".", "test", "rules", testsFile)
	t.Logf("promtool test rules %s:\n%s", testsFile, out)
	if err != nil {
		t.Fatalf("promtool test rules: %v", err)
	}
}

// TestRulesNameExportedMetrics: a misspelt metric or label is valid
// PromQL that selects nothing, and its alert never fires.
func TestRulesNameExportedMetrics(t *testing.T) {
	_, rules := shippedRules(t)
	for _, err := range checkNames(t, rules) {
		t.Error(err)
	}
}

// TestRulesAreWellFormed: every rule is an alert with a severity and the
// annotations an on-call reads, and names are unique.
func TestRulesAreWellFormed(t *testing.T) {
	_, rules := shippedRules(t)
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s appears twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
			t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
	}
}

type unitTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name       string `yaml:"name"`
		AlertTests []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestRulesFireInTheirTests: promtool passes a test that expects nothing
// of a rule, so every rule must be expected to fire at some eval_time and
// to be quiet at another.
func TestRulesFireInTheirTests(t *testing.T) {
	_, rules := shippedRules(t)
	data, err := os.ReadFile(testsFile)
	if err != nil {
		t.Fatal(err)
	}
	var ut unitTests
	if err := yaml.Unmarshal(data, &ut); err != nil {
		t.Fatalf("%s: %v", testsFile, err)
	}
	if !slices.Equal(ut.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s tests rule files %v, want [%s]", testsFile, ut.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range ut.Tests {
		for _, at := range tc.AlertTests {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname]++
			} else {
				quiet[at.Alertname]++
			}
		}
	}
	names := map[string]bool{}
	for _, r := range rules {
		names[r.Alert] = true
		if fires[r.Alert] == 0 {
			t.Errorf("%s never fires in %s", r.Alert, testsFile)
		}
		if quiet[r.Alert] == 0 {
			t.Errorf("%s is never expected quiet in %s", r.Alert, testsFile)
		}
	}
	for name := range fires {
		if !names[name] {
			t.Errorf("%s tests alert %s, which %s does not have", testsFile, name, rulesFile)
		}
	}
}

// TestRulesCoverRunbook: every metric in a row of README's runbook table
// is watched by some rule.
func TestRulesCoverRunbook(t *testing.T) {
	_, rules := shippedRules(t)
	section, err := promcheck.READMESection("### Runbook")
	if err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`\btokengate_[a-z_]+`)
	rows := 0
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		rows++
		signal := strings.Split(line, "|")[1]
		for _, name := range metric.FindAllString(signal, -1) {
			if !slices.ContainsFunc(rules, func(r rule) bool { return strings.Contains(r.Expr, name) }) {
				t.Errorf("runbook row %q: no rule in %s watches %s", strings.TrimSpace(signal), rulesFile, name)
			}
		}
	}
	if rows < 5 {
		t.Fatalf("found %d runbook rows in README.md, want the table", rows)
	}
}

// TestRulesTypoFails mutates a copy of alerts.yaml as a careless edit
// would and checks that the tests above catch it.
func TestRulesTypoFails(t *testing.T) {
	data, _ := shippedRules(t)
	tests, err := os.ReadFile(testsFile)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, old, new string
		// promtoolCheck: whether `promtool check rules` should still pass
		// (a misspelt name is valid PromQL).
		promtoolCheck bool
	}{
		{"misspelt metric", "expr: tokengate_store_fallback == 1", "expr: tokengate_store_fallbak == 1", true},
		{"misspelt label", `{kind="timeout"}`, `{knd="timeout"}`, true},
		{"broken PromQL", `(rate(tokengate_store_errors_total{kind="timeout"}[5m]))`, `(rate(tokengate_store_errors_total{kind="timeout"}[5m])`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(data), c.old) {
				t.Fatalf("%s no longer contains %q: update the mutation", rulesFile, c.old)
			}
			mutated := strings.Replace(string(data), c.old, c.new, 1)
			dir := t.TempDir()
			for name, content := range map[string][]byte{rulesFile: []byte(mutated), testsFile: tests} {
				if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			// The metric check, run in-process, fails on all three.
			var nameErrs []error
			var f ruleFile
			if err := yaml.Unmarshal([]byte(mutated), &f); err != nil {
				t.Fatal(err)
			}
			for _, g := range f.Groups {
				nameErrs = append(nameErrs, checkNames(t, g.Rules)...)
			}
			if len(nameErrs) == 0 {
				t.Errorf("the metric check passed %s with %q", rulesFile, c.new)
			} else {
				t.Logf("the metric check: %v", nameErrs)
			}

			out, err := runPromtool(t, dir, "check", "rules", rulesFile)
			if c.promtoolCheck && err != nil {
				t.Errorf("promtool check rules failed on valid PromQL: %v\n%s", err, out)
			}
			if !c.promtoolCheck && err == nil {
				t.Errorf("promtool check rules passed %q:\n%s", c.new, out)
			}
			t.Logf("promtool check rules: %v\n%s", err, out)

			// The unit tests fail too: the rule no longer fires, or no
			// longer loads.
			out, err = runPromtool(t, dir, "test", "rules", testsFile)
			if err == nil {
				t.Errorf("promtool test rules passed with %q:\n%s", c.new, out)
			}
		})
	}
}
