package server

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokengate/tokengate/extproc"
)

// registerMetrics registers on reg everything the admin port's /metrics
// serves: Go's and the process's collectors, the server's series and
// extproc's. Run and Families both call it, so the list Families gives is
// the one a running tokengate serves.
func registerMetrics(reg prometheus.Registerer) (*metrics, *extproc.Metrics) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return newMetrics(reg), extproc.NewMetrics(reg)
}

// Family is one metric family of /metrics.
type Family struct {
	// Name is the family's name as exported (a counter's ends in _total);
	// a histogram's series add _bucket, _sum and _count to it.
	Name string
	// Type is counter, gauge, histogram, summary or untyped.
	Type string
	// Labels are the labels its series carry, le and quantile aside.
	Labels []string
}

// Families lists every metric family tokengate's /metrics can serve (its
// own tokengate_ series, Go's and the process's), sorted by name, whether
// or not anything has been observed yet: a vector nothing touched
// exports nothing, so a scrape of an idle server lists less. Alert rules
// and dashboards are checked against it (deploy/internal/promcheck).
func Families() ([]Family, error) {
	reg := prometheus.NewRegistry()
	rec := &recorder{Registerer: reg}
	registerMetrics(rec)
	gathered, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	byName := map[string]Family{}
	for _, mf := range gathered {
		f := Family{Name: mf.GetName(), Type: strings.ToLower(mf.GetType().String())}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(f.Labels, lp.GetName()) {
					f.Labels = append(f.Labels, lp.GetName())
				}
			}
		}
		byName[f.Name] = f
	}
	// What Gather left out: vectors without a series yet. Their names
	// and labels come from their descriptions, their type from theirs.
	for _, c := range rec.collectors {
		var typ string
		switch c.(type) {
		case *prometheus.CounterVec:
			typ = dto.MetricType_COUNTER.String()
		case *prometheus.GaugeVec:
			typ = dto.MetricType_GAUGE.String()
		case *prometheus.HistogramVec:
			typ = dto.MetricType_HISTOGRAM.String()
		case *prometheus.SummaryVec:
			typ = dto.MetricType_SUMMARY.String()
		}
		descs := make(chan *prometheus.Desc)
		go func() {
			c.Describe(descs)
			close(descs)
		}()
		for d := range descs {
			name, labels, err := parseDesc(d)
			if err != nil {
				return nil, err
			}
			if _, ok := byName[name]; ok {
				continue
			}
			if typ == "" {
				return nil, fmt.Errorf("metric %s: a collector of type %T exported nothing and its type is unknown", name, c)
			}
			byName[name] = Family{Name: name, Type: strings.ToLower(typ), Labels: labels}
		}
	}
	out := make([]Family, 0, len(byName))
	for _, f := range byName {
		slices.Sort(f.Labels)
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// recorder keeps what is registered through it.
type recorder struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	r.Registerer.MustRegister(cs...)
	r.collectors = append(r.collectors, cs...)
}

// descPattern reads Desc.String, the only way client_golang shows a
// description's name and labels: `Desc{fqName: "n", help: "…",
// constLabels: {…}, variableLabels: {a,b}}`. A label may be shown as
// c(name) when it has a constraint. TestFamilies fails if the format moves.
var descPattern = regexp.MustCompile(`(?s)^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)", .*variableLabels: \{([^{}]*)\}\}$`)

func parseDesc(d *prometheus.Desc) (string, []string, error) {
	m := descPattern.FindStringSubmatch(d.String())
	if m == nil {
		return "", nil, fmt.Errorf("cannot read the metric description %s", d)
	}
	var labels []string
	for l := range strings.SplitSeq(m[2], ",") {
		if l = strings.TrimSpace(l); l != "" {
			l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")
			labels = append(labels, l)
		}
	}
	return m[1], labels, nil
}
