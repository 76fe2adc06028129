package load

import (
	"cmp"
	"slices"
	"time"
)

// WindowSpan is the limiter's sliding window: tokens charged in second s
// count until s+60.
const WindowSpan = 60 * time.Second

// Window is a span of whole seconds and the tokens charged in it (or,
// from WorstWindowOf, whatever its amount measures).
type Window struct {
	From   time.Time // first second of the window
	Tokens int64
}

// WorstWindow returns the span-long window of whole seconds, as the
// limiter's one-second buckets cut time, in which recs charged the most
// tokens. A record counts in the Unix second its fake time falls in. The
// best window always starts at a charged second, so only those are tried.
func WorstWindow(recs []Record, span time.Duration) Window {
	return WorstWindowOf(recs, span, func(r Record) int64 { return r.Total })
}

// WorstWindowOf is WorstWindow measuring each record by amount instead of
// its total tokens, such as what it cost (Price.Cost): the window's Tokens
// are then amount's unit.
func WorstWindowOf(recs []Record, span time.Duration, amount func(Record) int64) Window {
	secs := int64(span / time.Second)
	if len(recs) == 0 || secs <= 0 {
		return Window{}
	}
	type bucket struct{ sec, tokens int64 }
	bySec := map[int64]int64{}
	for _, r := range recs {
		bySec[r.At.Unix()] += amount(r)
	}
	buckets := make([]bucket, 0, len(bySec))
	for s, n := range bySec {
		buckets = append(buckets, bucket{s, n})
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return cmp.Compare(a.sec, b.sec) })

	var best Window
	var sum int64
	end := 0 // buckets[i:end] are the seconds in [buckets[i].sec, +secs)
	for i, b := range buckets {
		for end < len(buckets) && buckets[end].sec < b.sec+secs {
			sum += buckets[end].tokens
			end++
		}
		if sum > best.Tokens || i == 0 {
			best = Window{From: time.Unix(b.sec, 0).UTC(), Tokens: sum}
		}
		sum -= b.tokens
	}
	return best
}
