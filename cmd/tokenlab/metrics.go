package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// charged is what tokengate says it charged a policy, from its metrics:
// the other side of the table's account.
type charged struct {
	Prompt, Completion int
	Decisions          map[string]int // tokengate_requests_total by decision
}

func (c charged) total() int { return c.Prompt + c.Completion }

// scrapeCharged reads tokengate's /metrics on its admin address and sums
// the tokens charged to policy (every source: reported, counted,
// estimated) and its requests by decision.
func scrapeCharged(ctx context.Context, admin, policy string) (charged, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return charged{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return charged{}, fmt.Errorf("reading tokengate's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return charged{}, fmt.Errorf("reading tokengate's metrics: %s: %s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return charged{}, fmt.Errorf("reading tokengate's metrics: %w", err)
	}
	c := charged{Decisions: map[string]int{}}
	for _, m := range families["tokengate_tokens_total"].GetMetric() {
		labels := labelMap(m.GetLabel())
		if labels["policy"] != policy {
			continue
		}
		n := int(m.GetCounter().GetValue())
		switch labels["kind"] {
		case "prompt":
			c.Prompt += n
		case "completion":
			c.Completion += n
		}
	}
	for _, m := range families["tokengate_requests_total"].GetMetric() {
		labels := labelMap(m.GetLabel())
		if labels["policy"] == policy {
			c.Decisions[labels["decision"]] += int(m.GetCounter().GetValue())
		}
	}
	return c, nil
}

func labelMap(pairs []*dto.LabelPair) map[string]string {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		out[p.GetName()] = p.GetValue()
	}
	return out
}
