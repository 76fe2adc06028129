package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsTileTheLine(t *testing.T) {
	// Every bucket starts where the previous one ended, and every value
	// lands in the bucket whose range holds it.
	var next int64
	for i := range nBuckets - 1 {
		lo, hi := bucketRange(i)
		if lo != next || hi < lo {
			t.Fatalf("bucket %d: [%d, %d], want it to start at %d", i, lo, hi, next)
		}
		for _, v := range []int64{lo, hi, lo + (hi-lo)/2} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		next = hi + 1
	}
}

func TestQuantileSmallExact(t *testing.T) {
	// Below 128 ns buckets are exact, so nearest-rank is checkable by hand.
	h := newHist()
	for v := 1; v <= 100; v++ {
		h.record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {0.999, 100}, {0.01, 1}, {0, 1}, {1, 100}} {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := h.mean(); got != 50 { // 50.5 truncated
		t.Errorf("mean = %v, want 50", got)
	}
}

func TestQuantileWithinPrecision(t *testing.T) {
	// Against a sorted copy of log-normal-ish latencies: every quantile
	// within the histogram's 1/128 relative precision.
	rng := rand.New(rand.NewPCG(1, 2))
	var all []int64
	h := newHist()
	for range 200_000 {
		v := int64(100_000 * (1 + rng.ExpFloat64()*rng.ExpFloat64()))
		all = append(all, v)
		h.record(time.Duration(v))
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		rank := int(float64(len(all))*q+0.999999) - 1
		want := float64(all[rank])
		got := float64(h.quantile(q))
		if d := (got - want) / want; d > 1.0/128 || d < -1.0/128 {
			t.Errorf("quantile(%v) = %.0f, exact %.0f: off by %.2f%%", q, got, want, 100*d)
		}
	}
}

func TestMergeEqualsOneHistogram(t *testing.T) {
	a, b, all := newHist(), newHist(), newHist()
	for v := range 10_000 {
		d := time.Duration(v * 37)
		all.record(d)
		if v%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(b)
	if a.n != all.n || a.min != all.min || a.max != all.max || a.quantile(0.99) != all.quantile(0.99) {
		t.Errorf("merged: n %d min %d max %d p99 %v; one histogram: n %d min %d max %d p99 %v",
			a.n, a.min, a.max, a.quantile(0.99), all.n, all.min, all.max, all.quantile(0.99))
	}
}

func TestEmptyAndHuge(t *testing.T) {
	h := newHist()
	if h.quantile(0.5) != 0 || h.mean() != 0 {
		t.Error("an empty histogram should answer 0")
	}
	h.record(1000 * time.Hour) // past the last bucket: clamped, not a panic
	if got := h.quantile(0.5); got != 1000*time.Hour {
		t.Errorf("quantile of one huge sample = %v, want it clamped to the exact max", got)
	}
}
