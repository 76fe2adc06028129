package harness

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/internal/ports"
	"github.com/tokengate/tokengate/internal/proc"
)

// Redis Cluster and Sentinel on loopback, for the fault tests of issue 17:
// real redis-server processes (Debian's redis-server package; Sentinel is
// the same binary with --sentinel), driven with redis-cli, every process
// killed when the test ends.

// HAReadyTimeout bounds the wait for a cluster or a sentinel group to
// settle: the cluster's nodes to agree on the slots (gossip, one node
// timeout at most), the replicas to sync, the sentinels to find each other
// (they announce themselves every 2 s on the master's hello channel).
const HAReadyTimeout = 30 * time.Second

// ClusterNodeTimeout is cluster-node-timeout: how long a master must stay
// unreachable before it is failed and its replica promoted. Redis's default
// (15 s) would make every failover test wait that long; one second keeps
// the failover at about two seconds, as a tuned production cluster runs.
const ClusterNodeTimeout = time.Second

// SentinelDownAfter is down-after-milliseconds, and SentinelFailoverTimeout
// failover-timeout, for the same reason (defaults 30 s and 3 min).
const (
	SentinelDownAfter       = time.Second
	SentinelFailoverTimeout = 5 * time.Second
)

// SentinelMaster is the master name the sentinels monitor
// (store.redis.master_name).
const SentinelMaster = "mymaster"

// RedisNode is one redis-server process (a cluster node, a data node of a
// sentinel group, or a sentinel) on a free loopback port.
type RedisNode struct {
	t    testing.TB
	bin  string
	args []string
	Port int
	Name string
	// ready is the log line that says it serves; redisReady when "".
	ready string

	mu      sync.Mutex
	p       *proc.Process
	running bool
}

// Addr is the node's host:port.
func (n *RedisNode) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// Running reports whether the process is up.
func (n *RedisNode) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// Kill sends SIGKILL (kill -9) and returns once the process is reaped, and
// the instant just before.
func (n *RedisNode) Kill() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	at := time.Now()
	if n.running {
		n.p.Kill()
		n.running = false
	}
	return at
}

// Log is what the node printed (its log goes to stdout).
func (n *RedisNode) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil {
		return ""
	}
	return n.p.Stdout()
}

func (n *RedisNode) start() {
	n.t.Helper()
	ready := cmp.Or(n.ready, redisReady)
	p, err := proc.Launch(n.bin, n.args, proc.Options{Name: n.Name,
		ReadyLine: func(line string) bool { return strings.Contains(line, ready) }})
	if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	n.p, n.running = p, true
	n.mu.Unlock()
	if err := p.WaitReady(context.Background(), RedisReadyTimeout); err != nil {
		n.t.Fatalf("%s on port %d: %v\nits log ends:\n%s", n.Name, n.Port, err, proc.Tail(p.Stdout(), 2048))
	}
}

// startNode launches redis-server with args (after the port and the
// common ones) and registers its end with the test.
func startNode(t testing.TB, bin, dir, name string, port int, args ...string) *RedisNode {
	t.Helper()
	n := &RedisNode{t: t, bin: bin, Port: port, Name: name}
	n.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", ""}, args...)
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("%s log (last 2 KiB):\n%s", n.Name, proc.Tail(n.Log(), 2048))
		}
	})
	n.start()
	return n
}

// redisBins finds redis-server and redis-cli, skipping the test without
// them (failing it under CI, where .ci/run installs them).
func redisBins(t testing.TB) (server, cli string) {
	t.Helper()
	var missing []string
	server, err := exec.LookPath("redis-server")
	if err != nil {
		missing = append(missing, "redis-server")
	}
	cli, err = exec.LookPath("redis-cli")
	if err != nil {
		missing = append(missing, "redis-cli")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found; .ci/run must install them", strings.Join(missing, ", "))
		}
		t.Skipf("%s not installed: the Redis Cluster and Sentinel tests are skipped", strings.Join(missing, ", "))
	}
	return server, cli
}

// RedisCLI runs redis-cli against addr with args and returns its output,
// trimmed. Its own timeout bounds it: a test must not hang on a dead node.
func RedisCLI(cli, addr string, args ...string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("redis-cli -p %s %s: %w: %s", port, strings.Join(args, " "), err, s)
	}
	// redis-cli exits 0 on a Redis error reply; it prints it.
	if strings.HasPrefix(s, "ERR ") || strings.HasPrefix(s, "(error)") {
		return s, fmt.Errorf("redis-cli -p %s %s: %s", port, strings.Join(args, " "), s)
	}
	return s, nil
}

// RedisCluster is a real Redis Cluster: three masters and one replica
// each, joined by redis-cli --cluster create.
type RedisCluster struct {
	t     testing.TB
	cli   string
	Nodes []*RedisNode
}

// StartRedisCluster starts six cluster-enabled redis-servers and joins them
// with `redis-cli --cluster create … --cluster-replicas 1`, then waits until
// every node says cluster_state:ok and every replica is in sync.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	bin, cli := redisBins(t)
	c := &RedisCluster{t: t, cli: cli}
	dir := t.TempDir()
	addrs := make([]string, 6)
	var wg sync.WaitGroup
	c.Nodes = make([]*RedisNode, 6)
	ps := make([][2]int, 6)
	for i := range ps {
		// The bus port is given, not port+10000, which may be past 65535
		// or taken.
		ps[i] = [2]int{ports.Free(t), ports.Free(t)}
	}
	for i := range c.Nodes {
		wg.Go(func() {
			port, bus := ps[i][0], ps[i][1]
			c.Nodes[i] = startNode(t, bin, dir, fmt.Sprintf("redis-cluster-%d", i), port,
				"--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)),
				"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
				// A replica fails over whatever its data's age: the test
				// kills masters seconds after the start.
				"--cluster-replica-validity-factor", "0",
				"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := RedisCLI(cli, addrs[0], args...); err != nil {
		t.Fatalf("harness: %v\n%s", err, out)
	}
	c.WaitHealthy(HAReadyTimeout)
	return c
}

// Addrs are every node's host:port (store.redis.addrs).
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// CLI runs redis-cli against node i.
func (c *RedisCluster) CLI(i int, args ...string) (string, error) {
	return RedisCLI(c.cli, c.Nodes[i].Addr(), args...)
}

// MustCLI is CLI, failing the test on an error.
func (c *RedisCluster) MustCLI(i int, args ...string) string {
	c.t.Helper()
	out, err := c.CLI(i, args...)
	if err != nil {
		c.t.Fatalf("harness: %v", err)
	}
	return out
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID     string
	Port   int
	Master bool
	Failed bool
	Slots  [][2]int // ranges, inclusive
}

// Topology is CLUSTER NODES as node i sees it.
func (c *RedisCluster) Topology(i int) ([]ClusterNode, error) {
	out, err := c.CLI(i, "cluster", "nodes")
	if err != nil {
		return nil, err
	}
	var nodes []ClusterNode
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		_, p, _ := strings.Cut(addr, ":")
		port, _ := strconv.Atoi(p)
		n := ClusterNode{ID: f[0], Port: port, Master: strings.Contains(f[2], "master"),
			Failed: strings.Contains(f[2], "fail")}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, ok := strings.Cut(s, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if ok {
				b, _ = strconv.Atoi(hi)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Index is the position in Nodes of the node on port, -1 if none.
func (c *RedisCluster) Index(port int) int {
	for i, n := range c.Nodes {
		if n.Port == port {
			return i
		}
	}
	return -1
}

// Owner is the index of the master serving slot, as node i sees it.
func (c *RedisCluster) Owner(i, slot int) (int, error) {
	nodes, err := c.Topology(i)
	if err != nil {
		return -1, err
	}
	for _, n := range nodes {
		if !n.Master || n.Failed {
			continue
		}
		for _, r := range n.Slots {
			if slot >= r[0] && slot <= r[1] {
				return c.Index(n.Port), nil
			}
		}
	}
	return -1, fmt.Errorf("no master serves slot %d", slot)
}

// Masters are the indexes of the running masters, as the first running
// node sees them.
func (c *RedisCluster) Masters() []int {
	c.t.Helper()
	nodes, err := c.Topology(c.anyRunning())
	if err != nil {
		c.t.Fatalf("harness: %v", err)
	}
	var out []int
	for _, n := range nodes {
		if n.Master && !n.Failed && len(n.Slots) > 0 {
			if i := c.Index(n.Port); i >= 0 && c.Nodes[i].Running() {
				out = append(out, i)
			}
		}
	}
	return out
}

func (c *RedisCluster) anyRunning() int {
	for i, n := range c.Nodes {
		if n.Running() {
			return i
		}
	}
	c.t.Fatal("harness: no cluster node runs")
	return -1
}

// NodeID is node i's cluster id.
func (c *RedisCluster) NodeID(i int) string {
	c.t.Helper()
	return c.MustCLI(i, "cluster", "myid")
}

// WaitHealthy waits until every running node says cluster_state:ok, sees
// every slot served by a master that runs, and every running replica's
// link to its master is up; it returns how long that took.
func (c *RedisCluster) WaitHealthy(timeout time.Duration) time.Duration {
	c.t.Helper()
	began := time.Now()
	err := proc.Poll(context.Background(), timeout, 50*time.Millisecond, c.healthy)
	if err != nil {
		c.t.Fatalf("harness: redis cluster not healthy after %v: %v", timeout, err)
	}
	return time.Since(began)
}

func (c *RedisCluster) healthy() error {
	for i, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		info, err := c.CLI(i, "cluster", "info")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("node %d: %s", i, firstLines(info, 3))
		}
		nodes, err := c.Topology(i)
		if err != nil {
			return err
		}
		for _, m := range nodes {
			if j := c.Index(m.Port); m.Master && len(m.Slots) > 0 && (j < 0 || !c.Nodes[j].Running() || m.Failed) {
				return fmt.Errorf("node %d still sees the dead master %d as serving", i, m.Port)
			}
		}
		repl, err := c.CLI(i, "info", "replication")
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("replica %d not in sync yet", i)
		}
	}
	return nil
}

// Slot is the cluster slot of a Redis key (CLUSTER KEYSLOT).
func (c *RedisCluster) Slot(key string) int {
	c.t.Helper()
	s, err := strconv.Atoi(c.MustCLI(c.anyRunning(), "cluster", "keyslot", key))
	if err != nil {
		c.t.Fatalf("harness: cluster keyslot %q: %v", key, err)
	}
	return s
}

// Keys are the keys node i holds that match pattern (KEYS: the test's
// data set is small).
func (c *RedisCluster) Keys(i int, pattern string) []string {
	c.t.Helper()
	out := c.MustCLI(i, "--no-raw", "keys", pattern)
	var keys []string
	for _, l := range strings.Split(out, "\n") {
		// --no-raw lines read `1) "key"`.
		if _, q, ok := strings.Cut(l, `"`); ok {
			keys = append(keys, strings.TrimSuffix(q, `"`))
		}
	}
	return keys
}

// MigrateSlot moves slot from master src to master dst by hand, as
// redis-cli --cluster reshard does it, so clients see ASK while it moves
// and MOVED after: SETSLOT IMPORTING on dst, MIGRATING on src, then the
// keys one at a time with a pause after each (pause: the ASK phase lasts
// that long per key), then SETSLOT NODE everywhere.
func (c *RedisCluster) MigrateSlot(slot, src, dst int, pause time.Duration) (moved int) {
	c.t.Helper()
	s := strconv.Itoa(slot)
	srcID, dstID := c.NodeID(src), c.NodeID(dst)
	c.MustCLI(dst, "cluster", "setslot", s, "importing", srcID)
	c.MustCLI(src, "cluster", "setslot", s, "migrating", dstID)
	dstHost, dstPort, _ := strings.Cut(c.Nodes[dst].Addr(), ":")
	for {
		out := c.MustCLI(src, "cluster", "getkeysinslot", s, "1")
		if out == "" {
			break
		}
		key := strings.Split(out, "\n")[0]
		if _, err := c.CLI(src, "migrate", dstHost, dstPort, key, "0", "5000", "replace"); err != nil {
			// The key expired or was deleted between the two calls.
			c.t.Logf("harness: migrate %q: %v", key, err)
		} else {
			moved++
		}
		time.Sleep(pause)
	}
	// The destination first, as redis-cli does, so it never refuses the
	// slot it now holds; then the source and the others learn it.
	c.MustCLI(dst, "cluster", "setslot", s, "node", dstID)
	c.MustCLI(src, "cluster", "setslot", s, "node", dstID)
	for i, n := range c.Nodes {
		if i != src && i != dst && n.Running() {
			_, _ = c.CLI(i, "cluster", "setslot", s, "node", dstID) // replicas refuse it; gossip tells them
		}
	}
	return moved
}

// Reshard moves n slots from master src to master dst with
// `redis-cli --cluster reshard`.
func (c *RedisCluster) Reshard(src, dst, n int) string {
	c.t.Helper()
	return c.MustCLI(src, "--cluster", "reshard", c.Nodes[src].Addr(),
		"--cluster-from", c.NodeID(src), "--cluster-to", c.NodeID(dst),
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes", "--cluster-pipeline", "10")
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " ")
}

// RedisSentinel is a master, one replica of it, and three sentinels
// monitoring it under SentinelMaster with a quorum of two.
type RedisSentinel struct {
	t         testing.TB
	cli       string
	Data      []*RedisNode // [0] the first master, [1] its replica
	Sentinels []*RedisNode
}

// StartRedisSentinel starts the group and waits until every sentinel
// knows the replica and the two other sentinels.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	bin, cli := redisBins(t)
	s := &RedisSentinel{t: t, cli: cli}
	dir := t.TempDir()
	master := startNode(t, bin, filepath.Join(mkdir(t, dir, "master")), "redis-master", ports.Free(t))
	replica := startNode(t, bin, filepath.Join(mkdir(t, dir, "replica")), "redis-replica", ports.Free(t),
		"--replicaof", "127.0.0.1", strconv.Itoa(master.Port),
		"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	s.Data = []*RedisNode{master, replica}
	var wg sync.WaitGroup
	s.Sentinels = make([]*RedisNode, 3)
	sps := []int{ports.Free(t), ports.Free(t), ports.Free(t)}
	for i := range s.Sentinels {
		d := mkdir(t, dir, fmt.Sprintf("sentinel-%d", i))
		conf := filepath.Join(d, "sentinel.conf")
		// Sentinel rewrites its file (what it learns of the group), so
		// each has its own.
		body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n"+
			"sentinel parallel-syncs %s 1\n",
			SentinelMaster, master.Port, SentinelMaster, SentinelDownAfter.Milliseconds(),
			SentinelMaster, SentinelFailoverTimeout.Milliseconds(), SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// A sentinel logs no "Ready to accept connections"; it
			// serves once it monitors the master.
			n := &RedisNode{t: t, bin: bin, Port: sps[i], Name: fmt.Sprintf("redis-sentinel-%d", i), ready: "+monitor master",
				args: []string{conf, "--sentinel", "--port", strconv.Itoa(sps[i]), "--bind", "127.0.0.1",
					"--dir", d, "--logfile", ""}}
			t.Cleanup(func() {
				n.Kill()
				if t.Failed() {
					t.Logf("%s log (last 2 KiB):\n%s", n.Name, proc.Tail(n.Log(), 2048))
				}
			})
			n.start()
			s.Sentinels[i] = n
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	err := proc.Poll(context.Background(), HAReadyTimeout, 100*time.Millisecond, func() error {
		for i := range s.Sentinels {
			out, err := s.SentinelCLI(i, "sentinel", "master", SentinelMaster)
			if err != nil {
				return err
			}
			f := fieldsOf(out)
			if f["num-slaves"] != "1" || f["num-other-sentinels"] != "2" || f["flags"] != "master" {
				return fmt.Errorf("sentinel %d: slaves %s, other sentinels %s, flags %s", i, f["num-slaves"], f["num-other-sentinels"], f["flags"])
			}
		}
		repl, err := RedisCLI(cli, replica.Addr(), "info", "replication")
		if err != nil {
			return err
		}
		if !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("replica not in sync")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("harness: sentinel group not ready after %v: %v", HAReadyTimeout, err)
	}
	return s
}

func mkdir(t testing.TB, parent, name string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// fieldsOf reads a redis-cli raw reply of alternating names and values.
func fieldsOf(out string) map[string]string {
	lines := strings.Split(out, "\n")
	m := map[string]string{}
	for i := 0; i+1 < len(lines); i += 2 {
		m[strings.TrimSpace(lines[i])] = strings.TrimSpace(lines[i+1])
	}
	return m
}

// SentinelAddrs are the sentinels' host:port (store.redis.addrs, with
// master_name SentinelMaster).
func (s *RedisSentinel) SentinelAddrs() []string {
	out := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		out[i] = n.Addr()
	}
	return out
}

// SentinelCLI runs redis-cli against sentinel i.
func (s *RedisSentinel) SentinelCLI(i int, args ...string) (string, error) {
	return RedisCLI(s.cli, s.Sentinels[i].Addr(), args...)
}

// CLI runs redis-cli against data node i.
func (s *RedisSentinel) CLI(i int, args ...string) (string, error) {
	return RedisCLI(s.cli, s.Data[i].Addr(), args...)
}

// Master is the index in Data of the master the sentinels name now, -1 if
// none of them names a running data node.
func (s *RedisSentinel) Master() int {
	for i := range s.Sentinels {
		if !s.Sentinels[i].Running() {
			continue
		}
		out, err := s.SentinelCLI(i, "sentinel", "get-master-addr-by-name", SentinelMaster)
		if err != nil {
			continue
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			continue
		}
		for j, d := range s.Data {
			if strconv.Itoa(d.Port) == f[1] && d.Running() {
				return j
			}
		}
	}
	return -1
}

// WaitFailover waits until the sentinels name a running master other than
// old and that node says role:master; it returns the new master's index
// and how long the wait took.
func (s *RedisSentinel) WaitFailover(old int, timeout time.Duration) (int, time.Duration) {
	s.t.Helper()
	began := time.Now()
	var now int
	err := proc.Poll(context.Background(), timeout, 50*time.Millisecond, func() error {
		now = s.Master()
		if now < 0 || now == old {
			return fmt.Errorf("the sentinels still name node %d", now)
		}
		role, err := s.CLI(now, "role")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(role, "master") {
			return fmt.Errorf("node %d named but says %q", now, firstLines(role, 1))
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("harness: no failover after %v: %v", timeout, err)
	}
	return now, time.Since(began)
}
