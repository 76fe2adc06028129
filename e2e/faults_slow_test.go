package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// Redis slow rather than dead: a latency proxy between tokengate and
// redis-server delays every reply. Below read_timeout the store is merely
// slower; above it every call times out and on_error decides, and no
// answer may wait past Envoy's message timeout for it.
//
// The delay is a lower bound on a round trip, so slowAbove always times
// out; slowBelow must never, and a loaded two-core machine adds its own
// scheduling delay to the proxy's, tokengate's and redis-server's turns:
// read_timeout leaves ten times the delay for that (tokengate's default,
// 50 ms, would leave a few tens of milliseconds).
const (
	slowReadTimeout = 250 * time.Millisecond
	slowBelow       = 25 * time.Millisecond
	slowAbove       = 2 * slowReadTimeout
	slowAnswers     = 30 // load answers each phase must see
)

// slowConfig is a strict policy, so every request holds a reservation in
// Redis: a reserve whose reply comes too late has still run there, and
// must not leave its hold behind once Redis answers in time again.
func slowConfig(redisAddr string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: local, retry_interval: %v}
policies:
- name: slow
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  reserve_completion: max_tokens
`, redisAddr, slowReadTimeout, slowReadTimeout, slowReadTimeout, faultRetry)
}

func TestFaultRedisSlow(t *testing.T) {
	needBinaries(t)
	rds := harness.StartRedis(t)
	proxy := harness.StartLatencyProxy(t, rds.Addr())
	var fronts frontTally
	r := harness.StartReplicas(t, harness.ReplicaOptions{N: 1, ConfigYAML: slowConfig(proxy.Addr()), OnRequest: fronts.add})
	warmUp(t, r)
	r.WaitMetric("tokengate_store_fallback", 0, faultStateTimeout)

	proxy.SetDelay(slowBelow)
	belowAt := time.Now()
	ld := startSteady(t, r.URLs, "slow-key")
	belowStep := fmt.Sprintf("redis %v slow", slowBelow)
	below := ld.waitSince(t, belowStep, belowAt, slowAnswers, faultPhaseTimeout)
	wantAll(t, belowStep, below, http.StatusOK, "")
	if v := r.Metric(0, "tokengate_store_fallback"); v != 0 {
		t.Errorf("fallback gauge %v with redis %v slow, under read_timeout %v: want 0", v, slowBelow, slowReadTimeout)
	}
	belowErrs := r.Metric(0, "tokengate_store_errors_total")
	if belowErrs != 0 {
		t.Errorf("%v store errors with redis %v slow, under read_timeout %v: want none", belowErrs, slowBelow, slowReadTimeout)
	}
	// Every request calls Redis at least once on its way: the delay is
	// really in the path.
	if fastest := minLatency(below); fastest < slowBelow {
		t.Errorf("an answer took %v with redis %v slow: the proxy is not in tokengate's path", fastest, slowBelow)
	}

	proxy.SetDelay(slowAbove)
	noticed := r.WaitMetric("tokengate_store_fallback", 1, faultStateTimeout)
	aboveAt := time.Now()
	aboveStep := fmt.Sprintf("redis %v slow", slowAbove)
	above := ld.waitSince(t, aboveStep, aboveAt, slowAnswers, faultPhaseTimeout)
	wantAll(t, aboveStep, endedBefore(above, time.Now()), http.StatusOK, "")
	timeouts := r.Metric(0, "tokengate_store_errors_total", "kind", "timeout")
	if timeouts == 0 {
		t.Errorf("no store error of kind timeout with redis %v slow, past read_timeout %v", slowAbove, slowReadTimeout)
	}

	proxy.SetDelay(0)
	recovered := r.WaitMetric("tokengate_store_fallback", 0, faultStateTimeout)
	upAt := time.Now()
	after := ld.waitSince(t, "redis fast again", upAt, slowAnswers, faultPhaseTimeout)
	wantAll(t, "redis fast again", after, http.StatusOK, "")
	all := ld.stop()
	checkEveryAnswer(t, "local", all, belowAt, upAt)
	fronts.check(t)
	holds := waitNoHolds(t, rds.Addr())
	view := readRedis(t, rds.Addr())

	s1, p1 := latencies(below)
	s2, p2 := latencies(above)
	s3, p3 := latencies(after)
	t.Logf("redis %v slow (read_timeout %v): %v, slowest %v, p99 %v; store errors %v",
		slowBelow, slowReadTimeout, tally(below), s1.Round(time.Millisecond), p1.Round(time.Millisecond), belowErrs)
	t.Logf("redis %v slow: fallback gauge 1 %v after the change; %v, slowest %v, p99 %v (message timeout %v); timeouts counted %v",
		slowAbove, noticed.Round(time.Millisecond), tally(above), s2.Round(time.Millisecond), p2.Round(time.Millisecond), faultMaxLatency, timeouts)
	t.Logf("delay removed: fallback gauge 0 %v after; %v, slowest %v, p99 %v; redis then holds window %d tokens, %d holds %v (left after %v: %v); front: %s",
		recovered.Round(time.Millisecond), tally(after), s3.Round(time.Millisecond), p3.Round(time.Millisecond),
		view.window, len(view.holds), view.holds, freezeHoldsGone, holds, fronts.String())
	if holds != nil {
		t.Errorf("reservations left in redis once it answered in time again, with nothing in flight: %v", holds)
	}
}

func minLatency(outs []outcome) time.Duration {
	ds := make([]time.Duration, len(outs))
	for i, o := range outs {
		ds[i] = o.latency()
	}
	return slices.Min(ds)
}

// Envoy's message timeout exceeded: tokengate's reply comes after the
// front (Envoy) stopped waiting for it. What makes it late here is the
// store: Redis replies lateDelay late through the latency proxy, under
// tokengate's read and dial timeouts (go-redis's handshake on a new
// connection is a round trip too), so tokengate sees no error, but past a
// front whose message_timeout is lateTimeout. (That is a store timeout
// longer than Envoy's message timeout: a misconfiguration, or a Redis
// client stuck dialing.) An upstream stall cannot do it: the message
// timeout only runs while Envoy waits for tokengate. The figures leave a
// fast reply (a message decided on an undelayed Redis) lateTimeout to
// arrive, and the front's timer, which a loaded machine may fire late,
// lateDelay − lateTimeout to fire before a delayed reply arrives.
const (
	lateTimeout     = 300 * time.Millisecond
	lateDelay       = time.Second
	lateReadTimeout = 3 * time.Second
	// lateFineDelay is the slow Redis the stack's own front (envoy.yaml's
	// 1 s) must still answer through: a message may wait two round
	// trips (a new connection's handshake, then the call).
	lateFineDelay = 150 * time.Millisecond
	lateMax       = 50 // the request's max_tokens, held in strict mode
)

func lateConfig(redisAddr string) string {
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], dial_timeout: %v, read_timeout: %v, write_timeout: %v, on_error: fail_closed, retry_interval: %v}
policies:
- name: late
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
`, redisAddr, lateReadTimeout, lateReadTimeout, lateReadTimeout, faultRetry)
}

// TestFaultMessageTimeout makes tokengate's reply late at request_headers
// and at request_body. The client sees the front's 504 either way and the
// upstream never sees the request. What tokengate charges for it:
//
//   - late at request_headers: nothing. Only the check was made; the
//     stream ends before any body, and the settle charges the (empty)
//     prompt estimate, 0.
//   - late at request_body: the prompt estimate. tokengate reserved it
//     (and max_tokens) before its late reply; when the stream ends it
//     settles an unknown outcome as a success (extproc/settle.go charge),
//     since it cannot tell that Envoy did not forward the request (with
//     failure_mode_allow it would have). The reservation itself is
//     released: max_tokens is not charged.
func TestFaultMessageTimeout(t *testing.T) {
	needBinaries(t)
	rds := harness.StartRedis(t)
	proxy := harness.StartLatencyProxy(t, rds.Addr())
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: lateConfig(proxy.Addr())})
	admin := s.Tokengate.Field("admin")
	late := startLateFront(t, s, lateTimeout)
	content := "Answer before the proxy times out."
	body := faultChatBody(t, content, lateMax, false)
	estimate := int64(tokenize.Chat("gpt-4o", []tokenize.Message{{Role: "user", Content: content}}))

	for i, phase := range []string{"request_headers", "request_body"} {
		key := "late-at-" + phase
		callsBefore, _ := s.MockCalls()
		decided := faultDecisions(t, admin, "late")
		prompt0, completion0 := faultTokens(t, admin, "late")
		errs0 := faultMetric(t, admin, "tokengate_store_errors_total")
		logMark := len(s.Tokengate.Stderr())

		var status int
		var got []byte
		if phase == "request_headers" {
			proxy.SetDelay(lateDelay)
			status, got = lateSend(t, late.url, key, body, nil)
		} else {
			// The body is held back until the headers are decided on a
			// fast Redis; only the body's reserve meets the slow one.
			headers := headersDecided(t, admin)
			status, got = lateSend(t, late.url, key, body, func() {
				waitHeadersDecided(t, admin, headers)
				proxy.SetDelay(lateDelay)
			})
		}
		proxy.SetDelay(0)
		rec := late.record(t, i+1)
		waitDecisions(t, phase, admin, "late", decided+1)
		// Redis answered every call within read_timeout: nothing here is
		// a store failure. Wait for the breaker anyway, so a tripped one
		// is reported below and the charges can still be read.
		storeErrs := faultMetric(t, admin, "tokengate_store_errors_total") - errs0
		tripped := waitBreakerClosed(t, admin)
		callsAfter, _ := s.MockCalls()
		prompt, completion := faultTokens(t, admin, "late")
		prompt, completion = prompt-prompt0, completion-completion0
		u := faultUsage(t, admin, "late", key)
		holds := waitNoHolds(t, rds.Addr())

		t.Logf("late at %s: client saw %d %q; front: timed out %v after sending %v, upstream called %v; tokengate charged %d prompt + %d completion, the window holds %d, holds left %v; mock calls %d → %d",
			phase, status, rec.Details, rec.TimedOut, rec.Sent, rec.UpstreamCalled, prompt, completion, u.GetUsedTokens(), holds, callsBefore, callsAfter)
		if status != http.StatusGatewayTimeout || !rec.TimedOut || rec.Details != "ext_proc_error_per-message_timeout_exceeded" {
			t.Errorf("late at %s: %d %s (record %+v), want the front's 504 for a missed message timeout", phase, status, got, rec)
		}
		if last := rec.Sent[len(rec.Sent)-1]; last != phase {
			t.Errorf("late at %s: the last message sent was %s", phase, last)
		}
		if rec.UpstreamCalled || callsAfter != callsBefore {
			t.Errorf("late at %s: the upstream was called (record %v, mock calls %d → %d)", phase, rec.UpstreamCalled, callsBefore, callsAfter)
		}
		want := int64(0)
		if phase == "request_body" {
			want = estimate
		}
		if prompt != want || completion != 0 || u.GetUsedTokens() != want {
			t.Errorf("late at %s: charged %d prompt + %d completion, the window holds %d; want %d + 0, and the window the same (the %d max_tokens released)",
				phase, prompt, completion, u.GetUsedTokens(), want, lateMax)
		}
		if holds != nil {
			t.Errorf("late at %s: reservations left in redis: %v", phase, holds)
		}
		if down := unavailableLines(s.Tokengate.Stderr()[logMark:]); tripped || len(down) > 0 {
			t.Errorf("regression (limiter/fallback/fallback.go Store.result, fed by extproc/processor.go admit): late at %s, Redis answered within its timeouts, yet tokengate took it for down (%v store errors counted; fallback gauge 1 when looked at: %v; log: %q). "+
				"The store is called with the ext_proc stream's context; when Envoy gives up (message timeout) or the client goes, that context is cancelled, go-redis returns \"context canceled\" (while waiting for a pooled or new connection), and Fallback.result counts any error as Redis failing. "+
				"Under on_error: fail_closed the replica then answers 503 and reports NOT_SERVING until the next probe succeeds: one slow or abandoned request takes a healthy replica out. "+
				"Want: a call whose caller's context ended does not count as Redis failing, or the store call runs on a context of its own.",
				phase, storeErrs, tripped, down)
		}
	}
	// The stack itself is fine: the same request through the front of
	// envoy/envoy.yaml (1 s) on a slow Redis is answered.
	proxy.SetDelay(lateFineDelay)
	if r := faultSend(context.Background(), directClient, s.URL, "late-then-fine", body); r.status != http.StatusOK {
		t.Errorf("through the 1 s front with redis %v slow: %d %s, want 200", lateFineDelay, r.status, r.err)
	}
}

// lateFront is a front like the stack's but with another message
// timeout.
type lateFront struct {
	f   *front.Front
	url string
}

func startLateFront(t *testing.T, s *harness.Stack, timeout time.Duration) *lateFront {
	t.Helper()
	filter := proto.Clone(s.Filter).(*extprocv3.ExternalProcessor)
	filter.MessageTimeout = durationpb.New(timeout)
	f, u := harness.StartFront(t, front.Config{
		Filter:      filter,
		ExtProcAddr: s.Tokengate.Field("grpc"),
		Upstream:    "http://" + s.Mock.Field("http"),
		BufferLimit: harness.BufferLimit(s.Bootstrap),
	})
	return &lateFront{f: f, url: u}
}

// record waits for the front's n-th request record.
func (l *lateFront) record(t *testing.T, n int) front.RequestStats {
	t.Helper()
	recs, err := l.f.WaitCompleted(n, faultSettleWait)
	if err != nil {
		t.Fatal(err)
	}
	return recs[n-1]
}

// lateSend posts body to base with key and returns the status and body
// answered; when beforeBody is set, the body is only sent once it
// returns, as a slow client's would be.
func lateSend(t *testing.T, base, key string, body []byte, beforeBody func()) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/chat/completions", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	answered := make(chan answer, 1)
	go func() {
		r, err := directClient.Do(req)
		a := answer{err: err}
		if err == nil {
			a.status = r.StatusCode
			a.body, a.err = io.ReadAll(r.Body)
			r.Body.Close()
		}
		answered <- a
	}()
	if beforeBody != nil {
		beforeBody()
	}
	if _, err := pw.Write(body); err != nil {
		t.Fatalf("%s: sending the body: %v", key, err)
	}
	pw.Close()
	timer := time.NewTimer(chatTimeout)
	defer timer.Stop()
	select {
	case a := <-answered:
		if a.err != nil {
			t.Fatalf("%s: %v", key, a.err)
		}
		return a.status, a.body
	case <-timer.C:
		t.Fatalf("%s: no answer within %v", key, chatTimeout)
	}
	return 0, nil
}

// waitHeadersDecided waits until tokengate has answered more than before
// request_headers messages: the request in flight's.
func waitHeadersDecided(t *testing.T, admin string, before float64) {
	t.Helper()
	_, err := harness.PollAll(1, faultSettleWait, func(int) (bool, string) {
		return headersDecided(t, admin) > before, ""
	})
	if err != nil {
		t.Fatalf("the request's headers were not decided: %v", err)
	}
}

func headersDecided(t *testing.T, admin string) float64 {
	t.Helper()
	return faultMetric(t, admin, "tokengate_decision_duration_seconds_count", "phase", "request_headers")
}

// waitBreakerClosed waits until tokengate on admin takes its Redis store
// for up (fallback gauge 0) and reports whether it found it down first.
func waitBreakerClosed(t *testing.T, admin string) bool {
	t.Helper()
	down := faultMetric(t, admin, "tokengate_store_fallback") != 0
	if _, err := harness.PollAll(1, faultStateTimeout, func(int) (bool, string) {
		return faultMetric(t, admin, "tokengate_store_fallback") == 0, ""
	}); err != nil {
		t.Fatalf("the fallback gauge stays 1 with redis up: %v", err)
	}
	return down
}

// unavailableLines returns the log lines saying the Redis store is
// unavailable.
func unavailableLines(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "redis store unavailable") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}
