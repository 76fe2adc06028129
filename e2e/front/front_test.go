package front

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tokengate/tokengate/e2e/internal/ports"
)

func TestRequestHeadersAsEnvoySendsThem(t *testing.T) {
	s := newStand(t, filterConfig(), passAll, nil)
	resp, _ := s.do(t, "GET", "/v1/models?x=1", "", "Api-Key", "k1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
		t.Errorf("stream end seen by the processor: %v, want Envoy's half-close and reset", err)
	}
	msgs := s.proc.messages(0)
	if got, want := kinds(msgs), "request_headers,response_headers,response_body"; got != want {
		t.Fatalf("messages %s, want %s", got, want)
	}
	rh := msgs[0].GetRequestHeaders()
	if !rh.GetEndOfStream() {
		t.Error("request_headers end_of_stream = false for a GET without body")
	}
	if pc := msgs[0].GetProtocolConfig(); pc.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED {
		t.Errorf("protocol_config %v, want it on the first message", pc)
	}
	if msgs[1].GetProtocolConfig() != nil {
		t.Error("protocol_config repeated after the first message")
	}
	for key, want := range map[string]string{
		":method": "GET", ":path": "/v1/models?x=1", ":scheme": "http",
		":authority": strings.TrimPrefix(s.url, "http://"), "api-key": "k1", "x-forwarded-proto": "http",
	} {
		got, raw := headerOf(rh.GetHeaders(), key)
		if got != want || !raw {
			t.Errorf("header %s = %q (in raw_value: %v), want %q in raw_value", key, got, raw, want)
		}
	}
	if got, _ := headerOf(msgs[1].GetResponseHeaders().GetHeaders(), ":status"); got != "200" {
		t.Errorf("response :status %q, want 200", got)
	}
	st := s.last(t, 1)
	if st.Messages() != 3 || st.Status != 200 || !st.UpstreamCalled || st.StreamLeftOpen {
		t.Errorf("stats %+v", st)
	}
}

func TestHeaderMutation(t *testing.T) {
	reqMut := &extprocsvc.HeaderMutation{
		SetHeaders: []*corev3.HeaderValueOption{
			setHeader("x-new", "1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			setHeader("x-keep", "replaced", corev3.HeaderValueOption_ADD_IF_ABSENT),
			setHeader("x-absent", "no", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			setHeader("x-over", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			{Header: &corev3.HeaderValue{Key: "x-multi", RawValue: []byte("b")}, Append: wrapperspb.Bool(true)},
			{Header: &corev3.HeaderValue{Key: "x-old-style", Value: "v"}},
			setHeader("x-envoy-internal", "no", 0),
			setHeader(":authority", "evil", 0),
			setHeader(":path", "/rewritten", 0),
		},
		RemoveHeaders: []string{"x-drop", ":method"},
	}
	respMut := &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
		setHeader("x-ratelimit-remaining-tokens", "42", 0),
		setHeader(":status", "201", 0),
	}}
	h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		switch {
		case req.GetRequestHeaders() != nil:
			return []*extprocsvc.ProcessingResponse{pass(req, &extprocsvc.CommonResponse{HeaderMutation: reqMut})}
		case req.GetResponseHeaders() != nil:
			return []*extprocsvc.ProcessingResponse{pass(req, &extprocsvc.CommonResponse{HeaderMutation: respMut})}
		}
		return passAll(0, req)
	}
	s := newStand(t, filterConfig(), h, nil)
	resp, _ := s.do(t, "GET", "/orig", "", "x-keep", "kept", "x-over", "old", "x-multi", "a", "x-drop", "gone")
	if resp.StatusCode != 201 || resp.Header.Get("x-ratelimit-remaining-tokens") != "42" {
		t.Errorf("client got %d with remaining %q, want 201 and 42", resp.StatusCode, resp.Header.Get("x-ratelimit-remaining-tokens"))
	}
	calls := s.up.called()
	if len(calls) != 1 {
		t.Fatalf("upstream called %d times, want 1", len(calls))
	}
	got := calls[0]
	// Envoy reads only the deprecated append flag: ADD_IF_ABSENT and
	// OVERWRITE_IF_EXISTS both overwrite-or-add, like an unset append.
	for _, c := range []struct {
		key  string
		want []string
	}{
		{"x-new", []string{"1"}},
		{"x-keep", []string{"replaced"}},
		{"x-absent", []string{"no"}},
		{"x-over", []string{"new"}},
		{"x-multi", []string{"a", "b"}},
		{"x-old-style", []string{"v"}},
		{"x-envoy-internal", nil},
		{"x-drop", nil},
	} {
		if v := got.header.Values(c.key); !slices.Equal(v, c.want) {
			t.Errorf("upstream header %s = %q, want %q", c.key, v, c.want)
		}
	}
	if got.path != "/rewritten" || got.method != "GET" {
		t.Errorf("upstream got %s %s, want GET /rewritten", got.method, got.path)
	}
	st := s.last(t, 1)
	// x-envoy-internal, :authority and the removal of :method are refused.
	if st.RejectedMutations != 3 || st.ValueFieldHeaders != 1 || st.IgnoredAppendActions != 3 {
		t.Errorf("rejected %d (want 3), value-field headers %d (want 1), ignored append actions %d (want 3)",
			st.RejectedMutations, st.ValueFieldHeaders, st.IgnoredAppendActions)
	}
}

// bodyMutator replaces the request body in its body reply, with extra
// header changes.
func bodyMutator(newBody string, hm *extprocsvc.HeaderMutation) handler {
	return func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetRequestBody() != nil {
			return []*extprocsvc.ProcessingResponse{pass(req, &extprocsvc.CommonResponse{
				HeaderMutation: hm,
				BodyMutation:   &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(newBody)}},
			})}
		}
		return passAll(0, req)
	}
}

func TestBodyMutationAndContentLength(t *testing.T) {
	const newBody = `{"stream":true,"stream_options":{"include_usage":true}}`
	tests := []struct {
		name       string
		hm         *extprocsvc.HeaderMutation
		wantStatus int
		wantLen    int64 // content length the upstream saw; -1 chunked
	}{
		{"content-length fixed", &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-length", "55", 0)}}, 200, 55},
		{"content-length removed", &extprocsvc.HeaderMutation{RemoveHeaders: []string{"content-length"}}, 200, -1},
		{"content-length left stale", nil, 500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStand(t, filterConfig(), bodyMutator(newBody, tt.hm), nil)
			resp, _ := s.do(t, "POST", "/v1/chat/completions", `{"stream":true}`, "Content-Type", "application/json")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			msgs := s.proc.messages(0)
			if b := msgs[1].GetRequestBody(); string(b.GetBody()) != `{"stream":true}` || !b.GetEndOfStream() {
				t.Errorf("request_body message %q eos=%v, want the whole body with end_of_stream", b.GetBody(), b.GetEndOfStream())
			}
			calls := s.up.called()
			if tt.wantStatus != 200 {
				st := s.last(t, 1)
				if len(calls) != 0 || !strings.Contains(st.Details, "mismatch between content length") {
					t.Errorf("upstream called %d times, details %q: want no call and a content-length mismatch", len(calls), st.Details)
				}
				return
			}
			if len(calls) != 1 || string(calls[0].body) != newBody || calls[0].contentLength != tt.wantLen {
				t.Fatalf("upstream calls %+v, want one with the new body and length %d", calls, tt.wantLen)
			}
		})
	}
}

func immediate(code typev3.StatusCode, body string, headers ...string) *extprocsvc.ProcessingResponse {
	hm := &extprocsvc.HeaderMutation{}
	for i := 0; i+1 < len(headers); i += 2 {
		hm.SetHeaders = append(hm.SetHeaders, setHeader(headers[i], headers[i+1], 0))
	}
	return &extprocsvc.ProcessingResponse{
		Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: code}, Headers: hm, Body: []byte(body), Details: "test",
		}},
		DynamicMetadata: mustStruct(map[string]any{"tokengate": map[string]any{"decision": "rejected"}}),
	}
}

func TestImmediateResponse(t *testing.T) {
	const body = `{"error":{"code":"rate_limit_exceeded"}}`
	tests := []struct {
		name        string
		at          func(*extprocsvc.ProcessingRequest) bool
		headers     []string
		wantType    string
		wantPhase   string
		wantCalled  bool
		wantUpCalls int
	}{
		{"at request headers", func(r *extprocsvc.ProcessingRequest) bool { return r.GetRequestHeaders() != nil },
			[]string{"content-type", "application/json", "retry-after", "60"}, "application/json", "request_headers", false, 0},
		{"default content type", func(r *extprocsvc.ProcessingRequest) bool { return r.GetRequestHeaders() != nil },
			[]string{"retry-after", "60"}, "text/plain", "request_headers", false, 0},
		{"at request body", func(r *extprocsvc.ProcessingRequest) bool { return r.GetRequestBody() != nil },
			[]string{"content-type", "application/json", "retry-after", "60"}, "application/json", "request_body", false, 0},
		{"at response headers", func(r *extprocsvc.ProcessingRequest) bool { return r.GetResponseHeaders() != nil },
			[]string{"content-type", "application/json", "retry-after", "60"}, "application/json", "response_headers", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
				if tt.at(req) {
					return []*extprocsvc.ProcessingResponse{immediate(typev3.StatusCode_TooManyRequests, body, tt.headers...)}
				}
				return passAll(0, req)
			}
			s := newStand(t, filterConfig(), h, nil)
			resp, got := s.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o"}`)
			if resp.StatusCode != 429 || string(got) != body {
				t.Errorf("client got %d %q, want 429 %q", resp.StatusCode, got, body)
			}
			if ct := resp.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != tt.wantType {
				t.Errorf("content-type %q, want exactly %q", ct, tt.wantType)
			}
			if ra := resp.Header.Values("Retry-After"); len(ra) != 1 || ra[0] != "60" {
				t.Errorf("retry-after %q, want exactly [60]", ra)
			}
			if n := len(s.up.called()); n != tt.wantUpCalls {
				t.Errorf("upstream called %d times, want %d", n, tt.wantUpCalls)
			}
			st := s.last(t, 1)
			if !st.Immediate || st.ImmediatePhase != tt.wantPhase || !st.LocalReply || st.UpstreamCalled != tt.wantCalled {
				t.Errorf("stats %+v", st)
			}
			if d := st.Metadata.GetFields()["tokengate"].GetStructValue().GetFields()["decision"].GetStringValue(); d != "rejected" {
				t.Errorf("metadata decision %q, want rejected (kept from the immediate response)", d)
			}
			if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
				t.Errorf("stream end %v, want Envoy's half-close and reset after an immediate response", err)
			}
		})
	}
}

func TestMessageTimeout(t *testing.T) {
	silentOnHeaders := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() != nil {
			return nil
		}
		return passAll(0, req)
	}
	for _, failOpen := range []bool{false, true} {
		f := filterConfig(func(f *extprocv3.ExternalProcessor) {
			f.MessageTimeout = durationpb.New(50 * time.Millisecond)
			f.FailureModeAllow = failOpen
		})
		s := newStand(t, f, silentOnHeaders, nil)
		resp, _ := s.do(t, "GET", "/v1/models", "")
		st := s.last(t, 1)
		want, wantCalls := 504, 0
		if failOpen {
			want, wantCalls = 200, 1
		}
		if resp.StatusCode != want || len(s.up.called()) != wantCalls || !st.TimedOut || st.FailedOpen != failOpen {
			t.Errorf("failure_mode_allow=%v: status %d, upstream calls %d, stats %+v; want %d and %d calls",
				failOpen, resp.StatusCode, len(s.up.called()), st, want, wantCalls)
		}
		// Envoy closes the stream at once on a timeout (half-close and
		// reset, never graceful): the processor sees it end right away.
		if err := s.proc.waitEnd(t, 0); !closedByFront(err) {
			t.Errorf("failure_mode_allow=%v: stream ended with %v after a timeout, want Envoy's close", failOpen, err)
		}
	}
}

func TestOverrideMessageTimeout(t *testing.T) {
	// The processor asks for more time and never answers: the 504 comes
	// after the extension when it is honoured (within max_message_timeout),
	// after the configured 50 ms otherwise. The line between the two sits
	// at half the extension: only the unextended case is timed from above,
	// and a loaded machine has most of a second to answer it.
	const extension = 2 * time.Second
	h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() != nil {
			extend := &extprocsvc.ProcessingResponse{OverrideMessageTimeout: durationpb.New(extension)}
			return []*extprocsvc.ProcessingResponse{extend}
		}
		return passAll(0, req)
	}
	for _, maxTimeout := range []time.Duration{0, 10 * time.Second} {
		f := filterConfig(func(f *extprocv3.ExternalProcessor) {
			f.MessageTimeout = durationpb.New(50 * time.Millisecond)
			f.MaxMessageTimeout = durationpb.New(maxTimeout)
		})
		s := newStand(t, f, h, nil)
		start := time.Now()
		resp, _ := s.do(t, "GET", "/", "")
		if resp.StatusCode != 504 {
			t.Errorf("max_message_timeout %v: status %d, want 504 (no reply ever comes)", maxTimeout, resp.StatusCode)
		}
		took := time.Since(start)
		extended := took > extension/2
		if extended != (maxTimeout > 0) {
			t.Errorf("max_message_timeout %v: timer extended = %v (504 after %v)", maxTimeout, extended, took)
		}
	}
}

func TestProcessorUnreachable(t *testing.T) {
	dead := ports.Dead(t)
	for _, failOpen := range []bool{false, true} {
		up := startUpstream(t, nil)
		fr, err := New(Config{
			Filter:      filterConfig(func(f *extprocv3.ExternalProcessor) { f.FailureModeAllow = failOpen }),
			ExtProcAddr: dead, Upstream: up.url,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fr.Close() })
		url, err := fr.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &stand{front: fr, url: url, up: up}
		resp, _ := s.do(t, "GET", "/v1/models", "")
		st := s.last(t, 1)
		want := 500
		if failOpen {
			want = 200
		}
		if resp.StatusCode != want || st.GRPCError == "" || st.FailedOpen != failOpen {
			t.Errorf("failure_mode_allow=%v: status %d, stats %+v; want %d after a gRPC error", failOpen, resp.StatusCode, st, want)
		}
	}
}

func TestProcessorErrorsAndSpuriousReplies(t *testing.T) {
	tests := []struct {
		name  string
		h     handler
		check func(RequestStats) bool
	}{
		{"error status", func(int, *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
			return []*extprocsvc.ProcessingResponse{nil}
		}, func(st RequestStats) bool { return strings.HasPrefix(st.GRPCError, "Internal") }},
		{"reply to the wrong message", func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
			return []*extprocsvc.ProcessingResponse{pass(&extprocsvc.ProcessingRequest{
				Request: &extprocsvc.ProcessingRequest_ResponseBody{}}, nil)}
		}, func(st RequestStats) bool { return st.Spurious == 1 }},
		{"both value and raw_value", func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
			hm := &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x", Value: "a", RawValue: []byte("b")}}}}
			return []*extprocsvc.ProcessingResponse{pass(req, &extprocsvc.CommonResponse{HeaderMutation: hm})}
		}, func(st RequestStats) bool { return strings.Contains(st.Details, "only one of value or raw_value") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStand(t, filterConfig(), tt.h, nil)
			resp, _ := s.do(t, "GET", "/", "")
			st := s.last(t, 1)
			if resp.StatusCode != 500 || len(s.up.called()) != 0 || !tt.check(st) {
				t.Errorf("status %d, upstream calls %d, stats %+v; want 500 before the upstream", resp.StatusCode, len(s.up.called()), st)
			}
		})
	}
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

func TestMetadataNamespaces(t *testing.T) {
	h := func(_ int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		r := pass(req, nil)
		switch {
		case req.GetRequestHeaders() != nil:
			r.DynamicMetadata = mustStruct(map[string]any{
				"tokengate": map[string]any{"decision": "allowed", "remaining_tokens": 500},
				"other":     map[string]any{"x": 1},
			})
		case req.GetResponseBody() != nil:
			r.DynamicMetadata = mustStruct(map[string]any{
				"tokengate": map[string]any{"total_tokens": 42, "remaining_tokens": 458},
			})
		}
		return []*extprocsvc.ProcessingResponse{r}
	}
	seen := make(chan *structpb.Struct, 1)
	s := newStand(t, filterConfig(), h, nil, func(c *Config) {
		c.OnMetadata = func(m *structpb.Struct) { seen <- m }
	})
	s.do(t, "POST", "/v1/chat/completions", `{}`)
	st := s.last(t, 1)
	if !slices.Equal(st.DroppedMetadata, []string{"other"}) {
		t.Errorf("dropped namespaces %q, want [other]", st.DroppedMetadata)
	}
	md := s.front.LastMetadata()
	if _, ok := md.GetFields()["other"]; ok || len(md.GetFields()) != 1 {
		t.Fatalf("metadata %v, want only the tokengate namespace", md)
	}
	tg := md.GetFields()["tokengate"].GetStructValue().GetFields()
	if tg["decision"].GetStringValue() != "allowed" || tg["total_tokens"].GetNumberValue() != 42 || tg["remaining_tokens"].GetNumberValue() != 458 {
		t.Errorf("tokengate metadata %v, want both replies merged, the later one winning", tg)
	}
	if got := <-seen; got != md {
		t.Error("OnMetadata did not get the request's metadata")
	}

	none := newStand(t, filterConfig(func(f *extprocv3.ExternalProcessor) { f.MetadataOptions = nil }), h, nil)
	none.do(t, "POST", "/v1/chat/completions", `{}`)
	if st := none.last(t, 1); st.Metadata != nil {
		t.Errorf("metadata %v kept without receiving_namespaces, want none", st.Metadata)
	}
}

func TestNewRefusesWhatItCannotImitate(t *testing.T) {
	for name, change := range map[string]func(*extprocv3.ExternalProcessor){
		"full duplex": func(f *extprocv3.ExternalProcessor) {
			f.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
			f.ProcessingMode.RequestTrailerMode = extprocv3.ProcessingMode_SEND
		},
		"attribute it cannot evaluate": func(f *extprocv3.ExternalProcessor) { f.RequestAttributes = []string{"source.address", "request.time"} },
		"response attribute it cannot evaluate": func(f *extprocv3.ExternalProcessor) {
			f.ResponseAttributes = []string{"request.headers"}
		},
		"cluster metadata forwarding": func(f *extprocv3.ExternalProcessor) {
			f.MetadataOptions.ClusterMetadataForwardingNamespaces = &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{"x"}}
		},
		"observability": func(f *extprocv3.ExternalProcessor) { f.ObservabilityMode = true },
	} {
		if _, err := New(Config{Filter: filterConfig(change), ExtProcAddr: "127.0.0.1:1", Upstream: "http://127.0.0.1:1"}); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(Config{Filter: filterConfig(), ExtProcAddr: "127.0.0.1:1", Upstream: "127.0.0.1:1"}); err == nil {
		t.Error("New accepted an upstream that is not a URL")
	}
}
