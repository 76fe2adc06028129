package boltstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/limiter"
	"github.com/tokengate/tokengate/limiter/internal/counter"
	"github.com/tokengate/tokengate/limiter/storetest"
)

const (
	s  = time.Second
	ms = time.Millisecond
)

// t0 starts a second, as most tests want; at(d) is t0+d.
var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func utc(y int, m time.Month, d, h, min, sec int) time.Time {
	return time.Date(y, m, d, h, min, sec, 0, time.UTC)
}

// TestConformance runs the store suite on a file of its own per test, with
// the suite's clock dating the flushes.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock limiter.Clock) limiter.Store {
		b, err := Open(Options{Path: filepath.Join(t.TempDir(), "conformance.db"), FlushInterval: time.Hour, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func mustReserve(t *testing.T, b *Store, key string, limit, n int64, now time.Time) {
	t.Helper()
	if _, err := b.Reserve(context.Background(), key, limiter.Limits{TokensPerMinute: limit}, n, now); err != nil {
		t.Fatalf("Reserve(%q, %d, %d): %v", key, limit, n, err)
	}
}

func mustSettle(t *testing.T, b *Store, key string, reserved, used int64, now time.Time) {
	t.Helper()
	if _, err := b.Settle(context.Background(), key, limiter.Limits{}, limiter.Hold{Tokens: reserved}, used, now); err != nil {
		t.Fatalf("Settle(%q, %d, %d): %v", key, reserved, used, err)
	}
}

func mustStatus(t *testing.T, b *Store, key string, limit int64, now time.Time) limiter.Decision {
	t.Helper()
	d, err := b.Status(context.Background(), key, limiter.Limits{TokensPerMinute: limit}, now)
	if err != nil {
		t.Fatalf("Status(%q, %d): %v", key, limit, err)
	}
	return d
}

// openBolt opens a store on path that is closed when the test ends; the
// flush interval is long unless the test wants the ticker.
func openBolt(t *testing.T, path string, clock limiter.Clock, every time.Duration) *Store {
	t.Helper()
	if every == 0 {
		every = time.Hour
	}
	b, err := Open(Options{Path: path, FlushInterval: every, Clock: clock})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func mustClose(t *testing.T, b *Store) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustFlush(t *testing.T, b *Store) {
	t.Helper()
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// inFile returns the stored record of key, read through b's open file.
func inFile(t *testing.T, b *Store, key string) []byte {
	t.Helper()
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v = append(v, tx.Bucket(countersBucket).Get([]byte(key))...)
		return nil
	})
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return v
}

func TestKeepsWindowsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "tokengate.db")
	clock := limiter.NewManualClock(at(0))
	b := openBolt(t, path, clock, 0)
	mustSettle(t, b, "a", 0, 30, at(0))
	mustSettle(t, b, "a", 0, 20, at(30*s))
	mustSettle(t, b, "b", 0, 5, at(10*s))
	mustReserve(t, b, "a", 1000, 400, at(30*s)) // in flight: not kept
	mustReserve(t, b, "c", 1000, 400, at(30*s)) // only in flight: not kept
	mustClose(t, b)                             // flushes

	tests := []struct {
		name       string
		now        time.Duration
		a, b, c    int64
		wantInFile []string
	}{
		{"same time", 30 * s, 50, 5, 0, []string{"a", "b"}},
		{"clock behind", 0, 50, 5, 0, []string{"a", "b"}},
		{"first bucket of a gone", 60 * s, 20, 5, 0, []string{"a", "b"}},
		{"b gone", 70 * s, 20, 0, 0, []string{"a"}},
		{"all gone", 90 * s, 0, 0, 0, nil},
	}
	for i, tt := range tests {
		b := openBolt(t, path, limiter.NewManualClock(at(tt.now)), 0)
		now := at(tt.now)
		for _, k := range []struct {
			key  string
			want int64
		}{{"a", tt.a}, {"b", tt.b}, {"c", tt.c}} {
			if got := mustStatus(t, b, k.key, 1000, now).Used; got != k.want {
				t.Errorf("step %d (%s): %s used %d, want %d", i, tt.name, k.key, got, k.want)
			}
		}
		var inFileKeys []string
		for _, k := range []string{"a", "b", "c"} {
			if inFile(t, b, k) != nil {
				inFileKeys = append(inFileKeys, k)
			}
		}
		if strings.Join(inFileKeys, ",") != strings.Join(tt.wantInFile, ",") {
			t.Errorf("step %d (%s): keys in file %q, want %q", i, tt.name, inFileKeys, tt.wantInFile)
		}
		mustClose(t, b)
	}
}

func TestFlushesOnTicker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokengate.db")
	b := openBolt(t, path, limiter.NewManualClock(at(0)), 10*ms)
	mustSettle(t, b, "k", 0, 42, at(0))
	deadline := time.Now().Add(5 * time.Second)
	for inFile(t, b, "k") == nil {
		if time.Now().After(deadline) {
			t.Fatal("key not in file 5s after a 10ms flush interval")
		}
		time.Sleep(time.Millisecond)
	}
	c, err := counter.DecodeRecord(inFile(t, b, "k"), at(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Used(at(0)); got != 42 {
		t.Errorf("in file: got %d tokens, want 42", got)
	}
}

func TestDeletesIdleKeys(t *testing.T) {
	clock := limiter.NewManualClock(at(0))
	b := openBolt(t, filepath.Join(t.TempDir(), "tokengate.db"), clock, 0)
	steps := []struct {
		do   func()
		want map[string]bool // in file after the flush
	}{{
		do: func() {
			mustSettle(t, b, "swept", 0, 1, at(0))
			mustSettle(t, b, "idle", 0, 1, at(5*s))
			mustSettle(t, b, "kept", 0, 1, at(30*s))
		},
		want: map[string]bool{"swept": true, "idle": true, "kept": true},
	}, {
		// Forgotten by the sweep, so deleted at the next flush.
		do:   func() { b.Sweep(at(60 * s)) },
		want: map[string]bool{"swept": false, "idle": true, "kept": true},
	}, {
		// Changed, then idle when the flush looks at it.
		do: func() {
			mustSettle(t, b, "idle", 0, 1, at(6*s))
			clock.Advance(66 * s)
		},
		want: map[string]bool{"swept": false, "idle": false, "kept": true},
	}}
	for i, st := range steps {
		st.do()
		mustFlush(t, b)
		for key, want := range st.want {
			if got := inFile(t, b, key) != nil; got != want {
				t.Errorf("step %d: %s in file: got %v, want %v", i, key, got, want)
			}
		}
	}
}

func TestFileInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "x.db")
	first := openBolt(t, path, nil, 0)
	start := time.Now()
	second, err := Open(Options{Path: path})
	elapsed := time.Since(start)
	if err == nil {
		_ = second.Close()
		t.Fatal("second Open on a held file succeeded")
	}
	if !errors.Is(err, ErrFileInUse) {
		t.Errorf("got %v, want an error wrapping ErrFileInUse", err)
	}
	want := "limiter: bbolt file " + path + " is in use by another process (another tokengate running?)"
	if err.Error() != want {
		t.Errorf("message:\n got %q\nwant %q", err.Error(), want)
	}
	if elapsed >= 2*time.Second {
		t.Errorf("second Open took %v, want < 2s", elapsed)
	}
	// Once the first lets go, the file opens again.
	mustClose(t, first)
	openBolt(t, path, nil, 0)
}

func TestRefusesDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokengate.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket(windowsBucket)
		if err != nil {
			return err
		}
		return bk.Put([]byte("k"), []byte{9})
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Path: path})
	want := "limiter: restore from bbolt file " + path + `: key "k": unknown encoding version 9`
	if err == nil || err.Error() != want {
		t.Errorf("got error %v, want %q", err, want)
	}
}

func TestCloseIsFinal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokengate.db")
	b := openBolt(t, path, nil, 0)
	mustClose(t, b)
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Flush(); err == nil {
		t.Error("Flush after Close: got no error")
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("file: %v", err)
	}
}

// TestQuotaSurvivesCrash settles a quota and, without a flush or a
// close, copies the file as a killed process would leave it.
func TestQuotaSurvivesCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	now := utc(2026, 5, 5, 10, 0, 0)
	clock := limiter.NewManualClock(now)
	b := openBolt(t, path, clock, time.Hour) // no flush will run
	lim := limiter.Limits{TokensPerMinute: 1000, Quota: 5000, Period: limiter.Monthly}
	for i := 0; i < 3; i++ {
		d, _ := b.Reserve(ctx, "k", lim, 100, now)
		if _, err := b.Settle(ctx, "k", lim, d.Hold, 300, now); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustClose(t, b)
	clock.Advance(10 * time.Minute)
	r := openBolt(t, crashed, clock, time.Hour)
	defer mustClose(t, r)
	d, _ := r.Status(ctx, "k", lim, clock.Now())
	if d.Quota.Used != 900 {
		t.Errorf("quota after crash: used %d, want 900 (every settle persisted)", d.Quota.Used)
	}
	if d.Used != 0 {
		t.Errorf("window after crash and 10 minutes: used %d, want 0", d.Used)
	}
	// A month later the quota is gone from the file too.
	mustClose(t, r)
	clock2 := limiter.NewManualClock(utc(2026, 6, 1, 0, 0, 1))
	r2 := openBolt(t, crashed, clock2, time.Hour)
	if d, _ := r2.Status(ctx, "k", lim, clock2.Now()); d.Quota.Used != 0 {
		t.Errorf("next month: used %d, want 0", d.Quota.Used)
	}
	mustClose(t, r2)
}
