package limiter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a real redis-server on a loopback port, for one test.
type redisServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string // after the defaults, which they override
	cmd  *exec.Cmd
}

// startRedis runs a real redis-server on a free loopback port for the
// test. CI installs it; a developer machine without it skips, saying so.
func startRedis(t testing.TB) string { return newRedisServer(t).addr() }

// newRedisServer starts a server without persistence, unless args (extra
// command-line options, which override the defaults) turn it on: a
// restart, on the same port and directory, then finds its data again.
func newRedisServer(t testing.TB, args ...string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; .ci/run must install it")
		}
		t.Skip("redis-server not installed: Redis store tests skipped")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), port: ln.Addr().(*net.TCPAddr).Port, args: args}
	ln.Close()
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *redisServer) start() {
	s.t.Helper()
	args := append([]string{"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		s.t.Fatal("redis-server did not become ready")
	}
}

// stop kills the server at once, as a crash would.
func (s *redisServer) stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// freeze stops the server's process (SIGSTOP), as a stalled server: the
// kernel still accepts connections and queues what clients send, which the
// server runs once thawed.
func (s *redisServer) freeze() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// thaw resumes a frozen server (SIGCONT).
func (s *redisServer) thaw() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}

func newRedisStore(t testing.TB, addr string, serverTime bool) *Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return NewRedis(RedisOptions{Client: c, Prefix: "test:", ServerTime: serverTime})
}

// TestRedisMatchesMemory plays the same requests on both stores, with the
// caller's clock, and wants the same decisions: window expiry, retry-after,
// holds and their release, quotas.
func TestRedisMatchesMemory(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	type step struct {
		at     time.Duration
		op     string // reserve, settle, status
		n      int64
		used   int64
		holdOf int // for settle: the step whose hold is ended
	}
	lim := Limits{TokensPerMinute: 1000, Quota: 2500, Period: Hourly}
	base := utc(2026, 5, 5, 10, 58, 0).Add(250 * time.Millisecond)
	steps := []step{
		{0, "reserve", 300, 0, 0},
		{0, "reserve", 300, 0, 0},
		{time.Second, "settle", 0, 250, 0},
		{2 * time.Second, "reserve", 500, 0, 0}, // held 300 + charged 250 + 500 > 1000: refused
		{3 * time.Second, "settle", 0, 300, 1},
		{4 * time.Second, "status", 0, 0, 0},
		{30 * time.Second, "reserve", 400, 0, 0},
		{31 * time.Second, "settle", 0, 400, 6},
		{61 * time.Second, "status", 0, 0, 0}, // the 250 of second 1 has left
		{62 * time.Second, "reserve", 0, 0, 0},
		{63 * time.Second, "reserve", 900, 0, 0}, // quota: 950 used + 900 fits 2500; window: 700 + 900 > 1000
		{91 * time.Second, "reserve", 900, 0, 0}, // 300 left at 91s: window 300+900 > 1000
		{92 * time.Second, "reserve", 600, 0, 0},
		{93 * time.Second, "settle", 0, 600, 12},
		{2*time.Minute + 30*time.Second, "reserve", 800, 0, 0},
		{2*time.Minute + 31*time.Second, "settle", 0, 800, 14}, // quota 2350 by 11:00:31… a new hour: 800
		{2*time.Minute + 32*time.Second, "status", 0, 0, 0},
	}
	mem := NewMemory()
	red := newRedisStore(t, addr, false)
	holds := map[string][]Hold{}
	for i, st := range steps {
		now := base.Add(st.at)
		var got [2]Decision
		for j, s := range []Store{mem, red} {
			name := fmt.Sprint(j)
			var d Decision
			var err error
			switch st.op {
			case "reserve":
				d, err = s.Reserve(ctx, "k", lim, st.n, now)
			case "status":
				d, err = s.Status(ctx, "k", lim, now)
			case "settle":
				d, err = s.Settle(ctx, "k", lim, holds[name][st.holdOf], st.used, now)
			}
			if err != nil {
				t.Fatalf("step %d store %d: %v", i, j, err)
			}
			holds[name] = append(holds[name], d.Hold)
			d.Hold.ID = ""
			got[j] = d
		}
		if got[0] != got[1] {
			t.Errorf("step %d (%s n=%d at %v):\nmemory %+v\n redis %+v", i, st.op, st.n, st.at, got[0], got[1])
		}
	}
}

// TestRedisQuotaPeriods crosses every period boundary on the server's
// calendar arithmetic (Lua), against Go's.
func TestRedisQuotaPeriods(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	red := newRedisStore(t, addr, false)
	bounds := []struct {
		p           Period
		last, first time.Time
	}{
		{Hourly, utc(2026, 5, 5, 10, 59, 59), utc(2026, 5, 5, 11, 0, 0)},
		{Daily, utc(2026, 5, 5, 23, 59, 59), utc(2026, 5, 6, 0, 0, 0)},
		{Weekly, utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 30, 0, 0, 0)},
		{Weekly, utc(2027, 1, 3, 23, 59, 59), utc(2027, 1, 4, 0, 0, 0)},
		{Monthly, utc(2026, 2, 28, 23, 59, 59), utc(2026, 3, 1, 0, 0, 0)},
		{Monthly, utc(2028, 2, 29, 23, 59, 59), utc(2028, 3, 1, 0, 0, 0)},
		{Monthly, utc(2026, 4, 30, 23, 59, 59), utc(2026, 5, 1, 0, 0, 0)},
		{Monthly, utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0)},
		{Yearly, utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0)},
		{Yearly, utc(2100, 12, 31, 23, 59, 59), utc(2101, 1, 1, 0, 0, 0)},
	}
	for i, b := range bounds {
		key := fmt.Sprint("q", i)
		lim := Limits{Quota: 100, Period: b.p}
		if _, err := red.Settle(ctx, key, lim, Hold{}, 100, b.last); err != nil {
			t.Fatal(err)
		}
		d, _ := red.Reserve(ctx, key, lim, 0, b.last.Add(900*time.Millisecond))
		if d.Allowed || d.Reason != QuotaExceeded || d.Quota.Used != 100 || d.RetryAfter != 100*time.Millisecond {
			t.Errorf("step %d %s: at the period's last moment: %+v", i, b.p, d)
		}
		d, _ = red.Reserve(ctx, key, lim, 0, b.first)
		if !d.Allowed || d.Quota.Used != 0 {
			t.Errorf("step %d %s: in the next period: %+v", i, b.p, d)
		}
	}
}

// TestRedisHoldsExpire: a replica that dies with a request in flight must
// not hold its tokens forever.
func TestRedisHoldsExpire(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	red := NewRedis(RedisOptions{Client: c, HoldTTL: 5 * time.Second})
	lim := Limits{TokensPerMinute: 100}
	now := utc(2026, 5, 5, 10, 0, 0)
	d, _ := red.Reserve(ctx, "k", lim, 80, now)
	if !d.Allowed || d.Hold.Tokens != 80 || d.Hold.ID == "" {
		t.Fatalf("reserve: %+v", d)
	}
	if d, _ := red.Reserve(ctx, "k", lim, 30, now.Add(4*time.Second)); d.Allowed {
		t.Fatalf("80 held, 30 more admitted: %+v", d)
	}
	d, _ = red.Reserve(ctx, "k", lim, 30, now.Add(5*time.Second))
	if !d.Allowed || d.Used != 30 {
		t.Fatalf("after the hold's TTL: %+v", d)
	}
	// Settling an expired hold charges the use and releases nothing twice.
	if _, err := red.Settle(ctx, "k", lim, d.Hold, 10, now.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := red.Settle(ctx, "k", lim, d.Hold, 0, now.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	if d, _ := red.Status(ctx, "k", lim, now.Add(6*time.Second)); d.Used != 10 {
		t.Errorf("used %d, want 10", d.Used)
	}
	keys, _ := c.Keys(ctx, "*").Result()
	for _, k := range keys {
		ttl, _ := c.PTTL(ctx, k).Result()
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (%v): idle keys must vanish", k, ttl)
		}
	}
}

// TestRedisReplaySettle: a settle replayed after its caller saw an error
// charges only if the first never ran, which the hold still there proves.
func TestRedisReplaySettle(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	red := NewRedis(RedisOptions{Client: c, Prefix: "test:"})
	lim := Limits{TokensPerMinute: 1000, Quota: 5000, Period: Daily}
	now := utc(2026, 5, 5, 10, 0, 0)
	check := func(step, key string, used, held int64) {
		t.Helper()
		d, err := red.Status(ctx, key, lim, now)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.ZCard(ctx, red.keys(key)[1]).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Used counts what is held too, window and quota alike.
		if d.Used != used+held || d.Quota.Used != used+held || h != min(held, 1) {
			t.Errorf("%s: used %d, quota used %d, %d holds; want %d charged and %d held",
				step, d.Used, d.Quota.Used, h, used, held)
		}
	}

	// The settle did run: its replay changes nothing.
	d, _ := red.Reserve(ctx, "ran", lim, 60, now)
	if !d.Allowed || d.Hold.ID == "" {
		t.Fatalf("reserve: %+v", d)
	}
	if _, err := red.Settle(ctx, "ran", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := red.replaySettle(ctx, "ran", lim, d.Hold, 40, now); err != nil {
			t.Fatal(err)
		}
	}
	check("settled, then replayed twice", "ran", 40, 0)

	// The settle never ran: the first replay charges and releases, a
	// second one nothing.
	d, _ = red.Reserve(ctx, "lost", lim, 60, now)
	check("held", "lost", 0, 60)
	for i := 0; i < 2; i++ {
		if _, err := red.replaySettle(ctx, "lost", lim, d.Hold, 40, now); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprint("replay ", i), "lost", 40, 0)
	}

	// No hold, no proof: charged each time (see replaySettle).
	if _, err := red.replaySettle(ctx, "none", lim, Hold{}, 10, now); err != nil {
		t.Fatal(err)
	}
	check("replay without a hold", "none", 10, 0)

	// A plain settle still charges an expired hold's use (as
	// TestRedisHoldsExpire): only replays ask for the hold.
	d, _ = red.Reserve(ctx, "plain", lim, 60, now)
	if _, err := red.Settle(ctx, "plain", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	if _, err := red.Settle(ctx, "plain", lim, d.Hold, 40, now); err != nil {
		t.Fatal(err)
	}
	check("settled twice, not replayed", "plain", 80, 0)
}

// TestRedisServerTime: replicas whose clocks disagree by minutes still
// charge one window, because the server's clock decides.
func TestRedisServerTime(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	a, b := newRedisStore(t, addr, true), newRedisStore(t, addr, true)
	lim := Limits{TokensPerMinute: 100}
	now := time.Now()
	a.Settle(ctx, "k", lim, Hold{}, 60, now.Add(-5*time.Minute)) // a's clock is behind
	b.Settle(ctx, "k", lim, Hold{}, 30, now.Add(7*time.Minute))  // b's ahead
	for i, s := range []*Redis{a, b} {
		d, err := s.Status(ctx, "k", lim, now.Add(time.Duration(i)*time.Hour))
		if err != nil || d.Used != 90 {
			t.Errorf("replica %d sees %d used (%v), want both charges: 90", i, d.Used, err)
		}
	}
	if d, _ := a.Reserve(ctx, "k", lim, 20, now); d.Allowed {
		t.Errorf("90 + 20 > 100 admitted across skewed replicas: %+v", d)
	}
}

func TestRedisKeysShareASlot(t *testing.T) {
	r := NewRedis(RedisOptions{Prefix: "tg:"})
	ks := r.keys("lab:ab{c}d")
	for _, k := range ks {
		if !strings.HasPrefix(k, "tg:{lab:ab(c)d}:") {
			t.Errorf("key %q lacks the hash tag", k)
		}
	}
}

func BenchmarkRedisReserveSettle(b *testing.B) {
	addr := startRedis(b)
	red := newRedisStore(b, addr, true)
	ctx := context.Background()
	lim := Limits{TokensPerMinute: 1 << 40}
	b.ReportAllocs()
	for b.Loop() {
		d, err := red.Reserve(ctx, "k", lim, 100, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		_, _ = red.Settle(ctx, "k", lim, d.Hold, 90, time.Now())
	}
	reportOps(b)
}
