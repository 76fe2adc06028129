package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// checkTokengate reads tokengate's /metrics after a mode and checks it did
// the work the figures claim: every stream counted and allowed, usage
// read, estimates made when asked, the store reached without a fallback.
// Without them a misconfigured run (every request refused, passed through
// or silently failing open on Redis) would look fast.
func checkTokengate(admin string, m mode, sent int64) []check {
	text, err := scrape(admin)
	if err != nil {
		return []check{{What: "read tokengate's /metrics: " + err.Error()}}
	}
	v := func(name string, labels ...string) float64 { return sumSeries(text, name, labels...) }
	allowed := v("tokengate_requests_total", "policy", "bench", "decision", "allowed")
	out := []check{
		{What: fmt.Sprintf("requests counted and allowed: %.0f of %d streams sent", allowed, sent), OK: int64(allowed) == sent},
		{What: fmt.Sprintf("passed through uncounted: %.0f", v("tokengate_passthrough_total")), OK: v("tokengate_passthrough_total") == 0},
		{What: fmt.Sprintf("completion tokens from reported usage: %.0f", v("tokengate_tokens_total", "kind", "completion", "source", "reported")),
			OK: v("tokengate_tokens_total", "kind", "completion", "source", "reported") > 0},
		// A rare store timeout on a loaded machine does not flatter the
		// figures (the call waited its read_timeout); many would mean the
		// run measured a fallback.
		{What: fmt.Sprintf("store errors: %.0f (at most 0.1%% of streams)", v("tokengate_store_errors_total")),
			OK: v("tokengate_store_errors_total") <= float64(sent)/1000},
	}
	if m.estimate || m.streamed {
		// Streamed requests are always estimated (stream: true, as APIM does).
		n := v("tokengate_prompt_estimate_error_ratio_count")
		out = append(out, check{What: fmt.Sprintf("prompt estimates compared with usage: %.0f", n), OK: int64(n) == sent})
	}
	if m.redis {
		// Every stream's settle reached Redis: behind its response, in a
		// batch, or in line when the queue was full. Checks far from the
		// limits are answered from the last answer (limiter/behind), so
		// round trips may be fewer than streams.
		calls := v("tokengate_store_duration_seconds_count")
		settled := v("tokengate_settle_batch_size_sum") + v("tokengate_settle_overflow_total")
		out = append(out,
			check{What: fmt.Sprintf("settles sent to redis: %.0f of %d streams, in %.0f round trips with the checks (%.2f per stream)",
				settled, sent, calls, calls/float64(max(sent, 1))), OK: settled >= float64(sent)},
			check{What: fmt.Sprintf("store fallback gauge: %.0f", v("tokengate_store_fallback")), OK: v("tokengate_store_fallback") == 0})
	}
	return out
}

func scrape(admin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return string(b), nil
}

// sumSeries adds the samples of metric name (Prometheus text format) whose
// labels include every given name/value pair.
func sumSeries(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.Lines(text) {
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, fmt.Sprintf("%s=%q", labels[i], labels[i+1])) {
				match = false
			}
		}
		if f, err := strconv.ParseFloat(value, 64); err == nil && match {
			sum += f
		}
	}
	return sum
}
