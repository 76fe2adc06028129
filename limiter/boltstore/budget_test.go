package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/limiter"
)

// writeOldFile writes a file as tokengate wrote it before Budgets: a
// windows bucket and a quotas bucket, each key's value in encoding 1.
func writeOldFile(t *testing.T, path string, windows, quotas map[string][]byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for name, vals := range map[string]map[string][]byte{"windows": windows, "quotas": quotas} {
			bk, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			for k, v := range vals {
				if err := bk.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
}

// oldWindow is a window in encoding 1: the version, the head second, then
// (age, tokens) pairs from the newest.
func oldWindow(head time.Time, pairs ...uint64) []byte {
	b := binary.AppendVarint([]byte{1}, head.Unix())
	for _, p := range pairs {
		b = binary.AppendUvarint(b, p)
	}
	return b
}

// oldQuota is a quota in encoding 1: the version, the period, its start
// and the tokens used.
func oldQuota(p limiter.Period, start time.Time, used uint64) []byte {
	b := binary.AppendVarint([]byte{1, byte(p)}, start.Unix())
	return binary.AppendUvarint(b, used)
}

// TestMigratesFileBeforeBudgets opens a file written before Budgets: its
// windows and quotas become the records of their keys, under the names
// Limits.Budget() gives them, in the open's transaction; the old buckets
// are gone, and what had expired is not carried over.
func TestMigratesFileBeforeBudgets(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	now := utc(2026, 5, 5, 10, 0, 30)
	writeOldFile(t, path, map[string][]byte{
		"both":     oldWindow(now.Add(-10*s), 0, 40, 5, 20), // 40 at 10:00:20, 20 at 10:00:15
		"window":   oldWindow(now.Add(-1*s), 0, 7),
		"expired":  oldWindow(now.Add(-2*time.Minute), 0, 9),
		"quotaold": oldWindow(now.Add(-90*s), 0, 1),
	}, map[string][]byte{
		"both":     oldQuota(limiter.Monthly, utc(2026, 5, 1, 0, 0, 0), 900),
		"quota":    oldQuota(limiter.Daily, utc(2026, 5, 5, 0, 0, 0), 300),
		"lastyear": oldQuota(limiter.Yearly, utc(2025, 1, 1, 0, 0, 0), 5),
	})
	monthly := limiter.Limits{TokensPerMinute: 1000, Quota: 5000, Period: limiter.Monthly}
	daily := limiter.Limits{TokensPerMinute: 1000, Quota: 5000, Period: limiter.Daily}
	check := func(step string, b *Store) {
		t.Helper()
		for _, c := range []struct {
			key         string
			lim         limiter.Limits
			used, quota int64
		}{
			{"both", monthly, 60, 900},
			{"window", monthly, 7, 0},
			{"quota", daily, 0, 300},
			{"expired", monthly, 0, 0},
			{"quotaold", monthly, 0, 0},
			{"lastyear", monthly, 0, 0},
		} {
			d, err := b.Status(ctx, c.key, c.lim, now)
			if err != nil {
				t.Fatal(err)
			}
			if d.Used != c.used || d.Quota.Used != c.quota {
				t.Errorf("%s: %s: used %d, quota %d; want %d, %d", step, c.key, d.Used, d.Quota.Used, c.used, c.quota)
			}
			// The same counts under the names of Limits.Budget().
			m, err := b.StatusMany(ctx, c.key, c.lim.Budget(), now)
			if err != nil {
				t.Fatal(err)
			}
			if m.Limits[0].Used != c.quota || m.Limits[1].Used != c.used {
				t.Errorf("%s: %s as a Budget: %+v; want quota %d, window %d", step, c.key, m.Limits, c.quota, c.used)
			}
		}
		var keys []string
		err := b.db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(windowsBucket) != nil || tx.Bucket(quotasBucket) != nil {
				t.Errorf("%s: the old buckets are still in the file", step)
			}
			return tx.Bucket(countersBucket).ForEach(func(k, _ []byte) error {
				keys = append(keys, string(k))
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 3 {
			t.Errorf("%s: records %q, want both, quota and window", step, keys)
		}
	}
	b := openBolt(t, path, limiter.NewManualClock(now), 0)
	check("open", b)
	// Copied as a crash would leave it: the migration is in the file
	// already, not waiting for a flush.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "crashed.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustClose(t, b)
	check("reopen", openBolt(t, path, limiter.NewManualClock(now), 0))
	check("after a crash", openBolt(t, crashed, limiter.NewManualClock(now), 0))
}

// TestKeepsBudgetsAcrossRestart: every limit of a key, windows of any
// length and periods, comes back after a restart; a period's charge is in
// the file before SettleMany returns, with no flush.
func TestKeepsBudgetsAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "budgets.db")
	now := utc(2026, 5, 5, 10, 0, 0)
	clock := limiter.NewManualClock(now)
	bud := limiter.Budget{
		{Name: "requests", Max: 100, Window: time.Second},
		{Name: "tokens", Max: 10000, Window: time.Hour},
		{Name: "input_tokens", Max: 100000, Window: 24 * time.Hour},
		{Name: "cost", Max: 1000000, Period: limiter.Monthly},
	}
	b := openBolt(t, path, clock, time.Hour) // no flush will run
	for i := range 3 {
		d, err := b.ReserveMany(ctx, "k", bud, []int64{1, 100, 100, 50}, now)
		if err != nil || !d.Allowed {
			t.Fatalf("reserve %d: %+v %v", i, d, err)
		}
		if _, err := b.SettleMany(ctx, "k", bud, d.Hold, []int64{1, 80, 70, 30}, now); err != nil {
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
	for _, c := range []struct {
		path  string
		later time.Duration
		want  []int64
	}{
		{path, 500 * ms, []int64{3, 240, 210, 90}},
		{path, 2 * time.Hour, []int64{0, 0, 210, 90}},
		// A period's charge writes the key's whole record, windows too.
		{crashed, 500 * ms, []int64{3, 240, 210, 90}},
		{path, 27 * 24 * time.Hour, []int64{0, 0, 0, 0}},
	} {
		clock := limiter.NewManualClock(now.Add(c.later))
		r := openBolt(t, c.path, clock, time.Hour)
		d, err := r.StatusMany(ctx, "k", bud, clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range c.want {
			if d.Limits[i].Used != w {
				t.Errorf("%s at +%v: %s used %d, want %d", filepath.Base(c.path), c.later, bud[i].Name, d.Limits[i].Used, w)
			}
		}
		mustClose(t, r)
	}
}
