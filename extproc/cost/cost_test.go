package cost

import (
	"math"
	"testing"

	"github.com/tokengate/tokengate/extproc/llm"
)

// Claude Sonnet's list prices, per million tokens: input $3, cache reads
// $0.30, cache writes $3.75, output $15.
var sonnet = Price{Input: 3_000_000, CachedInput: 300_000, CacheWrite: 3_750_000, Output: 15_000_000}

func TestOf(t *testing.T) {
	tests := []struct {
		name string
		p    Price
		u    llm.Usage
		want int64
	}{
		// 1,000 uncached input ($0.003) + 1,000 output ($0.015).
		{"plain", sonnet, llm.Usage{Prompt: 1000, Completion: 1000}, 3000 + 15000},
		// 10,000 prompt of which 8,000 read from the cache and 1,000
		// written: 1,000 × 3 + 8,000 × 0.3 + 1,000 × 3.75 micro-units.
		{"cache", sonnet, llm.Usage{Prompt: 10000, CacheRead: 8000, CacheWrite: 1000, Completion: 0}, 3000 + 2400 + 3750},
		// Reasoning without a price of its own costs as output.
		{"reasoning", sonnet, llm.Usage{Completion: 100, Reasoning: 60}, 1500},
		{"reasoning priced", Price{Output: 10_000_000, Reasoning: 20_000_000}, llm.Usage{Completion: 100, Reasoning: 60}, 400 + 1200},
		// One token at $3 per million is 3 micro-units; at $0.5 per
		// million, 0.5 rounds up to 1: never free.
		{"round up", Price{Input: 500_000}, llm.Usage{Prompt: 1}, 1},
		{"nothing", sonnet, llm.Usage{}, 0},
		// Breakdowns past their whole are clamped, not negative.
		{"inconsistent", sonnet, llm.Usage{Prompt: 10, CacheRead: 50, Completion: 5, Reasoning: 9}, 3 + 75},
	}
	for _, tt := range tests {
		if got := Of(tt.p, tt.u); got != tt.want {
			t.Errorf("%s: Of = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestTokensNeverOverflow(t *testing.T) {
	if got := Tokens(math.MaxInt64, math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("Tokens(max, max) = %d, want saturation", got)
	}
	if got := Tokens(llm.MaxCount, 1_000_000_000_000); got != llm.MaxCount*1_000_000 {
		t.Errorf("Tokens(MaxCount, $1M per million) = %d", got)
	}
	if Tokens(-5, 10) != 0 || Tokens(5, -10) != 0 {
		t.Error("negative counts or prices cost something")
	}
	if got := Of(sonnet, llm.Usage{Prompt: math.MaxInt64, Completion: math.MaxInt64}); got != math.MaxInt64 {
		t.Errorf("Of(huge) = %d, want saturation", got)
	}
}

func TestReservationAndTable(t *testing.T) {
	// 2,000 estimated prompt tokens and a 1,000-token budget: 6,000 +
	// 15,000 micro-units.
	if in, out := Reservation(sonnet, 2000, 1000); in != 6000 || out != 15000 {
		t.Errorf("Reservation = %d + %d, want 6000 + 15000", in, out)
	}
	def := Price{Input: 1, Output: 2}
	tab := NewTable(map[string]Price{"Claude-Sonnet-4-5": sonnet}, &def)
	if p, ok := tab.For("claude-sonnet-4-5"); !ok || p != sonnet {
		t.Errorf("listed model: %+v %v", p, ok)
	}
	if p, ok := tab.For("unknown"); !ok || p != def {
		t.Errorf("unlisted model with a default: %+v %v", p, ok)
	}
	if _, ok := NewTable(nil, nil).For("unknown"); ok {
		t.Error("unlisted model without a default: priced")
	}
}

// FuzzOf: any usage costs at least nothing, at most saturation, and more
// tokens never cost less.
func FuzzOf(f *testing.F) {
	f.Add(int64(1000), int64(10), int64(5), int64(300), int64(20), int64(3_000_000), int64(15_000_000))
	f.Fuzz(func(t *testing.T, prompt, cached, written, completion, reasoning, in, out int64) {
		p := Price{Input: in, Output: out, CachedInput: in / 10, CacheWrite: in + in/4}
		u := llm.Usage{Prompt: prompt, CacheRead: cached, CacheWrite: written, Completion: completion, Reasoning: reasoning}
		c := Of(p, u)
		if c < 0 {
			t.Fatalf("negative cost %d", c)
		}
		more := u
		more.Completion = satAdd(max(u.Completion, 0), 1)
		if Of(p, more) < c && u.Completion >= 0 {
			t.Fatalf("one more output token costs less: %d < %d", Of(p, more), c)
		}
	})
}
