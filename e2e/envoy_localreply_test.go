package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/e2e/internal/ports"
)

// evLocalReplyConfig has a policy per charge_unanswered: "prompt" (the
// default) on /v1/, "none" on the Azure-style /openai/ paths.
const evLocalReplyConfig = `store: {backend: memory}
policies:
- name: unanswered-none
  match: {path_prefix: /openai/}
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
  charge_unanswered: none
- name: unanswered-prompt
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
`

// evLocalReplyWords is the prompt's length in one-token words: the request
// is evLocalReplyWords+7 prompt tokens.
const evLocalReplyWords = 40

// evLocalReplyBody is a gpt-4o chat of evLocalReplyWords one-token words.
func evLocalReplyBody(t *testing.T) []byte {
	t.Helper()
	return chatJSON(t, "gpt-4o", []harness.Message{{Role: "user", Content: evOneTokenWords(evLocalReplyWords)}}, nil)
}

// What tokengate charges when Envoy's router answers by itself, per Envoy
// line. Up to 1.33 and from 1.37 the router's reply goes through the
// response phases: tokengate sees a 5xx without usage and charges nothing
// (source none). From 1.34 to 1.36 (skip_ext_proc_on_local_reply) it sees
// its stream close after the request body, no response at all, and charges
// per charge_unanswered (source unanswered): the prompt by default,
// nothing with "none". The client gets the router's reply either way.
func TestLocalRepliesChargedPerEnvoyVersion(t *testing.T) {
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evLocalReplyConfig, FakeClock: labClock})
	prompt := float64(evLocalReplyWords + 7)
	type row struct {
		envoy  front.EnvoyVersion
		reply  string // "unreachable": the upstream refuses connections; "timeout": the route times out
		policy string
		status int     // what the client gets
		source string  // the source the settlement is counted under
		charge float64 // prompt tokens charged
	}
	var rows []row
	for _, reply := range []string{"unreachable", "timeout"} {
		status := map[string]int{"unreachable": http.StatusServiceUnavailable, "timeout": http.StatusGatewayTimeout}[reply]
		rows = append(rows,
			row{front.Envoy133, reply, "unanswered-prompt", status, "none", 0},
			row{front.Envoy134, reply, "unanswered-prompt", status, "unanswered", prompt},
			row{front.Envoy134, reply, "unanswered-none", status, "unanswered", 0},
			row{front.Envoy137, reply, "unanswered-prompt", status, "none", 0},
		)
	}
	dead := "http://" + ports.Dead(t)
	paths := map[string]string{"unanswered-prompt": "/v1/chat/completions", "unanswered-none": "/openai/v1/chat/completions"}
	body := evLocalReplyBody(t)
	for i, r := range rows {
		name := fmt.Sprintf("%s/%s/%s", r.reply, r.envoy, r.policy)
		t.Run(name, func(t *testing.T) {
			upstream := "http://" + s.Mock.Field("http")
			headers := []string{"api-key", fmt.Sprintf("local-reply-%d", i)}
			if r.reply == "unreachable" {
				upstream = dead
			} else {
				headers = append(headers, "x-mock-latency", "5s")
			}
			f, url := evStartFront(t, s, upstream, func(c *front.Config) {
				c.Envoy = r.envoy
				c.RouteTimeout = 300 * time.Millisecond
			})
			before, beforeSettled := evReadCharges(t, s, r.policy), evSettled(t, s, r.policy)
			beforeLog := evSourceLines(s)
			resp, got := evPost(t, evPlainClient, url, paths[r.policy], body, headers...)
			if resp.StatusCode != r.status || !strings.Contains(string(got), "upstream") {
				t.Errorf("client got %d %q, want the router's %d", resp.StatusCode, got, r.status)
			}
			recs, err := f.WaitCompleted(1, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rec := recs[0]
			if rec.RouterReply == "" || rec.LocalReplyProcessed != r.envoy.LocalRepliesReachProcessor() {
				t.Errorf("record %+v: want a router reply, processed: %v", rec, r.envoy.LocalRepliesReachProcessor())
			}
			evWaitSettled(t, s, r.policy, beforeSettled+1)
			d := evReadCharges(t, s, r.policy).delta(before)
			for src, v := range d {
				if src != r.source && v != 0 {
					t.Errorf("charged %g tokens under source %s, want them under %s only (change %v)", v, src, r.source, d)
				}
			}
			if got := d[r.source]; got != r.charge {
				t.Errorf("charged %g prompt tokens under source %q, want %g (change %v)", got, r.source, r.charge, d)
			}
			after := evSourceLines(s)
			if after[r.source] <= beforeLog[r.source] {
				t.Errorf("no new log line says source %q (before %v, after %v)", r.source, beforeLog, after)
			}
			for _, other := range []string{"none", "unanswered"} {
				if other != r.source && after[other] != beforeLog[other] {
					t.Errorf("a log line says source %q, want %q", other, r.source)
				}
			}
		})
	}
}

// evSourceLines counts tokengate's log lines that give a settlement's
// source, by source.
func evSourceLines(s *harness.Stack) map[string]int {
	out := map[string]int{}
	for line := range strings.Lines(s.Tokengate.Stderr()) {
		for _, src := range []string{"none", "unanswered", "reported", "counted", "estimated"} {
			if strings.Contains(line, fmt.Sprintf(`"source": %q`, src)) {
				out[src]++
			}
		}
	}
	return out
}
