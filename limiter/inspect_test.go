package limiter

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// TestInspectors lists and resets keys on every store the same way.
func TestInspectors(t *testing.T) {
	ctx := context.Background()
	now := utc(2026, 5, 5, 10, 0, 0)
	clock := NewManualClock(now)
	stores := map[string]func(t *testing.T) Store{
		"memory": func(*testing.T) Store { return NewMemory() },
		"bbolt": func(t *testing.T) Store {
			return openBolt(t, filepath.Join(t.TempDir(), "i.db"), clock, time.Hour)
		},
		"redis": func(t *testing.T) Store { return newRedisStore(t, startRedis(t), false) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			in := s.(Inspector)
			lim := Limits{TokensPerMinute: 1000, Quota: 5000, Period: Monthly}
			for key, used := range map[string]int64{"p:a": 10, "p:b": 30, "q:c": 20} {
				if _, err := s.Settle(ctx, key, lim, Hold{}, used, now); err != nil {
					t.Fatal(err)
				}
			}
			d, _ := s.Reserve(ctx, "p:a", lim, 5, now)
			if !d.Allowed {
				t.Fatal("reserve refused")
			}
			got, err := in.List(ctx, "p:", now)
			if err != nil {
				t.Fatal(err)
			}
			sort.Slice(got, func(i, j int) bool { return got[i].Key < got[j].Key })
			want := []KeyUsage{{"p:a", 15}, {"p:b", 30}}
			if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("List(p:) = %v, want %v", got, want)
			}
			if err := in.Reset(ctx, "p:b"); err != nil {
				t.Fatal(err)
			}
			st, _ := s.Status(ctx, "p:b", lim, now)
			if st.Used != 0 || st.Quota.Used != 0 {
				t.Errorf("after Reset: %+v", st)
			}
			if st, _ := s.Status(ctx, "q:c", lim, now); st.Used != 20 {
				t.Errorf("Reset touched another key: %+v", st)
			}
		})
	}
}
