package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tableRow is one run as `tokenlab local` printed it.
type tableRow struct {
	run, status, prompt, completion, total int
	remaining, retryAfter                  string
}

// TestLocal runs `tokenlab local` as a user would, for every API, buffered
// and streamed, and checks what it printed and drew against tokengate's
// own account and the window's arithmetic. The policy names no key
// header, so each API's callers are keyed by their API's own header (a
// request tokengate found no key in would be refused with 401).
func TestLocal(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		first string // what the lab's first line says it sent
	}{
		{"openai", nil, "10 OpenAI chat completions (gpt-4o)"},
		{"openai streamed", []string{"--stream"}, "10 OpenAI chat completions (gpt-4o, streamed)"},
		{"anthropic", []string{"--api", "anthropic"}, "10 Anthropic Messages calls (claude-sonnet-4-5)"},
		{"anthropic streamed", []string{"--api", "anthropic", "--stream"}, "10 Anthropic Messages calls (claude-sonnet-4-5, streamed)"},
		{"gemini", []string{"--api", "gemini"}, "10 Gemini generateContent calls (gemini-2.5-flash)"},
		{"gemini streamed", []string{"--api", "gemini", "--stream"}, "10 Gemini generateContent calls (gemini-2.5-flash, streamed)"},
		{"bedrock", []string{"--api", "bedrock"}, "10 Bedrock Converse calls (amazon.nova-pro-v1:0)"},
		{"bedrock streamed", []string{"--api", "bedrock", "--stream"}, "10 Bedrock Converse calls (amazon.nova-pro-v1:0, streamed)"},
		{"bedrock keyed by --key-header", []string{"--api", "bedrock", "--key-header", "x-tenant", "--model", "anthropic.claude-sonnet-4-5-v1:0"},
			"10 Bedrock Converse calls (anthropic.claude-sonnet-4-5-v1:0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLocal(t, tt.args, tt.first)
		})
	}
}

func checkLocal(t *testing.T, args []string, first string) {
	const limit = 500
	out := filepath.Join(t.TempDir(), "lab.png")
	streamed := slices.Contains(args, "--stream")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := run(ctx, append([]string{"local", "--out", out}, args...), &stdout, &stderr)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("tokenlab local: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	t.Logf("stdout:\n%s", &stdout)
	if !strings.Contains(stdout.String(), "\ntokenlab: "+first+" to ") {
		t.Errorf("no line saying the lab sent %q", first)
	}
	rows, totals := parseTable(t, stdout.String())
	if len(rows) != 10 {
		t.Fatalf("%d table rows, want 10", len(rows))
	}

	// A run is let through while the window has room before it, refused
	// once it has none; each 200 says how much is left: a buffered answer
	// after its own tokens, a streamed one (its headers go first) before.
	used, ok, refused := 0, 0, 0
	for i, r := range rows {
		if r.run != i+1 {
			t.Errorf("row %d: run %d", i+1, r.run)
		}
		switch {
		case r.status == 200 && used < limit:
			ok++
			before := used
			used += r.total
			if r.total != r.prompt+r.completion || r.total == 0 {
				t.Errorf("run %d: total %d, prompt %d, completion %d", r.run, r.total, r.prompt, r.completion)
			}
			// A stream's headers come before its usage: what is left then
			// is the window less what tokengate holds of the run's own
			// prompt estimate, all of it or none.
			lo, hi := max(0, limit-used), max(0, limit-used)
			if streamed {
				lo, hi = max(0, limit-before-r.prompt), max(0, limit-before)
			}
			if rem, err := strconv.Atoi(r.remaining); err != nil || (rem != lo && rem != hi) {
				t.Errorf("run %d: remaining %s, want %d or %d (limit %d, %d used before, %d after)", r.run, r.remaining, lo, hi, limit, before, used)
			}
		case r.status == 429 && used >= limit:
			refused++
			if r.total != 0 {
				t.Errorf("run %d: refused but %d tokens", r.run, r.total)
			}
			// Everything was charged within this test's few seconds, so
			// the window frees up 60 s after the first charge, give or
			// take the second it fell in.
			ra, err := strconv.Atoi(strings.TrimSuffix(r.retryAfter, "s"))
			if err != nil || ra > 60 || float64(ra) < 59-elapsed.Seconds() {
				t.Errorf("run %d: retry-after %q, want about 60s (the lab took %v)", r.run, r.retryAfter, elapsed)
			}
		default:
			t.Errorf("run %d: status %d with %d tokens used before it, want 200 below the %d-token limit, 429 from it on", r.run, r.status, used, limit)
		}
	}
	// The lab's runs cost about a hundred tokens each: six fit, the sixth
	// let through with the limit not yet reached.
	if ok != 6 || refused != 4 {
		t.Errorf("%d × 200 using %d tokens, %d × 429: want 6 × 200 then 4 × 429", ok, used, refused)
	}

	// The table's totals against tokengate's metrics.
	var sum usage
	for _, r := range rows {
		sum.Prompt += r.prompt
		sum.Completion += r.completion
		sum.Total += r.total
	}
	if totals != sum {
		t.Errorf("totals row %+v, rows add up to %+v", totals, sum)
	}
	m := regexp.MustCompile(`tokengate charged .*: prompt (\d+), completion (\d+), total (\d+) tokens; decisions: (.*)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatal("no line saying what tokengate charged")
	}
	if got := (usage{Prompt: atoi(t, m[1]), Completion: atoi(t, m[2]), Total: atoi(t, m[3])}); got != totals {
		t.Errorf("tokengate charged %+v, the table's totals are %+v", got, totals)
	}
	if want := "allowed " + strconv.Itoa(ok) + ", rate_limited " + strconv.Itoa(refused); m[4] != want {
		t.Errorf("decisions %q, want %q", m[4], want)
	}

	checkPNG(t, out)
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 675 {
		t.Errorf("%s is %d × %d pixels, want 1200 × 675", path, b.Dx(), b.Dy())
	}
}

// parseTable reads the run rows and the totals row of the printed table.
func parseTable(t *testing.T, out string) (rows []tableRow, totals usage) {
	t.Helper()
	sawTotals := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "total":
			totals = usage{Prompt: atoi(t, f[1]), Completion: atoi(t, f[2]), Total: atoi(t, f[3])}
			sawTotals = true
		case len(f) == 8 && f[0] != "run":
			if _, err := strconv.Atoi(f[0]); err != nil {
				continue
			}
			rows = append(rows, tableRow{
				run: atoi(t, f[0]), status: atoi(t, f[1]), prompt: atoi(t, f[2]), completion: atoi(t, f[3]), total: atoi(t, f[4]),
				remaining: f[5], retryAfter: f[6],
			})
		}
	}
	if !sawTotals {
		t.Fatalf("no totals row in:\n%s", out)
	}
	return rows, totals
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}
