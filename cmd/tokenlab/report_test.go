package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyLimit(t *testing.T) {
	answered := []result{{Limit: ""}, {Limit: "500"}, {Limit: "900"}}
	tests := []struct {
		flag    int
		results []result
		want    int
	}{
		{0, answered, 500},
		{750, answered, 750},
		{0, []result{{Status: 0}}, 0},
		{0, []result{{Limit: "lots"}}, 0},
	}
	for i, tt := range tests {
		if got := policyLimit(tt.flag, tt.results); got != tt.want {
			t.Errorf("case %d: %d, want %d", i, got, tt.want)
		}
	}
}

func TestTable(t *testing.T) {
	tests := []struct {
		name    string
		results []result
		limit   int
		want    string
	}{
		{"plain HTTP", []result{
			{Run: 1, Status: 200, Prompt: 30, Completion: 64, Total: 94, Remaining: "406", Latency: 2340 * time.Microsecond},
			{Run: 2, Status: 429, Remaining: "0", RetryAfter: "59", RetryAfterMs: "58734", Latency: 800 * time.Microsecond},
			{Run: 3, Err: errors.New("connection refused"), Latency: 1234567 * time.Microsecond},
		}, 500, `
    run  status  prompt  completion  total  remaining  retry-after  latency
      1     200      30          64     94        406            -    2.3ms
      2     429       0           0      0          0          59s    800µs
      3   error       0           0      0          -            -    1.23s
  total              30          64     94

3 runs: 1 × error, 1 × 200, 1 × 429; 94 tokens used, the policy allows 500 per minute
run 3: connection refused
`},
		{"through the SDK, limit unknown", []result{
			{Run: 1, Status: 200, Prompt: 30, Completion: 64, Total: 94, Remaining: "406", Latency: 59451 * time.Millisecond, Attempts: make([]attempt, 2)},
			{Run: 2, Status: 429, RetryAfter: "60", Latency: 2 * time.Millisecond, Attempts: make([]attempt, 3)},
		}, 0, `
    run  status  prompt  completion  total  remaining  retry-after  latency  attempts
      1     200      30          64     94        406            -   59.45s         2
      2     429       0           0      0          -          60s      2ms         3
  total              30          64     94

2 runs: 1 × 200, 1 × 429; 94 tokens used
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			writeTable(&b, tt.results, tt.limit)
			if want := strings.TrimPrefix(tt.want, "\n"); b.String() != want {
				t.Errorf("table:\n%s\nwant:\n%s", &b, want)
			}
		})
	}
}

func TestPlural(t *testing.T) {
	tests := []struct {
		n    int
		noun string
		want string
	}{
		{1, "run", "1 run"}, {2, "run", "2 runs"}, {0, "retry", "0 retries"}, {1, "retry", "1 retry"}, {10, "chat completion", "10 chat completions"},
	}
	for _, tt := range tests {
		if got := plural(tt.n, tt.noun); got != tt.want {
			t.Errorf("plural(%d, %q) = %q, want %q", tt.n, tt.noun, got, tt.want)
		}
	}
}
