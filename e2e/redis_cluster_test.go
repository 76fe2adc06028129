package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// clusterStore reads the load's ledgers and holds on every running master.
type clusterStore struct{ c *harness.RedisCluster }

func (s clusterStore) sumOnMasters(t *testing.T, script string) int64 {
	t.Helper()
	var sum int64
	for _, m := range s.c.Masters() {
		out := s.c.MustCLI(m, "eval", script, "0")
		n, err := strconv.ParseInt(out, 10, 64)
		if err != nil {
			t.Fatalf("eval on master %d: %q", m, out)
		}
		sum += n
	}
	return sum
}

// liveSlots maps each master to the slots of the load's keys it serves
// (every key's ledger sits in its key's slot, with the key's other Redis
// keys).
func liveSlots(t *testing.T, c *harness.RedisCluster) map[int][]int {
	t.Helper()
	out := map[int][]int{}
	for _, m := range c.Masters() {
		seen := map[int]bool{}
		for _, k := range c.Keys(m, "*:l:"+haLedger) {
			if s := c.Slot(k); !seen[s] {
				seen[s] = true
				out[m] = append(out[m], s)
			}
		}
	}
	return out
}

// TestRedisClusterFaults runs three tokengates on a real Redis Cluster
// (three masters, a replica each) under a load that presses a strict
// limit on six keys, and measures three events one after the other:
// slots holding live keys moved to another master (clients see ASK while
// a slot moves, MOVED after), a master holding live keys killed with
// SIGKILL (its replica takes over), and one tokengate cut off from every
// node for a few seconds. Replica 2 reaches the cluster only through the
// partition's proxies.
func TestRedisClusterFaults(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	c := harness.StartRedisCluster(t)
	part := harness.StartPartition(t, c.Addrs())
	direct := haConfig(c.Addrs(), "cluster: true,")
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: 3,
		Configs: []string{direct, direct, haConfig(part.Addrs(c.Addrs()), "cluster: true,")}})
	h := startHARun(t, r, clusterStore{c})

	live := liveSlots(t, c)
	t.Logf("cluster: masters %v; slots of live keys by master %v", c.Masters(), live)

	// Slots moving: MIGRATE is atomic per key and the slot changes hands
	// only once its keys are across, so nothing can be lost or admitted
	// twice. While a slot's keys are split between the two masters a
	// script on them is refused (TRYAGAIN) and the replica answers per
	// on_error: wrong refusals, for about the move's length (about 3 s:
	// ten keys, 200 ms apart), and a window more for the settles replayed
	// after it (see the partition below); 8 s with slack.
	migratePause := 200 * time.Millisecond
	h.event("cluster: slots with live keys resharded (ASK, then MOVED)", haBounds{recover: 8 * time.Second}, func() (time.Time, time.Time) {
		src, dst := -1, -1
		for m, slots := range live {
			if src < 0 || len(slots) > len(live[src]) {
				src = m
			}
		}
		for _, m := range c.Masters() {
			if m != src {
				dst = m
				break
			}
		}
		at := time.Now()
		moved := 0
		for _, s := range live[src] {
			moved += c.MigrateSlot(s, src, dst, migratePause)
		}
		done := time.Now()
		t.Logf("cluster: %d slots (%d keys) moved from node %d to node %d in %v", len(live[src]), moved, src, dst, done.Sub(at).Round(time.Millisecond))
		return at, done
	})

	// A master killed: its replica is promoted after cluster-node-timeout
	// (1 s) and an election (0.5–1 s, plus a second per replica ranked
	// before it: none here); tokengate learns the new owner on its next
	// call (a slot-map reload after the error). The settles that failed
	// meanwhile are replayed and charged at the replay's time, one window
	// (2 s) later than their use. About 3 s + 2 s; 8 s covers that on a
	// loaded machine. Replication is asynchronous: a write acknowledged
	// by the dead master and not yet shipped is lost with it, so each
	// request in flight at the kill (one per client) may lose its hold or
	// its charge — the bound on both figures.
	inFlight := int64(haClients) * h.perRequest
	h.event("cluster: master with live keys killed (kill -9, failover)", haBounds{recover: 8 * time.Second, overLimit: inFlight, lost: inFlight}, func() (time.Time, time.Time) {
		live := liveSlots(t, c)
		victim := -1
		for m, slots := range live {
			if victim < 0 || len(slots) > len(live[victim]) {
				victim = m
			}
		}
		at := c.Nodes[victim].Kill()
		took := c.WaitHealthy(harness.HAReadyTimeout)
		t.Logf("cluster: master node %d (%d live slots) killed; cluster healthy again after %v, masters now %v",
			victim, len(live[victim]), took.Round(time.Millisecond), c.Masters())
		return at, time.Now()
	})

	// One tokengate cut off: it refuses (fail_closed) while cut, and its
	// settles that could not be sent are replayed once it is back, so no
	// charge is lost; the others are untouched, but the holds of its
	// requests in flight at the cut keep their budget until the replay
	// (the 429s "with budget free" the others give meanwhile), and a
	// replayed charge is placed at the replay's time, so it counts one
	// window longer than its use did. Normal within the cut, plus one
	// window, plus 2 s for the redial and the replays (dial timeout,
	// retry_interval) on a loaded machine.
	cut := 3 * time.Second
	h.event("cluster: replica 2 partitioned from every node for 3 s", haBounds{recover: cut + haWindow + 2*time.Second}, func() (time.Time, time.Time) {
		at := part.Cut()
		time.Sleep(cut)
		return at, part.Restore()
	})

	h.l.stop()
	for i, p := range r.Tokengates {
		if p.Exited() {
			t.Errorf("replica %d exited", i)
		}
		t.Logf("replica %d: store errors %v, fallback %v", i, r.Metric(i, "tokengate_store_errors_total"), r.Metric(i, "tokengate_store_fallback"))
	}
}
