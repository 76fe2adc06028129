package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tokengate/tokengate/limiter"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/e2e/harness"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// The fault suite's shared bounds.
const (
	// faultAdminTimeout bounds one admin call; the admin port answers at
	// once unless the store is the slow part, and then within its read
	// timeout.
	faultAdminTimeout = 5 * time.Second
	// faultSettleWait bounds the wait for tokengate to finish with a
	// stream the client abandoned: the settle runs as soon as the reset
	// arrives, bounded by extproc's settleTimeout (2 s).
	faultSettleWait = 5 * time.Second
)

// faultUsage asks tokengate's admin API (tokengate.admin.v1.AdminService,
// served on the admin port) for key's counter under policy: what the
// store itself says was charged and is held, read through the same
// store the requests used.
func faultUsage(t *testing.T, admin, policy, key string) *adminv1.Usage {
	t.Helper()
	waitSettled(t, admin)
	return modelUsage(t, admin, policy, key, "")
}

// waitSettled waits until no settle is queued behind its response (the
// Redis store's default), so that what the store says includes every
// answer the test has seen.
func waitSettled(t *testing.T, admin string) {
	t.Helper()
	if _, err := harness.PollAll(1, faultAdminTimeout, func(int) (bool, string) {
		v, err := harness.ScrapeMetric(directClient, admin, "tokengate_settle_pending")
		return err == nil && v == 0, fmt.Sprint(v, err)
	}); err != nil {
		t.Fatalf("settles still queued behind their responses after %v: %v", faultAdminTimeout, err)
	}
}

// faultMetric reads a tokengate series on admin, failing the test when
// the admin port does not answer.
func faultMetric(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	v, err := harness.ScrapeMetric(directClient, admin, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// faultDecisions counts the requests tokengate has finished with under
// policy, whatever it decided: an admitted request is counted once, when
// it is settled, a refused one when it is refused.
func faultDecisions(t *testing.T, admin, policy string) float64 {
	t.Helper()
	return faultMetric(t, admin, "tokengate_requests_total", "policy", policy)
}

// waitDecisions waits until policy has want decisions on admin and fails
// the test past faultSettleWait or when there are more: a request counted
// twice was settled twice.
func waitDecisions(t *testing.T, step, admin, policy string, want float64) {
	t.Helper()
	var got float64
	_, err := harness.PollAll(1, faultSettleWait, func(int) (bool, string) {
		got = faultDecisions(t, admin, policy)
		return got >= want, ""
	})
	if err != nil {
		t.Fatalf("%s: tokengate finished %v requests of policy %s, want %v: %v", step, got, policy, want, err)
	}
	if got > want {
		t.Fatalf("%s: tokengate counted %v requests of policy %s, want %v: one was settled twice", step, got, policy, want)
	}
	// A request is counted when its settle is made or queued behind its
	// response: the store has it once none is queued.
	waitSettled(t, admin)
}

// faultTokens is what tokengate says it charged under policy, prompt and
// completion, whatever the source of the count.
func faultTokens(t *testing.T, admin, policy string) (prompt, completion int64) {
	t.Helper()
	return int64(faultMetric(t, admin, "tokengate_tokens_total", "policy", policy, "kind", "prompt")),
		int64(faultMetric(t, admin, "tokengate_tokens_total", "policy", policy, "kind", "completion"))
}

// redisView is what Redis holds for every tokengate counter in it: the
// tokens charged in the windows, the quota used, and the holds of
// requests in flight ("key member" with their expiry).
type redisView struct {
	window, quota int64
	holds         []string
	holdTokens    int64
	// latestExpiry is the latest hold expiry, in Redis's clock.
	latestExpiry time.Time
	// now is Redis's clock when read.
	now time.Time
}

// readRedis reads every counter tokengate keeps on the server at addr.
// Expired holds are only dropped by the next script that touches their
// key, so they may still be listed here; expiry tells them apart.
func readRedis(t *testing.T, addr string) redisView {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	counters, now := readCounters(t, c)
	v := redisView{now: now}
	for tag, cv := range counters {
		v.window += cv.window
		v.quota += cv.quota
		for member, exp := range cv.holds {
			_, tokens, _ := strings.Cut(member, "|")
			// A hold made on a Budget lists its amounts by limit
			// ("token_quota=55,tokens_per_minute=55"): the window's
			// is what the request holds, as a Limits hold holds its
			// tokens in both.
			for _, part := range strings.Split(tokens, ",") {
				if name, amount, ok := strings.Cut(part, "="); ok && name == limiter.WindowLimitName {
					tokens = amount
				}
			}
			n, err := strconv.ParseInt(tokens, 10, 64)
			if err != nil {
				t.Fatalf("redis hold {%s} %q: %v", tag, member, err)
			}
			v.holdTokens += n
			v.holds = append(v.holds, fmt.Sprintf("{%s} %s (expires in %v)", tag, member, exp.Sub(now).Round(time.Millisecond)))
			if exp.After(v.latestExpiry) {
				v.latestExpiry = exp
			}
		}
	}
	return v
}

// counterView is what Redis holds for one counter key: charges, and the
// holds with their expiry in Redis's clock.
type counterView struct {
	window, quota int64
	holds         map[string]time.Time // by member
}

// live are the holds not expired at now, and the latest expiry.
func (v counterView) live(now time.Time) (n int, latest time.Time) {
	for _, exp := range v.holds {
		if exp.After(now) {
			n++
			if exp.After(latest) {
				latest = exp
			}
		}
	}
	return n, latest
}

// readCounters reads every tokengate key in Redis, by counter key (the
// hash tag: policy and key hash), and Redis's clock. It reads key after
// key: read once no settle is queued (waitSettled), or a settle landing
// meanwhile shows in one of its keys and not another.
func readCounters(t *testing.T, c *redis.Client) (map[string]counterView, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultAdminTimeout)
	defer cancel()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	keys, err := c.Keys(ctx, "tokengate:*").Result()
	if err != nil {
		t.Fatalf("redis KEYS: %v", err)
	}
	out := map[string]counterView{}
	for _, k := range keys {
		open, end := strings.IndexByte(k, '{'), strings.LastIndexByte(k, '}')
		if open < 0 || end < open {
			continue
		}
		tag := k[open+1 : end]
		v := out[tag]
		if v.holds == nil {
			v.holds = map[string]time.Time{}
		}
		switch {
		case strings.HasSuffix(k, ":w"):
			vals, err := c.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatalf("redis HGETALL %s: %v", k, err)
			}
			for f, s := range vals {
				if f == "span" {
					continue
				}
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					t.Fatalf("redis window %s: %q: %v", k, s, err)
				}
				v.window += n
			}
		case strings.HasSuffix(k, ":q"):
			s, err := c.HGet(ctx, k, "used").Result()
			if err != nil {
				t.Fatalf("redis HGET %s used: %v", k, err)
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("redis quota %s: %q: %v", k, s, err)
			}
			v.quota += n
		case strings.HasSuffix(k, ":h"):
			ms, err := c.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatalf("redis ZRANGE %s: %v", k, err)
			}
			for _, m := range ms {
				v.holds[fmt.Sprint(m.Member)] = time.UnixMilli(int64(m.Score))
			}
		}
		out[tag] = v
	}
	return out, now
}

// faultReply is one answer seen by a fault test's client.
type faultReply struct {
	start, end time.Time
	status     int
	total      int64  // usage.total_tokens of a 200
	err        string // transport error, or the OpenAI error code
	header     http.Header
}

// faultSend posts body to base's chat completions with api-key key and
// the extra headers given as pairs, and reads the whole answer; a
// transport error is an outcome, not a test failure, since the faults
// here make them.
func faultSend(ctx context.Context, client *http.Client, base, key string, body []byte, headers ...string) faultReply {
	r := faultReply{start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		r.end, r.err = time.Now(), err.Error()
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		r.end, r.err = time.Now(), err.Error()
		return r
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.end, r.status, r.header = time.Now(), resp.StatusCode, resp.Header
	if err != nil {
		r.err = err.Error()
		return r
	}
	var out struct {
		Usage struct {
			TotalTokens int64 `json:"total_tokens"`
		} `json:"usage"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(got, &out) == nil {
		r.total, r.err = out.Usage.TotalTokens, out.Error.Code
	} else if resp.StatusCode != http.StatusOK {
		r.err = strings.TrimSpace(faultTail(string(got), 80))
	}
	return r
}

// faultTail keeps the last n bytes of an unparsed error body for a log.
func faultTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// faultChatBody is a gpt-4o chat completion of one user message asking
// for maxTokens, streamed or not.
func faultChatBody(t *testing.T, content string, maxTokens int, stream bool) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"model":      "gpt-4o",
		"messages":   []map[string]string{{"role": "user", "content": content}},
		"max_tokens": maxTokens,
		"stream":     stream,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// faultLoad is a few clients sending the same chat completion back to
// back through a gateway until stopped, each answer kept.
type faultLoad struct{ *clientLoad[faultReply] }

// faultLoadMax bounds a fault load in count and time, whatever the test
// does.
const (
	faultLoadMaxPerClient = 2000
	faultLoadMaxWall      = 30 * time.Second
)

// startFaultLoad starts clients sending body with key to base; it stops
// at stop, or when the test ends.
func startFaultLoad(t *testing.T, clients int, base, key string, body []byte, headers ...string) faultLoad {
	t.Helper()
	b := loadBounds{clients: clients, maxPerClient: faultLoadMaxPerClient, maxWall: faultLoadMaxWall, timeout: chatTimeout}
	return faultLoad{startClientLoad(t, b, func(ctx context.Context, client *http.Client, _, _ int) faultReply {
		return faultSend(ctx, client, base, key, body, headers...)
	})}
}

// waitAnswers waits until n answers with status have been seen, failing
// the test after timeout.
func (l faultLoad) waitAnswers(t *testing.T, step string, status, n int, timeout time.Duration) {
	t.Helper()
	got, ok := l.waitFor(func(r faultReply) bool { return r.status == status }, n, timeout)
	if !ok {
		t.Fatalf("%s: %d answers %d after %v, want %d", step, len(got), status, timeout, n)
	}
}

// faultTally counts replies by status and error ("200", "500 …").
func faultTally(rs []faultReply) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		k := strconv.Itoa(r.status)
		if r.err != "" {
			k += " " + r.err
		}
		m[k]++
	}
	return m
}
