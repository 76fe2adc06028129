package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/e2e/harness"
)

// A Redis that stalls instead of dying (SIGSTOP: a long command, a paused
// VM, a failover in progress) answers nothing while the kernel still takes
// what clients send; a reserve script sent then runs when it resumes, after
// tokengate gave up on it at read_timeout. The request went on under
// on_error, and its reservation must not outlive it.
const (
	freezeLimit = 10000
	// freezeMaxTokens is the request's max_tokens: strict mode reserves
	// it, so one lost reservation holds most of the budget.
	freezeMaxTokens = 6000
	freezeKey       = "frozen-key"
	// freezeHoldsGone bounds how long a reservation may stay in Redis once
	// its request is answered and Redis is back: a settle is one round
	// trip, and the recovery probe runs every retry_interval.
	freezeHoldsGone = 2 * time.Second
)

func freezeConfig(redisAddr, onError string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: %s, retry_interval: %v}
policies:
- name: freeze
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
`, redisAddr, faultRedisTimeout, faultRedisTimeout, faultRedisTimeout, onError, faultRetry, freezeLimit)
}

// TestRedisFreezeLeavesNoHold freezes Redis between a strict request's
// headers (checked on the live Redis) and its body (whose reserve script
// then waits in Redis's socket), lets on_error answer the request, thaws
// Redis, and then asks for the key's whole budget on an idle key.
//
// A reserve whose reply misses read_timeout may still run in Redis later
// and leave a hold nobody settles; tokengate keeps such holds and releases
// them once Redis answers again (limiter/fallback), so none outlives the
// outage by hold_ttl.
func TestRedisFreezeLeavesNoHold(t *testing.T) {
	needBinaries(t)
	for _, mode := range []string{"fail_open", "fail_closed", "local"} {
		t.Run(mode, func(t *testing.T) { runRedisFreeze(t, mode) })
	}
}

func runRedisFreeze(t *testing.T, mode string) {
	rds := harness.StartRedis(t)
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: 1, ConfigYAML: freezeConfig(rds.Addr(), mode)})
	warmUp(t, r)
	headersDone := r.Metric(0, "tokengate_decision_duration_seconds_count", "phase", "request_headers")

	// The request's body is held back until Redis is frozen: the front,
	// as Envoy, sends request_headers at once and request_body once the
	// body is whole.
	body := strictChatBody(t, freezeMaxTokens)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, r.URLs[0]+"/v1/chat/completions", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", freezeKey)
	req.Header.Set("x-mock-completion-tokens", "10")
	answered := make(chan answer, 1)
	go func() {
		resp, err := directClient.Do(req)
		a := answer{err: err}
		if err == nil {
			a.status = resp.StatusCode
			a.body, a.err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		answered <- a
	}()
	defer pw.Close()
	_, err = harness.PollAll(1, faultPhaseTimeout, func(int) (bool, string) {
		return r.Metric(0, "tokengate_decision_duration_seconds_count", "phase", "request_headers") > headersDone, ""
	})
	if err != nil {
		t.Fatalf("the request's headers were not decided: %v", err)
	}

	rds.Freeze()
	sent := time.Now()
	if _, err := pw.Write(body); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var a answer
	select {
	case a = <-answered:
	case <-time.After(chatTimeout):
		t.Fatalf("no answer %v after the body was sent to a frozen redis", chatTimeout)
	}
	took := time.Since(sent)
	want := http.StatusOK
	if mode == "fail_closed" {
		want = http.StatusServiceUnavailable
	}
	if a.err != nil || a.status != want {
		t.Fatalf("request whose reserve met a frozen redis: %d %s (%v), want %d", a.status, a.body, a.err, want)
	}
	// A reserve that waited on the frozen Redis past the message timeout
	// is the front's 504, a wrong status above; the whole answer's time
	// is a figure, bounded only against a hang.
	if took >= faultHangLatency {
		t.Errorf("the request took %v after its body was sent to a frozen redis: past %v, a hang", took, faultHangLatency)
	}
	r.WaitMetric("tokengate_store_fallback", 1, faultStateTimeout)
	rds.Thaw()
	recovered := r.WaitMetric("tokengate_store_fallback", 0, faultStateTimeout)

	holds := waitNoHolds(t, rds.Addr())
	resp, got := postChat(t, r.URLs[0], freezeKey, freezeMaxTokens)
	t.Logf("%s: answered %d %v after its reserve met a frozen redis; redis back %v after the thaw; holds left in redis: %v; then a %d-token request on the idle key: %d",
		mode, a.status, took.Round(time.Millisecond), recovered.Round(time.Millisecond), holds, freezeMaxTokens, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("with nothing charged and nothing in flight, a request for %d of the key's %d tokens got %d %s: the reserve sent to the frozen redis left holds %v, counted for hold_ttl",
			freezeMaxTokens, freezeLimit, resp.StatusCode, got, holds)
	}
}

type answer struct {
	status int
	body   []byte
	err    error
}

// strictChatBody is a short chat completion asking for maxTokens, which
// strict mode reserves.
func strictChatBody(t *testing.T, maxTokens int) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"model":      "gpt-4o",
		"messages":   []map[string]string{{"role": "user", "content": "Say hello to the frozen store."}},
		"max_tokens": maxTokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitNoHolds waits until Redis holds no reservation at all (no request is
// in flight) and returns what is left after freezeHoldsGone otherwise:
// "key member…" lines, nil when none.
func waitNoHolds(t *testing.T, addr string) []string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	var left []string
	_, err := harness.PollAll(1, freezeHoldsGone, func(int) (bool, string) {
		left = left[:0]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, "*:h").Result()
		if err != nil {
			return false, err.Error()
		}
		for _, k := range keys {
			ms, err := c.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				return false, err.Error()
			}
			for _, m := range ms {
				left = append(left, fmt.Sprintf("%s %v (expires in %v)", k, m.Member,
					time.Until(time.UnixMilli(int64(m.Score))).Round(time.Second)))
			}
		}
		return len(left) == 0, strconv.Itoa(len(left))
	})
	if err != nil {
		return left
	}
	return nil
}
