package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/tokenize"
)

// biReplyTimeout bounds the wait for one raw reply: Envoy's would be the
// message timeout (1 s in envoy.yaml).
const biReplyTimeout = 2 * time.Second

// biUsageBody is a buffered chat completion answer reporting total tokens.
func biUsageBody(total int) []byte {
	return fmt.Appendf(nil, `{"id":"chatcmpl-raw","object":"chat.completion","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		total/2, total-total/2, total)
}

// TestBadInputRawGRPC speaks ext_proc to tokengate directly, in orders
// Envoy never uses: messages before the request headers, a second request
// on one stream, trailers, answers after the settlement, chunks split
// inside characters. Every message must get a reply of its own kind, and
// once the stream ends each key's window must hold exactly what one
// request should cost: no double reservation, no hold left behind.
func TestBadInputRawGRPC(t *testing.T) {
	r := startBadInput(t)
	c := harness.DialRawProcess(t, r.Tokengate.Field("grpc"))
	est := biPrompt()
	chat := biChat(t, nil)
	stream := biChat(t, map[string]any{"stream": true})
	hdrs := func(key string) *extprocsvc.ProcessingRequest {
		return harness.RawRequestHeaders(biStrictPath, "api-key", key)
	}
	body := func(b []byte) *extprocsvc.ProcessingRequest { return harness.RawRequestBody(b, true) }
	json200 := harness.RawResponseHeaders(200, "application/json")
	sse200 := harness.RawResponseHeaders(200, "text/event-stream")
	usage := func(total int) *extprocsvc.ProcessingRequest {
		return harness.RawResponseBody(biUsageBody(total), true)
	}

	splitText := []string{"Paris — ", "la Ville Lumière, ", "東京ではなく", " 🗼🥐"}
	badText := []string{"caf\xc3", " \xff\xfe ", "half \xe6\x97", " and \xf0\x9f\x97"}
	pieces := func(contents []string, n int) []*extprocsvc.ProcessingRequest {
		var out []*extprocsvc.ProcessingRequest
		for _, p := range biSplit(biSSE(contents...), n) {
			out = append(out, harness.RawResponseBody(p, false))
		}
		return append(out, harness.RawResponseBody(nil, true))
	}
	cut := harness.RawResponseBody([]byte(`data: {"choices":[{"delta":{"content":"Hello there, wor"}}]}`+"\n\n"), false)

	noHeaders := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocsvc.HttpHeaders{}}}
	badStatus := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocsvc.HttpHeaders{Headers: harness.RawHeaders(":status", "two hundred", "content-type", "application/json")},
	}}
	allowed := biAllowedOnce("strict")

	tests := []struct {
		name  string
		steps []*extprocsvc.ProcessingRequest
		// holding is what keys hold before the stream ends; charged what
		// they hold after.
		holding, charged map[string]int64
		reset            bool // end with a reset (client gone) instead of a clean close
		// lenient accepts the stream ending with a status instead of a
		// reply: for a message that is not one.
		lenient bool
		moves   []biMove
	}{
		{
			name:    "empty message",
			steps:   []*extprocsvc.ProcessingRequest{{}},
			lenient: true,
			// Timed as a message of no known phase, before it is refused.
			moves: []biMove{{name: "tokengate_decision_duration_seconds_count", labels: []string{"phase", "other"}, by: 1}},
		},
		{
			name:  "request headers with no header at all",
			steps: []*extprocsvc.ProcessingRequest{noHeaders},
			moves: []biMove{biPassedOnce},
		},
		{
			name:    "response body before any request headers",
			steps:   []*extprocsvc.ProcessingRequest{usage(50), json200, hdrs("raw-resp-first"), body(chat)},
			holding: map[string]int64{"raw-resp-first": est + biStrictReserve},
			charged: map[string]int64{"raw-resp-first": est}, moves: []biMove{allowed},
		},
		{
			name:    "streamed response before any request headers",
			steps:   []*extprocsvc.ProcessingRequest{sse200, cut, hdrs("raw-sse-first")},
			charged: map[string]int64{"raw-sse-first": 0}, moves: []biMove{allowed},
		},
		{
			name:    "request body before request headers",
			steps:   []*extprocsvc.ProcessingRequest{body(chat), hdrs("raw-body-first")},
			charged: map[string]int64{"raw-body-first": 0}, moves: []biMove{allowed},
		},
		{
			name: "trailers in both directions",
			steps: []*extprocsvc.ProcessingRequest{hdrs("raw-trailers"), harness.RawTrailers(true), body(chat),
				json200, harness.RawTrailers(false), usage(50)},
			charged: map[string]int64{"raw-trailers": 50}, moves: []biMove{allowed},
		},
		{
			name:    "second request body after end_of_stream",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-body-twice"), body(chat), body(chat)},
			holding: map[string]int64{"raw-body-twice": est + biStrictReserve},
			charged: map[string]int64{"raw-body-twice": est}, moves: []biMove{allowed},
		},
		{
			name:    "second request headers and body, same key",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-twice"), body(chat), hdrs("raw-twice"), body(chat)},
			holding: map[string]int64{"raw-twice": est + biStrictReserve},
			charged: map[string]int64{"raw-twice": est}, moves: []biMove{allowed},
		},
		{
			name:    "second request headers, another key",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-first-key"), body(chat), hdrs("raw-second-key"), body(chat)},
			holding: map[string]int64{"raw-first-key": est + biStrictReserve, "raw-second-key": 0},
			charged: map[string]int64{"raw-first-key": est, "raw-second-key": 0}, moves: []biMove{allowed},
		},
		{
			name:    "request body that never ends",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-endless"), harness.RawRequestBody(chat[:10], false), harness.RawRequestBody(chat[10:], false)},
			charged: map[string]int64{"raw-endless": 0}, moves: []biMove{allowed},
		},
		{
			name: "answers after the settlement",
			steps: []*extprocsvc.ProcessingRequest{hdrs("raw-after-settle"), body(chat), json200, usage(50),
				usage(70), json200, usage(90)},
			charged: map[string]int64{"raw-after-settle": 50}, moves: []biMove{allowed},
		},
		{
			name:    "request body after the settlement",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-body-after"), body(chat), json200, usage(50), body(chat)},
			holding: map[string]int64{"raw-body-after": 50},
			charged: map[string]int64{"raw-body-after": 50}, moves: []biMove{allowed},
		},
		{
			name:    ":status that is not a number",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-bad-status"), body(chat), badStatus, usage(50)},
			charged: map[string]int64{"raw-bad-status": 50}, moves: []biMove{allowed},
		},
		{
			name:    "reset mid-stream",
			steps:   []*extprocsvc.ProcessingRequest{hdrs("raw-reset"), body(stream), sse200, cut},
			reset:   true,
			charged: map[string]int64{"raw-reset": est + int64(tokenize.Text("gpt-4o", "Hello there, wor"))}, moves: []biMove{allowed},
		},
		{
			name:    "multi-byte characters split across response_body messages",
			steps:   append([]*extprocsvc.ProcessingRequest{hdrs("raw-split"), body(stream), sse200}, pieces(splitText, 5)...),
			charged: map[string]int64{"raw-split": est + int64(tokenize.Text("gpt-4o", biSSEText(t, splitText...)))}, moves: []biMove{allowed},
		},
		{
			name:    "invalid UTF-8 across response_body messages",
			steps:   append([]*extprocsvc.ProcessingRequest{hdrs("raw-bad-utf8"), body(stream), sse200}, pieces(badText, 3)...),
			charged: map[string]int64{"raw-bad-utf8": est + int64(tokenize.Text("gpt-4o", biSSEText(t, badText...)))}, moves: []biMove{allowed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := make([]float64, len(tt.moves))
			for i, m := range tt.moves {
				before[i] = r.metric(t, m.name, m.labels...)
			}
			s := c.Open(t)
			ended := false
			for i, msg := range tt.steps {
				sent := harness.RawRequestKind(msg)
				reply, err := s.Exchange(msg, biReplyTimeout)
				switch {
				case err != nil && tt.lenient && errors.Is(err, harness.ErrStreamEnded):
					// A message that is none of the kinds: ending the
					// stream with a status is a clear answer, as long as
					// it is not a recovered panic's Internal.
					if strings.Contains(err.Error(), "Internal") || strings.Contains(err.Error(), "Unknown") {
						t.Errorf("step %d (%s): %v, want a reply or a deliberate status", i+1, sent, err)
					}
					ended = true
				case err != nil:
					t.Fatalf("step %d (%s): %v, want a %s reply", i+1, sent, err, sent)
				case tt.lenient:
				case harness.RawReplyKind(reply) != sent:
					t.Errorf("step %d (%s): got a %s reply, want %s", i+1, sent, harness.RawReplyKind(reply), sent)
				}
				if ended {
					break
				}
			}
			for key, want := range tt.holding {
				if got := r.used(t, "strict", key); got != want {
					t.Errorf("before the end, key %s holds %d, want %d", key, got, want)
				}
			}
			switch {
			case ended:
			case tt.reset:
				s.Reset()
			default:
				if err := s.Close(biReplyTimeout); err != nil {
					t.Errorf("closing the stream: %v, want tokengate to end it with OK", err)
				}
			}
			// A reset is settled when tokengate notices it, so that is
			// polled for. A clean close returns once tokengate ended the
			// stream, after its settlement: the first look must be right.
			for key, want := range tt.charged {
				if tt.reset {
					r.waitUsed(t, "strict", key, want)
				} else if got := r.used(t, "strict", key); got != want {
					t.Errorf("after the end, key %s holds %d, want %d", key, got, want)
				}
			}
			for i, m := range tt.moves {
				if got := r.metric(t, m.name, m.labels...) - before[i]; got != m.by {
					t.Errorf("%v moved by %v, want %v", m, got, m.by)
				}
			}
		})
	}
}
