package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
)

// The fault suite (issue 9): each fault is made for real (a process
// killed, a disk filled, a link slowed, a stream cut, a reply late) in
// the real binaries, and each test logs what the client saw, what was
// charged, and what the store holds once the fault is over. The bbolt
// kill and Redis killed or frozen under each on_error are
// crash_test.go, redis_faults_test.go and redis_freeze_test.go.

// tokengate killed with SIGKILL under load on the Redis store: every
// charge is in Redis the moment it is made, so a restart loses nothing,
// and the reservations the dead process held expire with hold_ttl.
const (
	kill9Key     = "kill9-key"
	kill9HoldTTL = 2 * time.Second
	kill9Clients = 4
	// kill9Latency is the mock's answer time: every request holds its
	// reservation in Redis at least that long, so a kill during the load
	// always finds requests in flight.
	kill9Latency   = 150 * time.Millisecond
	kill9MaxTokens = 40
	// answered before the kill: about 2.5 s of load, so that most answers
	// are older than settleLossWindow and must be charged.
	kill9Answers = 60
	kill9After   = 10 // sent through the restarted process
	// kill9Slack is how much later than hold_ttl after the kill a hold may
	// still be counted: the restart, the poll's period and an admin call's
	// round trip, on a loaded machine. Where each hold expires is checked
	// exactly, in Redis's own clock, at the kill.
	kill9Slack = 1500 * time.Millisecond
)

func kill9Config(redisAddr string) string {
	// fail_closed: were Redis to fail, the load would see 503s rather than
	// charges going quietly to a local counter this test cannot read. The
	// read timeout is generous: this test is about the kill, and a loaded
	// two-core machine can hold a loopback reply past the default 50 ms.
	return fmt.Sprintf(`store:
  backend: redis
  redis: {addrs: [%q], clock: server, hold_ttl: %v, dial_timeout: 500ms, read_timeout: 500ms, write_timeout: 500ms, on_error: fail_closed, retry_interval: 100ms}
policies:
- name: kill9
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  token_quota: 1000000000
  token_quota_period: monthly
  reserve_completion: max_tokens
`, redisAddr, kill9HoldTTL)
}

func TestFaultKillRedisStoreUnderLoad(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	rds := harness.StartRedis(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: kill9Config(rds.Addr()),
		MockArgs: []string{"--latency", kill9Latency.String()}})
	body := faultChatBody(t, "Count the tokens of the killed replica.", kill9MaxTokens, false)
	hdr := []string{"x-mock-completion-tokens", strconv.Itoa(kill9MaxTokens)}

	// Every request of the run is this one, so each costs the same.
	first := faultSend(context.Background(), directClient, s.URL, kill9Key, body, hdr...)
	if first.status != http.StatusOK || first.total <= 0 {
		t.Fatalf("first request: %d %s, total %d", first.status, first.err, first.total)
	}
	cost := first.total

	ld := startFaultLoad(t, kill9Clients, s.URL, kill9Key, body, hdr...)
	ld.waitAnswers(t, "load before the kill", http.StatusOK, kill9Answers, 10*time.Second)
	if _, err := harness.PollAll(1, 5*time.Second, func(int) (bool, string) {
		return len(readRedis(t, rds.Addr()).holds) > 0, ""
	}); err != nil {
		t.Fatalf("no reservation held in redis during the load: %v", err)
	}
	storeErrs := faultMetric(t, s.Tokengate.Field("admin"), "tokengate_store_errors_total")
	killAt := s.KillTokengate()
	// Nothing writes to Redis from here until the restart: this is what
	// the dead process left.
	atKill := readRedis(t, rds.Addr())
	replies := ld.stop()
	calls, _ := s.MockCalls()

	answered := int64(1) // the first request
	var cutAtKill int
	var before []faultReply
	// Settled behind the response, a charge reaches Redis moments after
	// its answer: the kill may take those of the last answers with it
	// (README, "The Redis store"). Every answer older than the loss
	// window must be charged.
	var answeredEarly int64 = 1
	for _, r := range replies {
		if r.status == http.StatusOK && r.end.Before(killAt.Add(-settleLossWindow)) {
			answeredEarly++
		}
		switch {
		case r.status == http.StatusOK:
			answered++
			if r.total != cost {
				t.Errorf("an answer used %d tokens, want %d like every request of the run", r.total, cost)
			}
		case r.end.Before(killAt):
			before = append(before, r)
		case r.start.Before(killAt):
			cutAtKill++ // in flight at the kill
		}
	}
	t.Logf("kill -9 under load: clients saw %v (%d in flight at the kill, cut; %v store errors before it); redis at the kill: window %d, quota %d, %d holds of %d tokens; the mock served %d calls",
		faultTally(replies), cutAtKill, storeErrs, atKill.window, atKill.quota, len(atKill.holds), atKill.holdTokens, calls)
	if len(before) > 0 {
		t.Errorf("%d requests failed before the kill (%v): the load was not healthy before the fault", len(before), faultTally(before))
	}

	// Charged: every answer older than the loss window, and a request
	// cut by the kill may have been settled too (after its upstream
	// answer, before the client got it) — never twice, so never more
	// charges than upstream calls.
	if atKill.quota%cost != 0 {
		t.Errorf("quota used %d is not a whole number of %d-token requests", atKill.quota, cost)
	}
	settled := atKill.quota / cost
	t.Logf("charges lost with the kill: %d of %d answers (%d answered more than %v before it)",
		max(answered-settled, 0), answered, answeredEarly, settleLossWindow)
	if settled < answeredEarly || settled > answered+int64(cutAtKill) || settled > int64(calls) {
		t.Errorf("redis charged %d requests; want at least the %d answered more than %v before the kill, at most the %d answered plus the %d cut at the kill, and at most the %d upstream calls",
			settled, answeredEarly, settleLossWindow, answered, cutAtKill, calls)
	}
	if atKill.window != atKill.quota {
		t.Errorf("window %d ≠ quota %d: every settle charges both", atKill.window, atKill.quota)
	}
	// Held: the dead process's requests in flight, and those answered
	// whose settles were still queued behind their answers (each of
	// those an answer not charged), each at most hold_ttl.
	unsettled := max(answered-settled, 0)
	if len(atKill.holds) == 0 || int64(len(atKill.holds)) > kill9Clients+unsettled {
		t.Fatalf("%d holds in redis at the kill, want 1 to %d (one per client in flight, one per answer not charged yet): not a kill under load", len(atKill.holds), kill9Clients+unsettled)
	}
	if left := atKill.latestExpiry.Sub(atKill.now); left > kill9HoldTTL {
		t.Errorf("a hold of the killed process expires %v after the kill, past hold_ttl %v", left, kill9HoldTTL)
	}

	s.StartTokengate()
	admin := s.Tokengate.Field("admin")
	// Both budgets read charged plus held: at once, the dead process's
	// holds may still count; once they expire, only the charges.
	u := faultUsage(t, admin, "kill9", kill9Key)
	firstUsed, firstQuota := u.GetUsedTokens(), u.GetQuotaUsedTokens()
	if firstUsed < atKill.window || firstUsed > atKill.window+atKill.holdTokens ||
		firstQuota < atKill.quota || firstQuota > atKill.quota+atKill.holdTokens {
		t.Errorf("after the restart: window %d, quota %d used; want the %d and %d redis had at the kill, plus at most the %d held: the shared budget moved",
			firstUsed, firstQuota, atKill.window, atKill.quota, atKill.holdTokens)
	}
	var used, quota int64
	_, err := harness.PollAll(1, time.Until(killAt.Add(kill9HoldTTL+kill9Slack)), func(int) (bool, string) {
		u := faultUsage(t, admin, "kill9", kill9Key)
		used, quota = u.GetUsedTokens(), u.GetQuotaUsedTokens()
		return used == atKill.window && quota == atKill.quota, ""
	})
	heldFor := time.Since(killAt)
	if err != nil {
		t.Fatalf("window %d, quota %d used %v after the kill, want the %d and %d charged: the dead process's holds outlive hold_ttl %v",
			used, quota, heldFor.Round(time.Millisecond), atKill.window, atKill.quota, kill9HoldTTL)
	}

	for i := range kill9After {
		r := faultSend(context.Background(), directClient, s.URL, kill9Key, body, hdr...)
		if r.status != http.StatusOK || r.total != cost {
			t.Fatalf("request %d after the restart: %d %s, total %d (want 200, %d)", i, r.status, r.err, r.total, cost)
		}
	}
	u = faultUsage(t, admin, "kill9", kill9Key)
	after := readRedis(t, rds.Addr())
	t.Logf("after the restart: window %d, quota %d used at first look (charged %d + held %d); the holds expired %v after the kill (hold_ttl %v) and were no longer counted when looked at %v after it: window %d, quota %d; %d more requests → window %d, quota %d, holds left %v",
		firstUsed, firstQuota, atKill.window, atKill.holdTokens, atKill.latestExpiry.Sub(atKill.now).Round(time.Millisecond), kill9HoldTTL,
		heldFor.Round(time.Millisecond), used, quota, kill9After, u.GetUsedTokens(), u.GetQuotaUsedTokens(), after.holds)
	want := atKill.quota + kill9After*cost
	if u.GetQuotaUsedTokens() != want || u.GetUsedTokens() != want {
		t.Errorf("window %d, quota %d after %d more requests, want both %d (%d + %d × %d): a charge lost or doubled",
			u.GetUsedTokens(), u.GetQuotaUsedTokens(), kill9After, want, atKill.quota, kill9After, cost)
	}
	if len(after.holds) != 0 && !after.latestExpiry.Before(after.now) {
		t.Errorf("holds left in redis with nothing in flight: %v", after.holds)
	}
}
