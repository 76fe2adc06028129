package load

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// gpt4o is 2.50 and 10.00 per million tokens.
var gpt4o = Price{Input: 2_500_000, Output: 10_000_000}

func TestPriceCost(t *testing.T) {
	tests := []struct {
		name string
		p    Price
		r    Record
		want int64
	}{
		{"exact", gpt4o, Record{Prompt: 400, Completion: 100}, 1000 + 1000},
		// 27 × 2.5 = 67.5 and 51 × 10 = 510: the input part rounds up
		// on its own.
		{"input rounds up", gpt4o, Record{Prompt: 27, Completion: 51}, 68 + 510},
		// Each part rounds up apart: 1 token at 0.5 and 1 at 0.5 is
		// 1 + 1, not ⌈1.0⌉ = 1.
		{"parts round apart", Price{Input: 500_000, Output: 500_000}, Record{Prompt: 1, Completion: 1}, 2},
		{"no usage", gpt4o, Record{}, 0},
		{"free", Price{}, Record{Prompt: 1000, Completion: 1000}, 0},
		{"total is not priced", gpt4o, Record{Prompt: 10, Completion: 0, Total: 1000}, 25},
	}
	for _, tt := range tests {
		if got := tt.p.Cost(tt.r); got != tt.want {
			t.Errorf("%s: Cost(%+v) = %d, want %d", tt.name, tt.r, got, tt.want)
		}
	}
	if n := int64(math.MaxInt64 / 2); perMillionUp(n, 1000) != (n+999)/1000 {
		t.Errorf("perMillionUp of a product past int64 = %d, want %d", perMillionUp(n, 1000), (n+999)/1000)
	}
}

// TestWorstCostMatchesBruteForce prices every record and sums every
// 60-second window afresh.
func TestWorstCostMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		res := Result{Records: make([]Record, rng.IntN(40))}
		var total int64
		for i := range res.Records {
			r := rec(time.Duration(rng.Int64N(int64(300*time.Second))), 0)
			r.Prompt, r.Completion = 1+rng.Int64N(1000), 1+rng.Int64N(1000)
			r.Total = r.Prompt + r.Completion
			res.Records[i] = r
			total += (r.Prompt*gpt4o.Input+999_999)/1_000_000 + (r.Completion*gpt4o.Output+999_999)/1_000_000
		}
		var want int64
		for from := int64(-60); from <= 300; from++ {
			var sum int64
			for _, r := range res.Records {
				if s := r.At.Unix() - t0.Unix(); s >= from && s < from+60 {
					sum += gpt4o.Cost(r)
				}
			}
			want = max(want, sum)
		}
		if got := res.WorstCost(gpt4o); got.Tokens != want {
			t.Fatalf("trial %d (%d records): WorstCost = %d, brute force %d", trial, len(res.Records), got.Tokens, want)
		}
		if got := res.Cost(gpt4o); got != total {
			t.Fatalf("trial %d: Cost = %d, want %d", trial, got, total)
		}
	}
}

func TestReportCost(t *testing.T) {
	r := Result{Admitted: 83, RateLimited: 11437, Records: []Record{rec(0, 0), rec(59*time.Second, 0)}}
	r.Records[0].Prompt, r.Records[0].Completion = 27, 51   // 68 + 510
	r.Records[1].Prompt, r.Records[1].Completion = 607, 800 // 1,518 + 8,000
	want := "worst 60s window 10,096 / 10,000 micro-units (101.0 %), admitted 83, refused 11,437"
	if got := r.ReportCost(gpt4o, 10000); got != want {
		t.Errorf("ReportCost = %q\nwant         %q", got, want)
	}
}
