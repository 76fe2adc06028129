// Package promcheck checks PromQL (alert rules, dashboard panels) against
// the metric families tokengate serves: it parses each expression with
// Prometheus's own parser and fails on a metric name, or a label in a
// matcher, a by (…) or an on (…), that no family has. A misspelt name is
// valid PromQL that matches nothing, and an alert on it would never fire.
package promcheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokengate/tokengate/internal/proc"
	"github.com/tokengate/tokengate/internal/server"
)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// Known is the set of series names PromQL may name, each with its labels.
type Known struct {
	series map[string][]string
}

// New lists tokengate's families (server.Families) and the series
// Prometheus writes itself for each target (up, scrape_*).
func New() (*Known, error) {
	fams, err := server.Families()
	if err != nil {
		return nil, err
	}
	k := &Known{series: map[string][]string{}}
	for _, f := range fams {
		labels := append(slices.Clone(f.Labels), targetLabels...)
		switch f.Type {
		case "histogram":
			k.series[f.Name+"_bucket"] = append(slices.Clone(labels), "le")
			k.series[f.Name+"_sum"] = labels
			k.series[f.Name+"_count"] = labels
		case "summary":
			k.series[f.Name] = append(slices.Clone(labels), "quantile")
			k.series[f.Name+"_sum"] = labels
			k.series[f.Name+"_count"] = labels
		default:
			k.series[f.Name] = labels
		}
	}
	for _, name := range []string{"up", "scrape_duration_seconds", "scrape_samples_scraped"} {
		k.series[name] = targetLabels
	}
	return k, nil
}

// Has reports whether name is a series tokengate or its scrape exports.
func (k *Known) Has(name string) bool {
	_, ok := k.series[name]
	return ok
}

// Labels returns the labels of series name (the target's job and
// instance included), and whether tokengate or its scrape exports it.
func (k *Known) Labels(name string) ([]string, bool) {
	l, ok := k.series[name]
	return slices.Clone(l), ok
}

// Check parses expr and returns every name and label in it that no known
// series has, and the parser's error if it does not parse.
func (k *Known) Check(expr string) error {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return fmt.Errorf("%q does not parse: %w", expr, err)
	}
	var errs []error
	// The labels of every series the expression selects, for by (…),
	// without (…), on (…) and ignoring (…).
	inExpr := slices.Clone(targetLabels)
	for _, vs := range Selectors(e) {
		labels, ok := k.series[vs.Name]
		switch {
		case vs.Name == "":
			errs = append(errs, fmt.Errorf("%s names no metric", vs))
			continue
		case !ok:
			errs = append(errs, fmt.Errorf("metric %s is not one tokengate exports", vs.Name))
			continue
		}
		inExpr = append(inExpr, labels...)
		for _, m := range vs.LabelMatchers {
			if m.Name != "__name__" && !slices.Contains(labels, m.Name) {
				errs = append(errs, fmt.Errorf("%s: %s has no label %q", vs, vs.Name, m.Name))
			}
		}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		var grouping []string
		switch n := n.(type) {
		case *parser.AggregateExpr:
			grouping = n.Grouping
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = slices.Concat(n.VectorMatching.MatchingLabels, n.VectorMatching.Include)
			}
		}
		for _, l := range grouping {
			if !slices.Contains(inExpr, l) {
				errs = append(errs, fmt.Errorf("label %q (in %s) is on none of the series selected", l, strings.SplitN(n.String(), "\n", 2)[0]))
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// Selectors returns the vector selectors of e, in order.
func Selectors(e parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// READMESection is the text of README.md under the heading line given
// (for example "### Runbook"), up to the next heading: what the tests
// holding README to the shipped rules and dashboard read.
func READMESection(heading string) (string, error) {
	root, err := proc.ModuleRoot()
	if err != nil {
		return "", err
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		return "", err
	}
	_, after, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		return "", fmt.Errorf("README.md has no %q section", heading)
	}
	section, _, _ := strings.Cut(after, "\n#")
	return section, nil
}
