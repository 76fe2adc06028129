package main

import (
	"strings"
	"testing"
	"time"
)

func TestRoundsAddUp(t *testing.T) {
	o := options{requests: 1003, rounds: 4, concurrency: 1}
	var sum int64
	for r := range o.rounds {
		sum += roundBound(o, r).requests
	}
	if sum != 1003 {
		t.Errorf("rounds add up to %d requests, want 1003", sum)
	}
	o = options{duration: 10 * time.Second, rounds: 4}
	if d := roundBound(o, 3).duration; d != 2500*time.Millisecond {
		t.Errorf("round duration %v", d)
	}
}

func TestTargetsAndCommand(t *testing.T) {
	for i, c := range []struct {
		t    targetCheck
		want string
	}{
		{newTarget("p50", 1.30, 1.25, true), "MISSED by 4.0%"},
		{newTarget("p50", 1.10, 1.25, true), "met"},
		{newTarget("tput", 0.72, 0.8, false), "MISSED by 10.0%"},
		{newTarget("tput", 0.80, 0.8, false), "met"},
	} {
		if got := c.t.verdict(); got != c.want {
			t.Errorf("step %d: verdict %q, want %q", i, got, c.want)
		}
	}
	if got := commandLine([]string{"-mode", "all", "-out", "my file.md"}); got != "go run ./e2e/bench -mode all -out 'my file.md'" {
		t.Errorf("commandLine = %s", got)
	}
	metrics := "# HELP x\ntokengate_requests_total{decision=\"allowed\",policy=\"bench\"} 12\n" +
		"tokengate_requests_total{decision=\"rate_limited\",policy=\"bench\"} 3\ntokengate_requests_totalx 99\n"
	if got := sumSeries(metrics, "tokengate_requests_total", "decision", "allowed"); got != 12 {
		t.Errorf("sumSeries allowed = %v", got)
	}
	if got := sumSeries(metrics, "tokengate_requests_total"); got != 15 {
		t.Errorf("sumSeries all = %v", got)
	}
	if _, err := pickModes("buffered,nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("pickModes accepted an unknown mode: %v", err)
	}
}
