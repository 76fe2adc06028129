// Package grafana holds tokengate's Grafana dashboard, tokengate.json
// (import it in Grafana, or provision it from a file), and reads its
// queries for the tests: deploy/grafana's parse every panel's PromQL with
// Prometheus's parser and check the metrics it names, and an e2e test
// runs every query against a real Prometheus scraping a loaded tokengate.
package grafana

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

//go:embed tokengate.json
var dashboardJSON []byte

// JSON is the dashboard as shipped.
func JSON() []byte { return slices.Clone(dashboardJSON) }

// Dashboard is the part of Grafana's dashboard model the tests read.
type Dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is one panel, or a row (Type "row").
type Panel struct {
	ID          int        `json:"id"`
	Type        string     `json:"type"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Datasource  Datasource `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []Target `json:"targets"`
}

// Target is one query of a panel.
type Target struct {
	RefID        string     `json:"refId"`
	Expr         string     `json:"expr"`
	LegendFormat string     `json:"legendFormat"`
	Datasource   Datasource `json:"datasource"`
}

// Datasource names the data source a panel or query reads.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a templating variable ($datasource, $job, $policy).
type Variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	AllValue   string          `json:"allValue"`
}

// QueryText is a query variable's query: Grafana writes it as a string
// or as {"query": …, "refId": …}.
func (v Variable) QueryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &q)
	return q.Query
}

// Parse decodes the fields of a dashboard that the types above name;
// Grafana's other fields are left to Grafana.
func Parse(data []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Query is one panel query, ready for Prometheus.
type Query struct {
	Panel string // the panel's title
	RefID string
	Expr  string // with Grafana's variables expanded
}

// builtins are Grafana's interval variables; Expand replaces them by the
// range it is given.
var builtins = []string{"$__rate_interval", "$__interval", "$__range"}

var variableRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

// Expand replaces Grafana's variables in expr as a Prometheus query
// would see them with "All" selected: the interval variables by
// rangeInterval (a PromQL duration, "5m"), and each of the dashboard's
// own variables by its allValue. A variable the dashboard does not
// define is an error.
func (d *Dashboard) Expand(expr, rangeInterval string) (string, error) {
	for _, b := range builtins {
		expr = strings.ReplaceAll(expr, b, rangeInterval)
	}
	var err error
	expr = variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		name := variableRef.FindStringSubmatch(ref)[1]
		for _, v := range d.Templating.List {
			if v.Name == name && v.Type == "query" {
				return v.AllValue
			}
		}
		err = fmt.Errorf("%s uses $%s, which the dashboard does not define", expr, name)
		return ref
	})
	return expr, err
}

// Queries returns every panel query of the shipped dashboard, expanded
// with Expand.
func Queries(rangeInterval string) ([]Query, error) {
	d, err := Parse(dashboardJSON)
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			e, err := d.Expand(t.Expr, rangeInterval)
			if err != nil {
				return nil, fmt.Errorf("panel %q, query %s: %w", p.Title, t.RefID, err)
			}
			out = append(out, Query{Panel: p.Title, RefID: t.RefID, Expr: e})
		}
	}
	return out, nil
}
