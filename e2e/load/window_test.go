package load

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// t0 is a whole second; records are placed relative to it.
var t0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

func rec(at time.Duration, tokens int64) Record { return Record{At: t0.Add(at), Total: tokens} }

func TestWorstWindow(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		recs []Record
		want Window
	}{
		{"none", nil, Window{}},
		{"one", []Record{rec(5*s, 100)}, Window{t0.Add(5 * s), 100}},
		{"same second adds", []Record{rec(0, 100), rec(900*time.Millisecond, 50)}, Window{t0, 150}},
		{"59 s apart share a window", []Record{rec(0, 100), rec(59*s, 200)}, Window{t0, 300}},
		{"60 s apart do not", []Record{rec(0, 100), rec(60*s, 200)}, Window{t0.Add(60 * s), 200}},
		// Buckets are whole seconds: 0.9 s and 60.1 s are seconds 0
		// and 60, 59.2 s apart in time but in no common window.
		{"seconds, not durations", []Record{rec(900*time.Millisecond, 100), rec(60100*time.Millisecond, 100)}, Window{t0, 100}},
		// 0.1 s and 59.9 s are seconds 0 and 59: one window.
		{"fractions in the same minute", []Record{rec(100*time.Millisecond, 100), rec(59900*time.Millisecond, 100)}, Window{t0, 200}},
		{"unsorted input", []Record{rec(70*s, 10), rec(0, 100), rec(30*s, 100), rec(65*s, 10)}, Window{t0, 200}},
		{"the worst is later", []Record{rec(0, 300), rec(61*s, 200), rec(100*s, 200), rec(121*s, 5)}, Window{t0.Add(61 * s), 400}},
		{"a window ending at the last second", []Record{rec(0, 10), rec(50*s, 10), rec(100*s, 10), rec(109*s, 10)}, Window{t0.Add(50 * s), 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := WorstWindow(tt.recs, WindowSpan)
			if !got.From.Equal(tt.want.From) || got.Tokens != tt.want.Tokens {
				t.Errorf("WorstWindow = %d tokens from %v, want %d from %v", got.Tokens, got.From, tt.want.Tokens, tt.want.From)
			}
		})
	}
}

// TestWorstWindowMatchesBruteForce compares the sliding sum with summing
// every 60-second window afresh.
func TestWorstWindowMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		recs := make([]Record, rng.IntN(40))
		for i := range recs {
			recs[i] = rec(time.Duration(rng.Int64N(int64(300*time.Second))), 1+rng.Int64N(1000))
		}
		var want int64
		for from := int64(-60); from <= 300; from++ {
			var sum int64
			for _, r := range recs {
				if s := r.At.Unix() - t0.Unix(); s >= from && s < from+60 {
					sum += r.Total
				}
			}
			want = max(want, sum)
		}
		if got := WorstWindow(recs, WindowSpan); got.Tokens != want {
			t.Fatalf("trial %d (%d records): WorstWindow = %d, brute force %d", trial, len(recs), got.Tokens, want)
		}
	}
}

func TestGroup(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 19874: "19,874", 1234567: "1,234,567", -20000: "-20,000"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestReport(t *testing.T) {
	r := Result{Admitted: 1234, RateLimited: 10000, QuotaExceeded: 2, Worst: Window{t0, 19874}}
	want := "worst 60s window 19,874 / 20,000 tokens (99.4 %), admitted 1,234, refused 10,002"
	if got := r.Report(20000); got != want {
		t.Errorf("Report = %q\nwant     %q", got, want)
	}
	if s := fmt.Sprint(&r); s == "" {
		t.Error("String is empty")
	}
}
