package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ScrapeMetric reads tokengate's /metrics on admin and returns the sum of
// the series of name whose labels include every name/value pair of labels
// (0 when none matches: an untouched counter vector exports nothing).
func ScrapeMetric(client *http.Client, admin, name string, labels ...string) (float64, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: %s %v", admin, resp.Status, err)
	}
	var sum float64
	for line := range strings.Lines(string(body)) {
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(series, "#") || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, fmt.Sprintf("%s=%q", labels[i], labels[i+1])) {
				match = false
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %q: %w", admin, line, err)
		}
		if match {
			sum += v
		}
	}
	return sum, nil
}

func getStatus(client *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
