package grafana

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokengate/tokengate/deploy/internal/promcheck"
)

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// checkDashboard checks every query of a dashboard: Grafana's variables
// expand, the PromQL parses with Prometheus's parser, and every metric
// and label it names is one tokengate exports; the variables'
// label_values queries too.
func checkDashboard(t *testing.T, data []byte) []error {
	t.Helper()
	d, err := Parse(data)
	if err != nil {
		return []error{err}
	}
	known, err := promcheck.New()
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	queries := 0
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			queries++
			e, err := d.Expand(q.Expr, "5m")
			if err == nil {
				err = known.Check(e)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("panel %q, query %s: %w", p.Title, q.RefID, err))
			}
		}
	}
	if queries == 0 {
		errs = append(errs, errors.New("the dashboard has no queries"))
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.QueryText() != v.Definition {
			errs = append(errs, fmt.Errorf("variable %s: query %q and definition %q differ", v.Name, v.QueryText(), v.Definition))
		}
		m := labelValues.FindStringSubmatch(v.QueryText())
		if m == nil {
			errs = append(errs, fmt.Errorf("variable %s: %q is not label_values(metric, label)", v.Name, v.QueryText()))
			continue
		}
		e, err := d.Expand(m[1], "5m")
		if err == nil {
			err = known.Check(e)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("variable %s: %w", v.Name, err))
			continue
		}
		for _, vs := range selectors(t, e) {
			if labels, _ := known.Labels(vs); !slices.Contains(labels, m[2]) {
				errs = append(errs, fmt.Errorf("variable %s: %s has no label %q", v.Name, vs, m[2]))
			}
		}
	}
	return errs
}

func selectors(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vs := range promcheck.Selectors(e) {
		names = append(names, vs.Name)
	}
	return names
}

func shipped(t *testing.T) *Dashboard {
	t.Helper()
	d, err := Parse(JSON())
	if err != nil {
		t.Fatalf("tokengate.json: %v", err)
	}
	return d
}

// TestDashboardQueriesNameExportedMetrics: every panel's PromQL parses
// with Prometheus's own parser and names only metrics and labels that
// tokengate's /metrics serves.
func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	for _, err := range checkDashboard(t, JSON()) {
		t.Error(err)
	}
}

// TestDashboardAnswersTheIssue: the panels cover decisions by policy and
// outcome, tokens by kind and source, refusals, cost, latency per phase
// and store health; top keys come from the admin API, not Prometheus.
func TestDashboardAnswersTheIssue(t *testing.T) {
	d := shipped(t)
	named := map[string]bool{}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			for _, n := range selectors(t, mustExpand(t, d, q.Expr)) {
				named[n] = true
			}
		}
	}
	for _, want := range []string{
		"tokengate_requests_total", "tokengate_tokens_total", "tokengate_limit_refusals_total",
		"tokengate_cost_micros_total", "tokengate_decision_duration_seconds_bucket",
		"tokengate_store_fallback", "tokengate_store_errors_total", "tokengate_store_duration_seconds_bucket",
	} {
		if !named[want] {
			t.Errorf("no panel queries %s", want)
		}
	}
	i := slices.IndexFunc(d.Panels, func(p Panel) bool { return p.Title == "Top keys by use" })
	if i < 0 {
		t.Fatal(`no "Top keys by use" panel`)
	}
	if p := d.Panels[i]; p.Type != "text" || len(p.Targets) != 0 || !strings.Contains(p.Description, "ListUsage") {
		t.Errorf("Top keys by use: a %s panel with %d queries, description %q; want a text panel pointing at the admin API's ListUsage (no metric carries a key)", p.Type, len(p.Targets), p.Description)
	}
}

func mustExpand(t *testing.T, d *Dashboard, expr string) string {
	t.Helper()
	e, err := d.Expand(expr, "5m")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDashboardLayout: what Grafana needs to show the dashboard as meant:
// unique panel ids, panels on the 24-column grid without overlapping,
// every query on the chosen data source with a refId of its own, and a
// description on every panel (Grafana shows it as the panel's tooltip).
func TestDashboardLayout(t *testing.T) {
	d := shipped(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: want both", d.UID, d.Title)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v Variable) bool { return v.Type == "datasource" && v.Name == "datasource" }) {
		t.Error("no $datasource variable")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panel %q overlaps %q at %d,%d", p.Title, other, x, y)
					goto next
				}
				taken[cell{x, y}] = p.Title
			}
		}
	next:
		if p.Type == "row" {
			continue
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Type == "text" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q reads data source %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] || q.Expr == "" || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query %+v: want a refId of its own, an expr and data source ${datasource}", p.Title, q)
			}
			refs[q.RefID] = true
		}
	}
}

// TestDashboardPanelsInREADME: README's section on the dashboard says what
// every panel answers, by its title.
func TestDashboardPanelsInREADME(t *testing.T) {
	section, err := promcheck.READMESection("### Grafana dashboard")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range shipped(t).Panels {
		if p.Type != "row" && !strings.Contains(section, "**"+p.Title+"**") {
			t.Errorf("README's Grafana dashboard section does not describe panel **%s**", p.Title)
		}
	}
}

// TestDashboardTypoFails mutates a copy of the dashboard as a careless
// edit would and checks that checkDashboard catches each.
func TestDashboardTypoFails(t *testing.T) {
	data := string(JSON())
	for _, c := range []struct{ name, old, new string }{
		{"misspelt metric", "rate(tokengate_tokens_total{", "rate(tokengate_token_total{"},
		{"misspelt label", "sum by (kind, source)", "sum by (knd, source)"},
		{"label the metric lacks", `rate(tokengate_passthrough_total{job=~\"$job\"}`, `rate(tokengate_passthrough_total{job=~\"$job\", policy=~\"$policy\"}`},
		{"broken PromQL", "sum by (policy, decision) (rate(", "sum by (policy, decision) rate(("},
		{"unknown variable", `policy=~\"$policy\"`, `policy=~\"$polcy\"`},
		{"misspelt metric in a variable", "label_values(tokengate_requests_total, job)", "label_values(tokengate_request_total, job)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(data, c.old) {
				t.Fatalf("tokengate.json no longer contains %s: update the mutation", c.old)
			}
			errs := checkDashboard(t, []byte(strings.Replace(data, c.old, c.new, 1)))
			if len(errs) == 0 {
				t.Fatalf("the check passed the dashboard with %s", c.new)
			}
			t.Logf("caught: %v", errs)
		})
	}
}
