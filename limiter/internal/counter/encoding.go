package counter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
		if prev < 0 {
			w.age = int32(age) // ages grow: the first is the newest
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

// encodingV2 leads a record: every limit of one key, as a file keeps it
// since Budgets.
//
// Version 2 is: the version byte, the number of limits as an unsigned
// varint, then for each limit its name (length as an unsigned varint,
// then the bytes) and its kind: 'w' for a window, followed by its span in
// milliseconds (unsigned), its head bucket (signed), the number of
// non-empty buckets and, for each from the newest to the oldest, its age
// (head minus its bucket, 0..Buckets-1, strictly increasing) and its
// count, all varints; or 'q' for a quota, followed by its period byte,
// its period's start (a signed Unix second) and its used count
// (unsigned). Limits with nothing to keep are left out, and so are
// reservations, as in version 1.
const encodingV2 = 2

const (
	kindWindow = 'w'
	kindQuota  = 'q'
)

// AppendRecord appends the encoding of c to dst; ok is false, and nothing
// appended, when no limit of c has anything worth keeping at now.
func (c *Counter) AppendRecord(dst []byte, now time.Time) (_ []byte, ok bool) {
	var keep [limiter.MaxLimits * 2]int // states to write; more are rare
	idx := keep[:0]
	for i := range c.states {
		if c.states[i].worthKeeping(now) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return dst, false
	}
	dst = append(dst, encodingV2)
	dst = binary.AppendUvarint(dst, uint64(len(idx)))
	for _, i := range idx {
		st := &c.states[i]
		dst = binary.AppendUvarint(dst, uint64(len(st.name)))
		dst = append(dst, st.name...)
		if w := st.win; w != nil {
			dst = append(dst, kindWindow)
			dst = binary.AppendUvarint(dst, uint64(w.spanMs()))
			dst = binary.AppendVarint(dst, w.head)
			n := 0
			for _, c := range w.buckets {
				if c != 0 {
					n++
				}
			}
			dst = binary.AppendUvarint(dst, uint64(n))
			for age := int64(0); age < Buckets; age++ {
				if c := w.buckets[slot(w.head-age)]; c != 0 {
					dst = binary.AppendUvarint(dst, uint64(age))
					dst = binary.AppendUvarint(dst, uint64(c))
				}
			}
			continue
		}
		q := st.quota
		dst = append(dst, kindQuota, byte(q.period))
		dst = binary.AppendVarint(dst, q.start)
		dst = binary.AppendUvarint(dst, uint64(max(q.used, 0)))
	}
	return dst, true
}

// worthKeeping reports whether a file must keep st: charges still in its
// window, or a count in a period still running at now.
func (st *state) worthKeeping(now time.Time) bool {
	if w := st.win; w != nil {
		i, _ := w.clamp(now)
		return w.charged(i) > 0
	}
	q := st.quota
	if q == nil || q.used <= 0 {
		return false
	}
	_, end := q.period.Bounds(time.Unix(q.start, 0))
	return now.Before(end)
}

// DecodeRecord restores a counter from its encoding, each window advanced
// to now and the limits with nothing left at now dropped.
func DecodeRecord(b []byte, now time.Time) (Counter, error) {
	var c Counter
	if len(b) == 0 {
		return c, errTruncated
	}
	if b[0] != encodingV2 {
		return c, fmt.Errorf("unknown record version %d", b[0])
	}
	r := reader{b: b[1:]}
	n := r.uvarint()
	if r.err == nil && n > limiter.MaxLimits*4 {
		return c, fmt.Errorf("%d limits in a record", n)
	}
	var seen []string
	for k := uint64(0); k < n && r.err == nil; k++ {
		name := string(r.bytes(int(min(r.uvarint(), limiter.MaxNameLen+1))))
		if r.err != nil {
			break
		}
		if len(name) == 0 || len(name) > limiter.MaxNameLen {
			return c, fmt.Errorf("limit %d: name of %d bytes", k, len(name))
		}
		if slices.Contains(seen, name) {
			return c, fmt.Errorf("limit %q twice", name)
		}
		seen = append(seen, name)
		st := state{name: name}
		switch kind := r.byte(); {
		case r.err != nil:
		case kind == kindWindow:
			w, err := r.window()
			if err != nil {
				return c, fmt.Errorf("limit %q: %w", name, err)
			}
			i, _ := w.clamp(now)
			w.advance(i)
			st.win = &w
		case kind == kindQuota:
			q, err := r.quota()
			if err != nil {
				return c, fmt.Errorf("limit %q: %w", name, err)
			}
			st.quota = &q
		default:
			return c, fmt.Errorf("limit %q: unknown kind %d", name, kind)
		}
		if r.err == nil && !st.idle(now) {
			c.states = append(c.states, st)
		}
	}
	if r.err != nil {
		return c, r.err
	}
	if len(r.b) != 0 {
		return c, fmt.Errorf("%d bytes after the last limit", len(r.b))
	}
	return c, nil
}

// reader reads varints off a record, remembering the first failure.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Varint(r.b)
	if k <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = errTruncated
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) window() (Window, error) {
	spanMs := r.uvarint()
	head := r.varint()
	n := r.uvarint()
	if r.err != nil {
		return Window{}, r.err
	}
	span := time.Duration(spanMs) * time.Millisecond
	if spanMs > uint64(limiter.MaxWindow/time.Millisecond) || span < limiter.MinWindow {
		return Window{}, fmt.Errorf("window of %d ms", spanMs)
	}
	if n > Buckets {
		return Window{}, fmt.Errorf("%d buckets", n)
	}
	w := NewWindow(span)
	w.head = head
	prev := int64(-1)
	for k := uint64(0); k < n; k++ {
		age, count := r.uvarint(), r.uvarint()
		if r.err != nil {
			return Window{}, r.err
		}
		if age >= Buckets || int64(age) <= prev {
			return Window{}, fmt.Errorf("bucket age %d out of order", age)
		}
		if count == 0 {
			return Window{}, fmt.Errorf("empty bucket at age %d", age)
		}
		if prev < 0 {
			w.age = int32(age) // ages grow: the first is the newest
		}
		prev = int64(age)
		c := int64(min(count, maxBucket))
		w.buckets[slot(head-int64(age))] = c
		w.sum += c
	}
	return w, nil
}

func (r *reader) quota() (Quota, error) {
	p := limiter.Period(r.byte())
	start := r.varint()
	used := r.uvarint()
	if r.err != nil {
		return Quota{}, r.err
	}
	if p == limiter.NoPeriod || p > limiter.Yearly {
		return Quota{}, fmt.Errorf("unknown quota period %d", p)
	}
	if used > maxBucket {
		return Quota{}, fmt.Errorf("quota count %d out of range", used)
	}
	return Quota{period: p, start: start, used: int64(used)}, nil
}
