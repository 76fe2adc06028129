package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
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

// TestLocal runs `tokenlab local` as a user would and checks what it
// printed and drew against tokengate's own account and the window's
// arithmetic.
func TestLocal(t *testing.T) {
	const limit = 500
	out := filepath.Join(t.TempDir(), "lab.png")
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := run(context.Background(), []string{"local", "--out", out}, &stdout, &stderr)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("tokenlab local: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	t.Logf("stdout:\n%s", &stdout)
	rows, totals := parseTable(t, stdout.String())
	if len(rows) != 10 {
		t.Fatalf("%d table rows, want 10", len(rows))
	}

	// The first runs fit in the budget, every later one is refused, and
	// each 200 says how much is left after its own tokens.
	used, ok, refused := 0, 0, 0
	for i, r := range rows {
		if r.run != i+1 {
			t.Errorf("row %d: run %d", i+1, r.run)
		}
		switch r.status {
		case 200:
			if refused > 0 {
				t.Errorf("run %d: 200 after a 429", r.run)
			}
			ok++
			used += r.total
			if r.total != r.prompt+r.completion || r.total == 0 {
				t.Errorf("run %d: total %d, prompt %d, completion %d", r.run, r.total, r.prompt, r.completion)
			}
			if want := strconv.Itoa(max(0, limit-used)); r.remaining != want {
				t.Errorf("run %d: remaining %s, want %s (limit %d - %d used)", r.run, r.remaining, want, limit, used)
			}
		case 429:
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
			t.Errorf("run %d: status %d", r.run, r.status)
		}
	}
	if ok == 0 || refused == 0 || used < limit {
		t.Errorf("%d × 200 using %d tokens, %d × 429: want 200s until the %d-token limit is passed, then 429s", ok, used, refused, limit)
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
