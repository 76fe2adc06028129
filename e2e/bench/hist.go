package main

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is cut into
// 2^subBits buckets, so a recorded value is known to within 1/128 (0.8 %),
// well under the run-to-run noise of a shared machine, while a histogram
// stays a few tens of KB however many samples it takes. That bounds the
// tool's memory on long runs and lets workers merge cheaply.
const subBits = 7

const (
	subCount = 1 << subBits
	// maxExp covers up to 2^48 ns (about 3 days): anything longer is
	// clamped into the last bucket.
	maxExp   = 48 - subBits
	nBuckets = (maxExp + 2) * subCount
)

// hist is a log-linear latency histogram in nanoseconds, exact below
// 128 ns and within 0.8 % above. The count, sum, min and max are exact.
type hist struct {
	counts   []uint64
	n        uint64
	sum      float64
	min, max int64
}

func newHist() *hist { return &hist{counts: make([]uint64, nBuckets), min: math.MaxInt64} }

// bucketOf maps v ≥ 0 to its bucket: values below 2^subBits have one bucket
// each; above, a bucket is 1/128 of the value's power of two.
func bucketOf(v int64) int {
	if v < subCount {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v >> e is in [128, 256)
	if e > maxExp {
		return nBuckets - 1
	}
	return (e+1)*subCount + int(uint64(v)>>e) - subCount
}

// bucketRange is the [lo, hi] of values bucket i holds.
func bucketRange(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	e := i/subCount - 1
	m := int64(i%subCount + subCount)
	return m << e, (m+1)<<e - 1
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the value under which a fraction q of the samples lie,
// by the nearest-rank rule (the ⌈q·n⌉-th smallest sample), as the middle
// of that sample's bucket, clamped to the exact min and max. 0 when empty.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			mid := lo + (hi-lo)/2
			return time.Duration(min(max(mid, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}
