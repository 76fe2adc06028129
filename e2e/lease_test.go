package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/e2e/harness"
)

// Holds as leases (issue 17): two tokengate replicas share one Redis,
// with a lease of leaseE2E. One replica is killed with SIGKILL while it
// has leaseVictims long streams in flight, each holding budget in Redis;
// the other has leaseSurvivors streams that outlast several leases. The
// dead replica's holds must be free within one lease of the kill, and
// nothing else may move: the survivor's holds stay (renewed) until its
// streams end, and every charge stays as it was.
const (
	leaseE2E       = 3 * time.Second
	leaseVictims   = 100
	leaseSurvivors = 10
	// leaseSurvivorStall is how long the survivor's streams stall after
	// their first event: several leases, so only renewals keep their holds.
	leaseSurvivorStall = 4 * leaseE2E
	leaseMaxTokens     = 50
	// leaseSlack is how late after one lease the freeing may be seen: the
	// poll's period and a loaded machine's.
	leaseSlack = 1500 * time.Millisecond
)

func leaseConfig(redisAddr string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], clock: server, hold_lease: %v, hold_ttl: 10m, dial_timeout: 500ms, read_timeout: 500ms, write_timeout: 500ms, on_error: fail_closed, retry_interval: 100ms}
policies:
- name: lease
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  token_quota: 1000000000
  token_quota_period: monthly
  reserve_completion: max_tokens
`, redisAddr, leaseE2E)
}

// leaseStream is one long stream's outcome.
type leaseStream struct {
	status int
	first  time.Time // the first event, after which the stream stalls
	total  int       // usage.total_tokens, when the stream ended with one
	done   bool
	err    error
}

// openLeaseStream posts a streamed chat to base and reads it to its end,
// telling started once the first event is in (the request was admitted
// and holds its reservation).
func openLeaseStream(ctx context.Context, client *http.Client, base, key string, body []byte, stall time.Duration, started func()) leaseStream {
	var s leaseStream
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	req.Header.Set("x-mock-completion-tokens", strconv.Itoa(leaseMaxTokens))
	req.Header.Set("x-mock-stall-after", "1")
	req.Header.Set("x-mock-stall", stall.String())
	resp, err := client.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	s.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		return s
	}
	rd := bufio.NewReader(resp.Body)
	first, err := nextEvent(rd)
	if err != nil {
		s.err = err
		return s
	}
	s.first = time.Now()
	started()
	rest, err := readEvents(rd, -1)
	s.err = err
	for _, e := range append([]sseEvent{first}, rest...) {
		if e.data == "[DONE]" {
			s.done = true
		}
		if i := strings.Index(e.data, `"total_tokens":`); i >= 0 {
			n := e.data[i+len(`"total_tokens":`):]
			if j := strings.IndexAny(n, ",}"); j > 0 {
				s.total, _ = strconv.Atoi(strings.TrimSpace(n[:j]))
			}
		}
	}
	return s
}

// TestLeaseKill9FreesWithinALease is issue 17's kill -9 lease test; see
// the constants above. It logs the seconds from the kill to the last of
// the dead replica's holds expiring in Redis.
func TestLeaseKill9FreesWithinALease(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	rds := harness.StartRedis(t)
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: 2, ConfigYAML: leaseConfig(rds.Addr())})
	victimURL, survivorURL := r.URLs[0], r.URLs[1]
	survivorAdmin := r.Tokengates[1].Field("admin")
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	t.Cleanup(func() { rc.Close() })
	const victimKey, survivorKey = "lease-victim", "lease-survivor"
	msgs := []map[string]string{{"role": "user", "content": "Hold this for a while."}}
	body := func(stream bool) []byte {
		extra := map[string]any{"max_tokens": leaseMaxTokens, "stream": stream}
		if stream {
			extra["stream_options"] = map[string]any{"include_usage": true}
		}
		return chatJSON(t, "gpt-4o", msgs, extra)
	}

	// Charges on both keys, through their replicas, before anything; the
	// victim's first, so that its Redis keys are told from the survivor's.
	names := map[string]string{} // counter key in Redis → "victim", "survivor"
	for _, c := range []struct{ url, key, name string }{{victimURL, victimKey, "victim"}, {survivorURL, survivorKey, "survivor"}} {
		for i := range 3 {
			rep := faultSend(context.Background(), directClient, c.url, c.key, body(false), "x-mock-completion-tokens", "20")
			if rep.status != http.StatusOK || rep.total <= 0 {
				t.Fatalf("charge %d on %s: %d %s", i, c.key, rep.status, rep.err)
			}
		}
		v, _ := readCounters(t, rc)
		for k := range v {
			if names[k] == "" {
				names[k] = c.name
			}
		}
	}
	if len(names) != 2 {
		t.Fatalf("redis has counter keys %v, want the victim's and the survivor's", names)
	}
	// read is leaseRead by name.
	read := func() (map[string]counterView, time.Time) {
		v, now := readCounters(t, rc)
		out := map[string]counterView{}
		for k, kv := range v {
			out[names[k]] = kv
		}
		return out, now
	}

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	victimCtx, stopVictims := context.WithCancel(context.Background())
	var all, started sync.WaitGroup
	t.Cleanup(func() { stopVictims(); all.Wait() })
	var mu sync.Mutex
	victims := make([]leaseStream, leaseVictims)
	survivors := make([]leaseStream, leaseSurvivors)
	open := func(ctx context.Context, out *leaseStream, url, key string, b []byte, stall time.Duration) {
		started.Add(1)
		all.Add(1)
		go func() {
			defer all.Done()
			once := sync.OnceFunc(started.Done)
			s := openLeaseStream(ctx, client, url, key, b, stall, once)
			once()
			mu.Lock()
			*out = s
			mu.Unlock()
		}()
	}
	survivorsAt := time.Now()
	for i := range leaseSurvivors {
		open(context.Background(), &survivors[i], survivorURL, survivorKey, body(true), leaseSurvivorStall)
	}
	for i := range leaseVictims {
		open(victimCtx, &victims[i], victimURL, victimKey, body(true), 10*time.Minute)
	}
	waitCh := make(chan struct{})
	go func() { started.Wait(); close(waitCh) }()
	select {
	case <-waitCh:
	case <-time.After(30 * time.Second):
		mu.Lock()
		tally := map[string]int{}
		for _, s := range append(append([]leaseStream{}, victims...), survivors...) {
			tally[fmt.Sprintf("%d %v first=%v", s.status, s.err, !s.first.IsZero())]++
		}
		mu.Unlock()
		t.Fatalf("the streams did not all start within 30s: %v", tally)
	}
	mu.Lock()
	for i, s := range append(append([]leaseStream{}, victims...), survivors...) {
		if s.status != 0 || s.err != nil { // a stream already over: refused or broken
			t.Fatalf("stream %d ended before the kill: %d %v", i, s.status, s.err)
		}
	}
	mu.Unlock()

	// Every stream holds its reservation in Redis; let a lease and a half
	// pass, so that every hold lives on renewals alone.
	time.Sleep(leaseE2E + leaseE2E/2)
	before, now := read()
	vb, sb := before["victim"], before["survivor"]
	if n, _ := vb.live(now); n != leaseVictims {
		t.Fatalf("%d live victim holds in redis after a lease and a half, want %d: renewal is not working", n, leaseVictims)
	}
	if n, _ := sb.live(now); n != leaseSurvivors {
		t.Fatalf("%d live survivor holds in redis, want %d", n, leaseSurvivors)
	}
	victimHeld := faultUsage(t, survivorAdmin, "lease", victimKey).GetUsedTokens()

	killAt := time.Now()
	if err := r.Tokengates[0].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Tokengates[0].Wait(harness.StopTimeout); err != nil {
		t.Fatal(err)
	}
	atKill, redisAtKill := read()
	_, latest := atKill["victim"].live(redisAtKill)
	bound := latest.Sub(redisAtKill)
	if bound > leaseE2E {
		t.Errorf("a hold of the killed replica expires %v after the kill, past the lease %v", bound, leaseE2E)
	}

	// Poll Redis until the dead replica's holds are all expired, checking
	// at each look that nothing else moved.
	var freed time.Duration
	var looks int
	for {
		v, now := read()
		looks++
		n, _ := v["victim"].live(now)
		for _, pol := range []string{"victim", "survivor"} {
			if v[pol].window != before[pol].window || v[pol].quota != before[pol].quota {
				t.Fatalf("%s charges moved after the kill: window %d, quota %d; were %d, %d",
					pol, v[pol].window, v[pol].quota, before[pol].window, before[pol].quota)
			}
		}
		sv := v["survivor"]
		if live, _ := sv.live(now); live != leaseSurvivors {
			t.Fatalf("%v after the kill: %d live survivor holds, want %d", time.Since(killAt), live, leaseSurvivors)
		}
		for m := range sb.holds {
			if _, ok := sv.holds[m]; !ok {
				t.Fatalf("survivor hold %s gone after the kill", m)
			}
		}
		if n == 0 {
			freed = time.Since(killAt)
			break
		}
		if time.Since(killAt) > leaseE2E+leaseSlack {
			t.Fatalf("%d holds of the killed replica still live %v after the kill (lease %v)", n, time.Since(killAt), leaseE2E)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The surviving replica sees the budget free: only charges count.
	victimAfter := faultUsage(t, survivorAdmin, "lease", victimKey).GetUsedTokens()
	if victimAfter != before["victim"].window {
		t.Errorf("the surviving replica sees %d used on the dead replica's key, want the %d charged", victimAfter, before["victim"].window)
	}
	t.Logf("kill -9 with %d streams in flight: their %d holds (%d tokens over charged %d) freed %.2fs after the kill, lease %v (latest expiry at the kill: %.2fs away; %d looks at redis)",
		leaseVictims, len(vb.holds), victimHeld-before["victim"].window, before["victim"].window, freed.Seconds(), leaseE2E, bound.Seconds(), looks)

	// The survivor's streams run on, past several leases, and settle.
	all2 := make(chan struct{})
	go func() {
		for {
			mu.Lock()
			doneN := 0
			for _, s := range survivors {
				if s.status != 0 || s.err != nil {
					doneN++
				}
			}
			mu.Unlock()
			if doneN == leaseSurvivors {
				close(all2)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// Until they end, their holds stay live.
	for {
		select {
		case <-all2:
		case <-time.After(200 * time.Millisecond):
			v, now := read()
			if live, _ := v["survivor"].live(now); live != leaseSurvivors && time.Since(survivorsAt) < leaseSurvivorStall {
				t.Fatalf("%v into the survivor's streams: %d live holds, want %d", time.Since(survivorsAt), live, leaseSurvivors)
			}
			if time.Since(survivorsAt) > leaseSurvivorStall+30*time.Second {
				t.Fatal("the survivor's streams did not end")
			}
			continue
		}
		break
	}
	streamed := time.Since(survivorsAt)
	var totals int64
	mu.Lock()
	for i, s := range survivors {
		if s.status != http.StatusOK || s.err != nil || !s.done || s.total <= 0 {
			t.Errorf("survivor stream %d: %d %v, done %v, total %d", i, s.status, s.err, s.done, s.total)
		}
		totals += int64(s.total)
	}
	mu.Unlock()
	// Their settles charged what they used, and released their holds.
	// Read once none is queued behind its answer: a read is one key
	// after another, and a settle landing between them would show in
	// one and not the other.
	waitSettled(t, survivorAdmin)
	var end map[string]counterView
	var endNow time.Time
	_, err := harness.PollAll(1, faultSettleWait, func(int) (bool, string) {
		end, endNow = read()
		live, _ := end["survivor"].live(endNow)
		return live == 0 && end["survivor"].quota == before["survivor"].quota+totals, ""
	})
	if err != nil {
		live, _ := end["survivor"].live(endNow)
		t.Fatalf("survivor after its streams: %d live holds, quota %d; want 0 and %d + %d", live, end["survivor"].quota, before["survivor"].quota, totals)
	}
	if end["survivor"].window != before["survivor"].window+totals {
		t.Errorf("survivor window %d, want %d + %d", end["survivor"].window, before["survivor"].window, totals)
	}
	if end["victim"].window != before["victim"].window || end["victim"].quota != before["victim"].quota {
		t.Errorf("victim charges moved: window %d, quota %d; were %d, %d", end["victim"].window, end["victim"].quota, before["victim"].window, before["victim"].quota)
	}
	var leftover []string
	for m, exp := range end["victim"].holds {
		if exp.After(endNow) {
			leftover = append(leftover, m)
		}
	}
	sort.Strings(leftover)
	if len(leftover) > 0 {
		t.Errorf("victim holds live again: %v", leftover)
	}
	t.Logf("the surviving replica's %d streams lasted %.1fs (%.1f leases) on renewed holds and settled %d tokens; charges of both keys otherwise unchanged",
		leaseSurvivors, streamed.Seconds(), streamed.Seconds()/leaseE2E.Seconds(), totals)
}
