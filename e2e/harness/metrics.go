package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// pollEvery is how often PollAll looks again: state changes here (a
// probe, a gauge) take tens to hundreds of milliseconds.
const pollEvery = 20 * time.Millisecond

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

// PollAll calls check(i) for i in [0, n) every pollEvery until all hold at
// once or timeout passes. On timeout the error names the indices that did
// not hold, and the returned notes are check's last words for each.
func PollAll(n int, timeout time.Duration, check func(i int) (ok bool, note string)) ([]string, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	notes := make([]string, n)
	for {
		var failing []int
		for i := range n {
			ok, note := check(i)
			notes[i] = note
			if !ok {
				failing = append(failing, i)
			}
		}
		if len(failing) == 0 {
			return notes, nil
		}
		if !time.Now().Before(deadline) {
			return notes, fmt.Errorf("not reached after %v by %v", timeout, failing)
		}
		<-tick.C
	}
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
