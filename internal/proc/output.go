package proc

import (
	"bytes"
	"sync"
)

// output keeps what a child writes to one stream and hands each whole
// line to onLine until onLine returns true (the ready line was seen).
type output struct {
	keep   int // bytes kept; 0 keeps all
	onLine func(line string) bool

	mu      sync.Mutex
	kept    []byte
	pending []byte // the line being written, while onLine waits for one
	done    bool
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.kept = append(o.kept, b...)
	if o.keep > 0 && len(o.kept) > 2*o.keep {
		// Trimmed in bulk, so a long run copies each byte about once.
		o.kept = append(o.kept[:0], o.kept[len(o.kept)-o.keep:]...)
	}
	if o.onLine == nil || o.done {
		return len(b), nil
	}
	o.pending = append(o.pending, b...)
	for {
		i := bytes.IndexByte(o.pending, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(o.pending[:i])
		o.pending = o.pending[i+1:]
		if o.onLine(line) {
			o.done, o.pending = true, nil
			return len(b), nil
		}
	}
}

// String returns what is kept: the last keep bytes, or all.
func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.keep > 0 && len(o.kept) > o.keep {
		return string(o.kept[len(o.kept)-o.keep:])
	}
	return string(o.kept)
}
