package counter

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// charges builds a window from (offset from t0, tokens) pairs.
func charges(pairs ...any) Window {
	var w Window
	for i := 0; i < len(pairs); i += 2 {
		w.settle(0, int64(pairs[i+1].(int)), at(pairs[i].(time.Duration)))
	}
	return w
}

func TestEncodingRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		w       Window
		now     time.Time
		wantLen int
		want    limiter.Decision // status at now, limit 100
	}{{
		name:    "empty, never advanced",
		now:     at(0),
		wantLen: 1 + 1,
		want:    ok(0, 100, 0),
	}, {
		name:    "three buckets",
		w:       charges(0*s, 10, 30*s, 20, 59*s, 30),
		now:     at(59 * s),
		wantLen: 1 + 5 + 3*2,
		want:    ok(60, 40, 60*s),
	}, {
		name: "expired buckets dropped",
		w:    charges(0*s, 10, 30*s, 20, 59*s, 30),
		now:  at(60 * s),
		// Written at head t0+59, read a second later.
		wantLen: 1 + 5 + 3*2,
		want:    ok(50, 50, 59*s),
	}, {
		name:    "all expired",
		w:       charges(0*s, 10, 30*s, 20),
		now:     at(90 * s),
		wantLen: 1 + 5 + 2*2,
		want:    ok(0, 100, 0),
	}, {
		name:    "clock behind the head",
		w:       charges(10*s, 10),
		now:     at(0),
		wantLen: 1 + 5 + 2,
		want:    ok(10, 90, 60*s),
	}, {
		name:    "large counts",
		w:       charges(0*s, 1<<40),
		now:     at(0),
		wantLen: 1 + 5 + 1 + 6,
		want:    no(1<<40, 0, 60*s, 60*s),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.w
			w.reserved = 7 // never written
			b := appendWindow(nil, &w)
			if len(b) != tt.wantLen {
				t.Errorf("encoding is %d bytes, want %d", len(b), tt.wantLen)
			}
			got, err := DecodeWindow(b, tt.now)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.reserved != 0 {
				t.Errorf("reserved: got %d, want 0", got.reserved)
			}
			want := tt.want
			want.Limit = 100
			if d := got.status(100, tt.now); d != want {
				t.Errorf("status:\n got %+v\nwant %+v", d, want)
			}
		})
	}
}

func TestDecodeWindowErrors(t *testing.T) {
	head := binary.AppendVarint(nil, t0.Unix())
	v1 := func(rest ...byte) []byte {
		return append(append([]byte{encodingV1}, head...), rest...)
	}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"unknown version", []byte{2, 0}, "unknown encoding version 2"},
		{"no head", []byte{encodingV1}, "truncated"},
		{"age without count", v1(0), "truncated"},
		{"age too old", v1(60, 1), "bucket age 60 out of order"},
		{"ages out of order", v1(3, 1, 2, 1), "bucket age 2 out of order"},
		{"age twice", v1(3, 1, 3, 1), "bucket age 3 out of order"},
		{"zero count", v1(0, 0), "empty bucket at age 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeWindow(tt.b, t0)
			if err == nil || err.Error() != tt.want {
				t.Errorf("got error %v, want %q", err, tt.want)
			}
		})
	}
}
