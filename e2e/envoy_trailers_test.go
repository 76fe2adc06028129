package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// evTrailersConfig: a model's own policy (gpt-4o-mini, tiny), a strict
// policy on the Azure-style paths, and an open one estimating prompts
// for the rest.
const evTrailersConfig = `store: {backend: memory}
policies:
- name: mini
  match: {models: [gpt-4o-mini]}
  counter_key: {header: [api-key]}
  tokens_per_minute: 50
  estimate_prompt_tokens: true
- name: strict
  match: {path_prefix: /openai/}
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000
  estimate_prompt_tokens: true
  reserve_completion: max_tokens
- name: open
  counter_key: {header: [api-key]}
  tokens_per_minute: 1000000
  estimate_prompt_tokens: true
`

// A request whose body ends in HTTP/2 trailers gets what the same request
// without them gets: the prompt estimate, the strict reservation, the
// model's policy, usage injection into a stream. Envoy sends such a body
// (trailers SKIP, body BUFFERED) without end_of_stream and nothing after
// it when the trailers come after the headers reply; a processor that
// waits for end_of_stream skips the whole body phase.
func TestTrailersChargedAlike(t *testing.T) {
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: evTrailersConfig, FakeClock: labClock})
	mock := "http://" + s.Mock.Field("http")
	sendTrailers := proto.Clone(s.Filter).(*extprocv3.ExternalProcessor)
	sendTrailers.ProcessingMode.RequestTrailerMode = extprocv3.ProcessingMode_SEND

	type variant struct {
		name     string
		envoy    front.EnvoyVersion
		filter   *extprocv3.ExternalProcessor // nil: envoy.yaml's
		client   func(*evBodyGates) *http.Client
		gated    bool // the body follows the headers reply: end_of_stream false
		trailers bool
	}
	variants := []variant{
		{"http1.1 without trailers", front.EnvoyPinned, nil, func(*evBodyGates) *http.Client { return evPlainClient }, false, false},
		{"h2 without trailers", front.EnvoyPinned, nil, func(*evBodyGates) *http.Client { return harness.H2CClient(30 * time.Second) }, false, false},
		{"h2 trailers after the headers reply", front.EnvoyPinned, nil, func(g *evBodyGates) *http.Client { return evNewTrailerClient(g, 30*time.Second) }, true, true},
		{"h2 trailers as they come", front.EnvoyPinned, nil, func(*evBodyGates) *http.Client {
			return &http.Client{Transport: &evTrailerTransport{h2: harness.H2CClient(0).Transport}, Timeout: 30 * time.Second}
		}, false, true},
		{"h2 trailers after the headers reply, sent (trailer mode SEND)", front.EnvoyPinned, sendTrailers,
			func(g *evBodyGates) *http.Client { return evNewTrailerClient(g, 30*time.Second) }, true, true},
		{"h2 trailers after the headers reply, Envoy 1.37", front.Envoy137, nil,
			func(g *evBodyGates) *http.Client { return evNewTrailerClient(g, 30*time.Second) }, true, true},
		{"h2 trailers after the headers reply, Envoy 1.33", front.Envoy133, nil,
			func(g *evBodyGates) *http.Client { return evNewTrailerClient(g, 30*time.Second) }, true, true},
	}

	const words = 100 // a 107-token prompt
	chat := func(model string, extra map[string]any) []byte {
		return chatJSON(t, model, []harness.Message{{Role: "user", Content: evOneTokenWords(words)}}, extra)
	}
	// counted is what the estimate row charged under each variant: the
	// same request everywhere, so the same charge.
	counted := map[string]float64{}
	for vi, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if v.envoy == front.Envoy133 {
				// Envoy up to 1.33 sends no protocol_config, and tokengate
				// learns that a body is BUFFERED (one message, whatever
				// its end_of_stream) from it alone: a body ending in
				// trailers then skips the body phase. Remove this skip
				// once tokengate assumes BUFFERED without protocol_config.
				t.Skip("known gap: without protocol_config (Envoy ≤ 1.33) tokengate waits for an end_of_stream that never comes")
			}
			gates := evNewBodyGates()
			f, url := evStartFront(t, s, mock, func(c *front.Config) {
				c.Envoy = v.envoy
				c.OnReply = gates.onReply
				if v.filter != nil {
					c.Filter = v.filter
				}
			})
			client := v.client(gates)
			key := func(row string) string { return fmt.Sprintf("trailers-%d-%s", vi, row) }
			n := 0
			record := func() front.RequestStats {
				t.Helper()
				n++
				recs, err := f.WaitCompleted(n, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				rec := recs[n-1]
				if rec.RequestTrailers != v.trailers {
					t.Errorf("%s %s: trailers kept %v, want %v", rec.Method, rec.Path, rec.RequestTrailers, v.trailers)
				}
				for _, b := range rec.Bodies {
					if v.gated && b.Phase == "request_body" && b.EndOfStream {
						t.Errorf("%s: request_body with end_of_stream: the body did not come after the headers reply", rec.Path)
					}
				}
				if rec.TimedOut || rec.Spurious > 0 || rec.GRPCError != "" {
					t.Errorf("protocol trouble: %+v", rec)
				}
				return rec
			}

			// Strict mode: a first request leaves 1000-107-400 = 493 tokens
			// of the window; the second's prompt (107) and max_tokens (800)
			// do not fit in them: refused before the upstream. Without the
			// body phase, only the headers' check (the window is not spent)
			// would run, and it would pass.
			resp, body := evPost(t, client, url, "/openai/v1/chat/completions", chat("gpt-4o", map[string]any{"max_tokens": 500}),
				"api-key", key("strict"), "x-mock-completion-tokens", "400")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("strict, first request: %d %s", resp.StatusCode, body)
			}
			record()
			resp, body = evPost(t, client, url, "/openai/v1/chat/completions", chat("gpt-4o", map[string]any{"max_tokens": 800}), "api-key", key("strict"))
			wantJSONError(t, "strict reservation", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
			if rec := record(); rec.ImmediatePhase != "request_body" || rec.UpstreamCalled {
				t.Errorf("strict reservation: refused at %q, upstream called %v; want a refusal at the request body", rec.ImmediatePhase, rec.UpstreamCalled)
			}

			// The model's policy: gpt-4o-mini's window (50) cannot take the
			// 107-token prompt.
			resp, body = evPost(t, client, url, "/v1/chat/completions", chat("gpt-4o-mini", nil), "api-key", key("mini"))
			wantJSONError(t, "model policy", resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
			if rec := record(); rec.ImmediatePhase != "request_body" {
				t.Errorf("model policy: refused at %q, want the request body", rec.ImmediatePhase)
			}

			// The estimate: an answer without usage is charged the prompt
			// estimate plus the completion counted.
			before, beforeSettled := evReadCharges(t, s, "open"), evSettled(t, s, "open")
			resp, body = evPost(t, client, url, "/v1/chat/completions", chat("gpt-4o", nil),
				"api-key", key("estimate"), "x-mock-no-usage", "true", "x-mock-completion-tokens", "12")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("estimate: %d %s", resp.StatusCode, body)
			}
			record()
			evWaitSettled(t, s, "open", beforeSettled+1)
			d := evReadCharges(t, s, "open").delta(before)
			counted[v.name] = d["counted"]
			if d["counted"] < words+7 || len(d) != 1 {
				t.Errorf("estimate: charged %v, want the prompt estimate (%d) and the completion under source counted", d, words+7)
			}

			// Usage injection: a stream that did not ask for usage is
			// rewritten to ask; it then ends with the upstream's usage,
			// which is what is charged.
			before, beforeSettled = evReadCharges(t, s, "open"), evSettled(t, s, "open")
			resp, body = evPost(t, client, url, "/v1/chat/completions", chat("gpt-4o", map[string]any{"stream": true}),
				"api-key", key("stream"), "x-mock-completion-tokens", "9")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("stream: %d %s", resp.StatusCode, body)
			}
			record()
			usage := evStreamUsage(t, body)
			if usage == nil {
				t.Fatalf("stream: no usage chunk in %q: stream_options.include_usage was not injected", body)
			}
			evWaitSettled(t, s, "open", beforeSettled+1)
			d = evReadCharges(t, s, "open").delta(before)
			if d["reported"] != float64(usage.total()) || len(d) != 1 {
				t.Errorf("stream: charged %v, want the reported usage %+v", d, usage)
			}
		})
	}
	control := counted[variants[0].name]
	for name, c := range counted {
		if c != control {
			t.Errorf("%s: the estimate row charged %g, the HTTP/1.1 request without trailers %g", name, c, control)
		}
	}
}

type evChatUsage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Total      int `json:"total_tokens"`
}

func (u *evChatUsage) total() int { return u.Total }

// evStreamUsage finds the usage an event stream ended with (nil: none).
func evStreamUsage(t *testing.T, body []byte) *evChatUsage {
	t.Helper()
	var last *evChatUsage
	for _, ev := range strings.Split(string(body), "\n\n") {
		data, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Usage *evChatUsage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if chunk.Usage != nil && chunk.Usage.Total > 0 {
			last = chunk.Usage
		}
	}
	return last
}
