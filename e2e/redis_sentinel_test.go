package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// sentinelStore reads the load's ledgers and holds on the master the
// sentinels name.
type sentinelStore struct{ s *harness.RedisSentinel }

func (st sentinelStore) sumOnMasters(t *testing.T, script string) int64 {
	t.Helper()
	m := st.s.Master()
	if m < 0 {
		t.Fatal("the sentinels name no running master")
	}
	out, err := st.s.CLI(m, "eval", script, "0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("eval on the master: %q", out)
	}
	return n
}

// TestRedisSentinelFaults runs three tokengates on a real Sentinel group
// (a master, its replica, three sentinels; store.redis.master_name, the
// sentinels' addresses) under the load of TestRedisClusterFaults, and
// measures two events: one tokengate cut off from every Redis process for
// a few seconds (replica 2 reaches them only through the partition's
// proxies), then the master killed with SIGKILL and the replica promoted
// by the sentinels.
func TestRedisSentinelFaults(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	s := harness.StartRedisSentinel(t)
	part := harness.StartPartition(t, append(s.SentinelAddrs(), s.Data[0].Addr(), s.Data[1].Addr()))
	extra := "master_name: " + harness.SentinelMaster + ","
	direct := haConfig(s.SentinelAddrs(), extra)
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: 3,
		Configs: []string{direct, direct, haConfig(part.Addrs(s.SentinelAddrs()), extra)}})
	h := startHARun(t, r, sentinelStore{s})

	// As in the cluster: refusals while cut, replays after, nothing lost;
	// normal within the cut, one window and 2 s (see
	// TestRedisClusterFaults).
	cut := 3 * time.Second
	h.event("sentinel: replica 2 partitioned from every sentinel and node for 3 s", haBounds{recover: cut + haWindow + 2*time.Second}, func() (time.Time, time.Time) {
		at := part.Cut()
		time.Sleep(cut)
		return at, part.Restore()
	})

	// The master killed: the sentinels see it down after
	// down-after-milliseconds (1 s), agree (quorum 2), elect a leader and
	// promote the replica, about 1–2 s more; go-redis's sentinel client
	// hears +switch-master and redials; replayed settles count one window
	// (2 s) past their use. 8 s covers that on a loaded machine. Replication is asynchronous: the writes of the requests in
	// flight at the kill (one per client) may be lost with the master.
	inFlight := int64(haClients) * h.perRequest
	h.event("sentinel: master killed (kill -9, replica promoted)", haBounds{recover: 8 * time.Second, overLimit: inFlight, lost: inFlight}, func() (time.Time, time.Time) {
		old := s.Master()
		at := s.Data[old].Kill()
		now, took := s.WaitFailover(old, harness.HAReadyTimeout)
		t.Logf("sentinel: master node %d killed; node %d promoted and named by the sentinels after %v", old, now, took.Round(time.Millisecond))
		return at, time.Now()
	})

	h.l.stop()
	for i, p := range r.Tokengates {
		if p.Exited() {
			t.Errorf("replica %d exited", i)
		}
		t.Logf("replica %d: store errors %v, fallback %v", i, r.Metric(i, "tokengate_store_errors_total"), r.Metric(i, "tokengate_store_fallback"))
	}
}
