package bpe

import "sync"

// The merge is tiktoken's: start from single bytes and repeatedly join the
// adjacent pair whose bytes have the lowest rank, the leftmost on a tie,
// until no adjacent pair is a token. Short pieces (nearly all of them) scan
// a small array of parts for the minimum, as the reference does; long ones
// (a run of CJK or Thai, of spaces, of dashes) keep the pairs in a heap, so
// a piece of n bytes costs O(n log n) rather than O(n²). Both give the
// same merges: the heap is ordered by (rank, start), the scan's order.

const (
	noRank  = ^uint32(0)
	heapMin = 32 // pieces longer than this merge with the heap
	keepMax = 1 << 16
)

// part is a piece's boundary: where a part starts and the rank of joining
// it with the next part (noRank if that is not a token).
type part struct {
	start int32
	rank  uint32
}

// scratch holds the buffers of one merge, reused across pieces and calls.
type scratch struct {
	parts []part
	next  []int32
	prev  []int32
	rank  []uint32
	heap  []uint64
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// putScratch keeps the buffers unless a huge piece grew them.
func putScratch(sc *scratch) {
	if cap(sc.parts) <= keepMax && cap(sc.next) <= keepMax && cap(sc.heap) <= keepMax {
		scratchPool.Put(sc)
	}
}

func (v *vocab) rankOr(b string) uint32 {
	if len(b) > v.maxLen {
		return noRank
	}
	if r, ok := v.rank(b); ok {
		return r
	}
	return noRank
}

// merge splits piece (two bytes or more) into tokens and returns their
// boundaries: token k is piece[parts[k].start:parts[k+1].start]. The slice
// lives in sc until the next merge.
func (v *vocab) merge(piece string, sc *scratch) []part {
	if len(piece) > heapMin {
		return v.mergeHeap(piece, sc)
	}
	return v.mergeLinear(piece, sc)
}

// mergeLinear is merge for short pieces, the reference's loop without its
// allocations: parts live in sc, and removing one shifts the rest.
func (v *vocab) mergeLinear(piece string, sc *scratch) []part {
	n := len(piece)
	parts := sc.parts[:0]
	for i := 0; i <= n; i++ {
		parts = append(parts, part{int32(i), noRank})
	}
	for i := 0; i+2 <= n; i++ {
		parts[i].rank = v.rankOr(piece[i : i+2])
	}
	for {
		minRank, i := noRank, -1
		for k := 0; k < len(parts)-1; k++ {
			if parts[k].rank < minRank {
				minRank, i = parts[k].rank, k
			}
		}
		if i < 0 {
			break
		}
		// Join parts i and i+1; re-rank i with its new next, and i-1.
		if i+3 < len(parts) {
			parts[i].rank = v.rankOr(piece[parts[i].start:parts[i+3].start])
		} else {
			parts[i].rank = noRank
		}
		if i > 0 {
			parts[i-1].rank = v.rankOr(piece[parts[i-1].start:parts[i+2].start])
		}
		parts = append(parts[:i+1], parts[i+2:]...)
	}
	sc.parts = parts
	return parts
}

// mergeHeap is merge for long pieces. Parts are a doubly linked list
// indexed by their start byte; rank[i] is the rank of joining part i with
// the next one, and the heap holds rank<<32 | i for every rank set: its
// minimum is the lowest rank, leftmost on a tie. Entries whose part has
// since been re-ranked or joined are stale and skipped.
func (v *vocab) mergeHeap(piece string, sc *scratch) []part {
	n := len(piece)
	next, prev, rank := grow(sc.next, n+1), grow(sc.prev, n+1), grow(sc.rank, n+1)
	h := sc.heap[:0]
	for i := 0; i <= n; i++ {
		next[i], prev[i], rank[i] = int32(i+1), int32(i-1), noRank
	}
	for i := 0; i+2 <= n; i++ {
		if r := v.rankOr(piece[i : i+2]); r != noRank {
			rank[i] = r
			h = append(h, uint64(r)<<32|uint64(i))
		}
	}
	for k := (len(h) - 2) / 4; k >= 0; k-- {
		down(h, k)
	}
	for len(h) > 0 {
		top := h[0]
		h[0] = h[len(h)-1]
		h = h[:len(h)-1]
		down(h, 0)
		r, i := uint32(top>>32), int32(uint32(top))
		if rank[i] != r {
			continue // stale: i was re-ranked or joined into its previous part
		}
		j := next[i]
		nj := next[j]
		next[i] = nj
		prev[nj] = i
		rank[j] = noRank // j is gone: its heap entries are stale
		rank[i] = noRank
		if int(nj) < n {
			rank[i] = v.rankOr(piece[i:next[nj]])
		}
		if rank[i] != noRank {
			h = push(h, uint64(rank[i])<<32|uint64(i))
		}
		if i > 0 {
			p := prev[i]
			rank[p] = v.rankOr(piece[p:nj])
			if rank[p] != noRank {
				h = push(h, uint64(rank[p])<<32|uint64(p))
			}
		}
	}
	parts := sc.parts[:0]
	for i := int32(0); int(i) < n; i = next[i] {
		parts = append(parts, part{start: i, rank: noRank})
	}
	parts = append(parts, part{start: int32(n), rank: noRank})
	sc.parts, sc.next, sc.prev, sc.rank, sc.heap = parts, next, prev, rank, h
	return parts
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// push adds x to the heap h. The heap is 4-ary: a node's children share a
// cache line, and half a million pairs are ten levels deep, not twenty.
func push(h []uint64, x uint64) []uint64 {
	h = append(h, x)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 4
		if h[p] <= h[i] {
			break
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
	return h
}

// down restores the heap below i.
func down(h []uint64, i int) {
	if i >= len(h) {
		return
	}
	x := h[i]
	for {
		c := 4*i + 1
		if c >= len(h) {
			break
		}
		m := c
		for k := c + 1; k < min(c+4, len(h)); k++ {
			if h[k] < h[m] {
				m = k
			}
		}
		if x <= h[m] {
			break
		}
		h[i] = h[m]
		i = m
	}
	h[i] = x
}
