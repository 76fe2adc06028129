package counter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// encodingV1 leads every window written to a file, so that a later layout
// can be told apart from this one instead of being misread.
//
// Version 1 is: the version byte, head as a signed varint, then for each
// non-empty bucket from the newest to the oldest, its age (head minus its
// second, 0..Buckets-1, strictly increasing) and its count, both unsigned
// varints. A busy key takes tens of bytes; an idle one is never written.
// Reservations are not encoded: a request in flight does not survive the
// process that admitted it.
const encodingV1 = 1

// appendWindow appends the encoding of w to dst.
func appendWindow(dst []byte, w *Window) []byte {
	dst = append(dst, encodingV1)
	dst = binary.AppendVarint(dst, w.head)
	for age := int64(0); age < Buckets; age++ {
		if c := w.buckets[slot(w.head-age)]; c != 0 {
			dst = binary.AppendUvarint(dst, uint64(age))
			dst = binary.AppendUvarint(dst, uint64(c))
		}
	}
	return dst
}

// errTruncated is what DecodeWindow says of a value cut short.
var errTruncated = errors.New("truncated")

// DecodeWindow restores a window from its encoding, advanced to now so that
// the buckets already expired are dropped. A now before the saved head keeps
// the head: the clock went back, the tokens stay.
func DecodeWindow(b []byte, now time.Time) (Window, error) {
	var w Window
	if len(b) == 0 {
		return w, errTruncated
	}
	if b[0] != encodingV1 {
		return w, fmt.Errorf("unknown encoding version %d", b[0])
	}
	b = b[1:]
	head, k := binary.Varint(b)
	if k <= 0 {
		return w, errTruncated
	}
	b = b[k:]
	w.head = head
	prev := int64(-1)
	for len(b) > 0 {
		age, k := binary.Uvarint(b)
		if k <= 0 {
			return w, errTruncated
		}
		b = b[k:]
		count, k := binary.Uvarint(b)
		if k <= 0 {
			return w, errTruncated
		}
		b = b[k:]
		if age >= Buckets || int64(age) <= prev {
			return w, fmt.Errorf("bucket age %d out of order", age)
		}
		if count == 0 {
			return w, fmt.Errorf("empty bucket at age %d", age)
		}
		prev = int64(age)
		c := int64(min(count, maxBucket))
		w.buckets[slot(head-int64(age))] = c
		w.sum += c
	}
	sec, _ := w.clamp(now)
	w.advance(sec)
	return w, nil
}

// appendQuota appends the encoding of q: the version byte, the period, the
// period's start as a signed varint and the used count as an unsigned one.
// Reservations are not written, as with windows.
func appendQuota(dst []byte, q *Quota) []byte {
	dst = append(dst, encodingV1, byte(q.period))
	dst = binary.AppendVarint(dst, q.start)
	return binary.AppendUvarint(dst, uint64(max(q.used, 0)))
}

// DecodeQuota restores a quota from its encoding.
func DecodeQuota(b []byte) (Quota, error) {
	if len(b) < 2 {
		return Quota{}, errTruncated
	}
	if b[0] != encodingV1 {
		return Quota{}, fmt.Errorf("unknown quota encoding version %d", b[0])
	}
	q := Quota{period: limiter.Period(b[1])}
	if q.period == limiter.NoPeriod || q.period > limiter.Yearly {
		return Quota{}, fmt.Errorf("unknown quota period %d", b[1])
	}
	b = b[2:]
	start, n := binary.Varint(b)
	if n <= 0 {
		return Quota{}, errTruncated
	}
	used, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return Quota{}, errTruncated
	}
	if used > maxBucket {
		return Quota{}, fmt.Errorf("quota count %d out of range", used)
	}
	q.start, q.used = start, int64(used)
	return q, nil
}
