package extproc

import (
	"strings"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/internal/config"
)

// A request or response that ends in trailers reaches the processor as a
// body with end_of_stream false: in a buffered mode (Envoy says which in
// the first message's protocol_config) that one message is the whole body,
// and with trailers SEND a trailers message ends it. Either way the body
// phase must run as for a body without trailers.

func withProtocol(m *extprocv3.ProcessingRequest, mode filterv3.ProcessingMode_BodySendMode) *extprocv3.ProcessingRequest {
	m.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: mode, ResponseBodyMode: mode}
	return m
}

func openBody(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: false}}}
}

func openRespBody(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: false}}}
}

var (
	reqTrailers  = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
	respTrailers = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}
)

func TestTrailersDoNotSkipTheBodyPhase(t *testing.T) {
	prompt := labPrompt(t)
	strict := "{name: lab, tokens_per_minute: 100000, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"
	streamBody := strings.Replace(withMax(300), `"model"`, `"stream":true,"model"`, 1)

	t.Run("buffered, trailers skipped", func(t *testing.T) {
		e := newEnv(t, parsePolicy(t, strict))
		p := &processor{s: e.srv, ctx: t.Context()}
		p.handle(withProtocol(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), filterv3.ProcessingMode_BUFFERED))
		r := p.handle(openBody(streamBody))
		if got := e.used(t, "lab", "k"); got != prompt+300 {
			t.Errorf("strict reservation %d, want prompt %d + 300", got, prompt)
		}
		rewritten := r.GetRequestBody().GetResponse().GetBodyMutation().GetBody()
		if req, err := llm.ParseRequest(llm.ChatCompletions, rewritten); err != nil || !req.IncludeUsage {
			t.Errorf("the stream was not asked for usage: %s (%v)", rewritten, err)
		}
	})

	t.Run("buffered, refused like a body without trailers", func(t *testing.T) {
		e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100, reserve_completion: max_tokens, counter_key: {header: [api-key]}}"))
		p := &processor{s: e.srv, ctx: t.Context()}
		p.handle(withProtocol(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), filterv3.ProcessingMode_BUFFERED))
		if r := p.handle(openBody(withMax(50))); r.GetImmediateResponse() != nil {
			t.Fatalf("first strict request refused: %v", r)
		}
		// The first holds its prompt + 50 of the 100: a second cannot fit.
		q := &processor{s: e.srv, ctx: t.Context()}
		q.handle(withProtocol(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), filterv3.ProcessingMode_BUFFERED))
		if r := q.handle(openBody(withMax(50))); r.GetImmediateResponse().GetStatus().GetCode() != 429 {
			t.Errorf("second strict request with trailers: %v, want 429", r)
		}
	})

	t.Run("streamed body ended by trailers", func(t *testing.T) {
		e := newEnv(t, parsePolicy(t, strict))
		p := &processor{s: e.srv, ctx: t.Context()}
		p.handle(withProtocol(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), filterv3.ProcessingMode_STREAMED))
		half := len(streamBody) / 2
		p.handle(openBody(streamBody[:half]))
		if got := e.used(t, "lab", "k"); got != 0 {
			t.Fatalf("half a body reserved %d", got)
		}
		p.handle(openBody(streamBody[half:]))
		if r := p.handle(reqTrailers); r.GetRequestTrailers() == nil {
			t.Fatalf("trailers answered with %v", r)
		}
		if got := e.used(t, "lab", "k"); got != prompt+300 {
			t.Errorf("strict reservation at the trailers %d, want prompt %d + 300", got, prompt)
		}
	})

	t.Run("model policy at the trailers", func(t *testing.T) {
		pols := []config.Policy{
			parsePolicy(t, "{name: mini, match: {models: [gpt-4o-mini]}, tokens_per_minute: 100000, counter_key: {header: [api-key]}}"),
			parsePolicy(t, "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key]}}"),
		}
		e := newEnv(t, pols...)
		mini := strings.Replace(labBody, `"gpt-4o"`, `"gpt-4o-mini"`, 1)
		e.run(t, withProtocol(reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), filterv3.ProcessingMode_BUFFERED),
			openBody(mini), respHeaders("200", false, "content-type", "application/json"), openRespBody(chatUsage(30, 12)))
		if got := e.used(t, "mini", "k"); got != 42 {
			t.Errorf("the model's policy holds %d, want the 42 reported", got)
		}
		if got := e.used(t, "lab", "k"); got != 0 {
			t.Errorf("the path policy holds %d, want 0", got)
		}
	})

	t.Run("buffered response ended by trailers", func(t *testing.T) {
		e := newEnv(t)
		out := e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"), reqBody(labBody),
			respHeaders("200", false, "content-type", "application/json"), openRespBody(chatUsage(30, 12)), respTrailers)
		if got := e.used(t, "lab", "k"); got != 42 {
			t.Errorf("charged %d, want the 42 reported", got)
		}
		if last := out[len(out)-1]; last.GetResponseTrailers() == nil {
			t.Errorf("trailers answered with %v", last)
		}
	})
}

// A request with no response at all is charged per charge_unanswered,
// with source unanswered either way.
func TestUnansweredRequests(t *testing.T) {
	prompt := labPrompt(t)
	for _, tc := range []struct {
		charge string
		want   int64
	}{{"prompt", prompt}, {"none", 0}} {
		e := newEnv(t, parsePolicy(t, "{name: lab, tokens_per_minute: 100000, counter_key: {header: [api-key]}, charge_unanswered: "+tc.charge+"}"))
		e.run(t, reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "gone"), reqBody(labBody))
		if got := e.used(t, "lab", "gone"); got != tc.want {
			t.Errorf("charge_unanswered %s: charged %d, want %d", tc.charge, got, tc.want)
		}
		found := false
		for _, l := range e.logs.FilterMessage("stream ended before the response did; settled").All() {
			if l.ContextMap()["source"] == "unanswered" {
				found = true
			}
		}
		if !found {
			t.Errorf("charge_unanswered %s: no log line with source unanswered", tc.charge)
		}
	}
}
