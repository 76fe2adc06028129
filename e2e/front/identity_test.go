package front

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	extAuthzNS = "envoy.filters.http.ext_authz"
	typedNS    = "example.typed"
)

// beforeExtProc stands for an ext_authz filter that wrote its namespace,
// a filter whose namespace is not forwarded, and one that wrote typed
// metadata.
func beforeExtProc(*http.Request) *corev3.Metadata {
	typed, err := anypb.New(mustStruct(map[string]any{"plan": "pro"}))
	if err != nil {
		panic(err)
	}
	return &corev3.Metadata{
		FilterMetadata: map[string]*structpb.Struct{
			extAuthzNS:    mustStruct(map[string]any{"tenant": "t1"}),
			"unforwarded": mustStruct(map[string]any{"x": 1}),
		},
		TypedFilterMetadata: map[string]*anypb.Any{typedNS: typed},
	}
}

// forwarding is filterConfig forwarding ext_authz's namespace, jwt_authn's
// (which no filter writes here) and tokengate's own (which the processor
// writes), and typedNS and ext_authz's as typed metadata (ext_authz's is
// untyped only).
func forwarding(change ...func(*extprocv3.ExternalProcessor)) *extprocv3.ExternalProcessor {
	return filterConfig(append([]func(*extprocv3.ExternalProcessor){func(f *extprocv3.ExternalProcessor) {
		f.MetadataOptions.ForwardingNamespaces = &extprocv3.MetadataOptions_MetadataNamespaces{
			Untyped: []string{extAuthzNS, jwtNamespace, "tokengate"},
			Typed:   []string{typedNS, extAuthzNS},
		}
	}}, change...)...)
}

// Every message carries metadata_context: the forwarded namespaces the
// request's dynamic metadata has when the message is sent, untyped and
// typed apart, the others left out.
func TestForwardedMetadataOnEveryMessage(t *testing.T) {
	filter := forwarding(func(f *extprocv3.ExternalProcessor) {
		f.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_STREAMED
		f.ProcessingMode.ResponseTrailerMode = extprocv3.ProcessingMode_SEND
	})
	h := func(n int, req *extprocsvc.ProcessingRequest) []*extprocsvc.ProcessingResponse {
		r := pass(req, nil)
		if req.GetRequestHeaders() != nil {
			r.DynamicMetadata = mustStruct(map[string]any{"tokengate": map[string]any{"decision": "allowed"}})
		}
		return []*extprocsvc.ProcessingResponse{r}
	}
	s := newStand(t, filter, h, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Upstream")
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d;", i)
			http.NewResponseController(w).Flush()
			time.Sleep(20 * time.Millisecond)
		}
		w.Header().Set("X-Upstream", "done")
	}, func(c *Config) {
		c.DynamicMetadata = beforeExtProc
		c.UpstreamHTTP1Trailers = true
	})
	s.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4o"}`)
	s.last(t, 1)
	msgs := s.proc.messages(0)
	kinds := kindsOf(msgs)
	if !strings.HasPrefix(kinds, "request_headers,request_body,response_headers,response_body") || !strings.HasSuffix(kinds, ",response_trailers") {
		t.Fatalf("processor saw %s, want every kind of message", kinds)
	}
	for i, m := range msgs {
		md := m.GetMetadataContext()
		if md == nil {
			t.Fatalf("step %d (%s): no metadata_context", i, kindsOf(msgs[i:i+1]))
		}
		want := []string{extAuthzNS}
		if i > 0 {
			want = append(want, "tokengate") // written by the reply to the first message
		}
		slices.Sort(want)
		if got := slices.Sorted(maps.Keys(md.GetFilterMetadata())); !slices.Equal(got, want) {
			t.Errorf("step %d: filter_metadata namespaces %q, want %q", i, got, want)
		}
		if got := md.GetFilterMetadata()[extAuthzNS].GetFields()["tenant"].GetStringValue(); got != "t1" {
			t.Errorf("step %d: ext_authz tenant %q, want t1", i, got)
		}
		if got := slices.Collect(maps.Keys(md.GetTypedFilterMetadata())); !slices.Equal(got, []string{typedNS}) {
			t.Errorf("step %d: typed_filter_metadata namespaces %q, want [%s]", i, got, typedNS)
		}
		typed := &structpb.Struct{}
		if err := md.GetTypedFilterMetadata()[typedNS].UnmarshalTo(typed); err != nil || typed.GetFields()["plan"].GetStringValue() != "pro" {
			t.Errorf("step %d: typed %s = %v (%v), want plan pro", i, typedNS, typed, err)
		}
	}
}

// Envoy 1.30 brought forwarding_namespaces and the attributes; older lines
// accept them and send neither. metadata_context is there even when no
// namespace is (ext_proc.cc addDynamicMetadata always sets it).
func TestForwardedMetadataPerVersion(t *testing.T) {
	for _, v := range EnvoyVersions {
		t.Run(v.String(), func(t *testing.T) {
			s := newStand(t, forwarding(func(f *extprocv3.ExternalProcessor) { f.RequestAttributes = []string{"request.method"} }),
				passAll, nil, func(c *Config) { c.Envoy = v })
			s.do(t, "POST", "/v1/chat/completions", `{}`)
			s.last(t, 1)
			for i, m := range s.proc.messages(0) {
				if got := m.GetMetadataContext() != nil; got != v.ForwardsMetadataAndAttributes() {
					t.Errorf("step %d: metadata_context %v, want one: %v", i, m.GetMetadataContext(), v.ForwardsMetadataAndAttributes())
				}
				if len(m.GetMetadataContext().GetFilterMetadata()) > 0 {
					t.Errorf("step %d: metadata_context %v, want no namespace (none was written)", i, m.GetMetadataContext())
				}
				if got := m.GetAttributes() != nil; got != (i == 0 && v.ForwardsMetadataAndAttributes()) {
					t.Errorf("step %d: attributes %v", i, m.GetAttributes())
				}
			}
		})
	}
}

// Attributes go once per direction, with the first message of it, keyed by
// the expression as configured: booleans and numbers as such, the rest as
// strings, attributes without a value left out.
func TestAttributesOnFirstMessagePerDirection(t *testing.T) {
	reqAttrs := []string{"source.address", "source.port", "request.path", "request.url_path", "request.method",
		"request.host", "request.protocol", "request.headers['x-api-key']", `request.headers["absent"]`,
		"connection.mtls", "response.code"}
	respAttrs := []string{"response.code", "response.headers['content-type']", "request.method"}
	for _, tt := range []struct {
		name      string
		reqHeader extprocv3.ProcessingMode_HeaderSendMode
		want      string // the message kinds, the ones with attributes starred
	}{
		{"headers sent", extprocv3.ProcessingMode_SEND, "request_headers*,request_body,response_headers*,response_body"},
		{"request headers skipped", extprocv3.ProcessingMode_SKIP, "request_body*,response_headers*,response_body"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStand(t, filterConfig(func(f *extprocv3.ExternalProcessor) {
				f.ProcessingMode.RequestHeaderMode = tt.reqHeader
				f.RequestAttributes, f.ResponseAttributes = reqAttrs, respAttrs
			}), passAll, nil)
			s.do(t, "POST", "/v1/chat/completions?x=1", `{}`, "X-Api-Key", "k1", "X-Api-Key", "k2")
			s.last(t, 1)
			msgs := s.proc.messages(0)
			var got []string
			for _, m := range msgs {
				k := kindsOf([]*extprocsvc.ProcessingRequest{m})
				if m.GetAttributes() != nil {
					k += "*"
				}
				got = append(got, k)
			}
			if strings.Join(got, ",") != tt.want {
				t.Fatalf("processor saw %s, want %s", strings.Join(got, ","), tt.want)
			}
			first := msgs[0].GetAttributes()
			if len(first) != 1 || first[attributesKey] == nil {
				t.Fatalf("attributes %v, want one Struct under %s", first, attributesKey)
			}
			a := first[attributesKey].GetFields()
			port := a["source.port"].GetNumberValue()
			wantStr := map[string]string{
				"source.address":               "127.0.0.1:" + strconv.Itoa(int(port)),
				"request.path":                 "/v1/chat/completions?x=1",
				"request.url_path":             "/v1/chat/completions",
				"request.method":               "POST",
				"request.host":                 strings.TrimPrefix(s.url, "http://"),
				"request.protocol":             "HTTP/1.1",
				"request.headers['x-api-key']": "k1,k2",
			}
			for k, want := range wantStr {
				if got := a[k].GetStringValue(); got != want {
					t.Errorf("attribute %s = %v, want %q", k, a[k], want)
				}
			}
			if _, ok := a["connection.mtls"].GetKind().(*structpb.Value_BoolValue); !ok || a["connection.mtls"].GetBoolValue() {
				t.Errorf("connection.mtls = %v, want false as a boolean", a["connection.mtls"])
			}
			if _, ok := a["source.port"].GetKind().(*structpb.Value_NumberValue); !ok || port == 0 {
				t.Errorf("source.port = %v, want the client's port as a number", a["source.port"])
			}
			for _, k := range []string{`request.headers["absent"]`, "response.code"} {
				if v, ok := a[k]; ok {
					t.Errorf("attribute %s = %v, want it left out (no value)", k, v)
				}
			}
			var resp map[string]*structpb.Value
			for _, m := range msgs {
				if m.GetResponseHeaders() != nil {
					resp = m.GetAttributes()[attributesKey].GetFields()
				}
			}
			if resp["response.code"].GetNumberValue() != 200 || resp["response.headers['content-type']"].GetStringValue() != "application/json" ||
				resp["request.method"].GetStringValue() != "POST" || len(resp) != 3 {
				t.Errorf("response attributes %v, want code 200, content-type and the method", resp)
			}
		})
	}
}

// source.address is the client's address as the connection manager works
// it out from use_remote_address, xff_num_trusted_hops and
// x-forwarded-for; with use_remote_address Envoy appends the peer (its own
// address for a loopback peer) to x-forwarded-for and, trusting no proxy,
// overwrites x-forwarded-proto.
func TestSourceAddress(t *testing.T) {
	const peer = "peer" // the client's loopback address and port
	local := localAddress()
	tests := []struct {
		name       string
		remote     bool
		hops       uint32
		skipAppend bool
		xff        []string // the client's x-forwarded-for lines
		want       string
		wantXFF    string // as the processor and the upstream see it
		wantProto  string
	}{
		{"default, no xff", false, 0, false, nil, peer, "", "https"},
		{"default, last xff", false, 0, false, []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7:0", "198.51.100.1, 203.0.113.7", "https"},
		{"default, two lines", false, 0, false, []string{"198.51.100.1", "203.0.113.7"}, "203.0.113.7:0", "198.51.100.1,203.0.113.7", "https"},
		{"default, one hop trusted", false, 1, false, []string{"198.51.100.1, 203.0.113.7"}, "198.51.100.1:0", "198.51.100.1, 203.0.113.7", "https"},
		{"default, xff too short", false, 1, false, []string{"203.0.113.7"}, peer, "203.0.113.7", "https"},
		{"default, not an address", false, 0, false, []string{"203.0.113.7:80"}, peer, "203.0.113.7:80", "https"},
		{"remote, no xff", true, 0, false, nil, peer, local, "http"},
		{"remote, client's xff ignored", true, 0, false, []string{"203.0.113.7"}, peer, "203.0.113.7," + local, "http"},
		{"remote, one hop trusted", true, 1, false, []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7:0", "198.51.100.1, 203.0.113.7," + local, "https"},
		{"remote, two hops trusted", true, 2, false, []string{"198.51.100.1, 203.0.113.7"}, "198.51.100.1:0", "198.51.100.1, 203.0.113.7," + local, "https"},
		{"remote, hops past xff", true, 3, false, []string{"198.51.100.1, 203.0.113.7"}, peer, "198.51.100.1, 203.0.113.7," + local, "https"},
		{"remote, ipv6", true, 1, false, []string{"2001:db8::1"}, "[2001:db8::1]:0", "2001:db8::1," + local, "https"},
		{"remote, skip_xff_append", true, 0, true, []string{"203.0.113.7"}, peer, "203.0.113.7", "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStand(t, filterConfig(func(f *extprocv3.ExternalProcessor) {
				f.RequestAttributes = []string{"source.address", "source.port"}
			}), passAll, nil, func(c *Config) {
				c.UseRemoteAddress, c.XFFNumTrustedHops, c.SkipXFFAppend = tt.remote, tt.hops, tt.skipAppend
			})
			header := []string{"X-Forwarded-Proto", "https"}
			for _, v := range tt.xff {
				header = append(header, "X-Forwarded-For", v)
			}
			s.do(t, "GET", "/v1/models", "", header...)
			s.last(t, 1)
			rh := s.proc.messages(0)[0]
			a := rh.GetAttributes()[attributesKey].GetFields()
			got, port := a["source.address"].GetStringValue(), a["source.port"].GetNumberValue()
			want := tt.want
			if want == peer {
				want = "127.0.0.1:" + strconv.Itoa(int(port))
				if port == 0 {
					t.Errorf("source.port 0, want the peer's")
				}
			} else if port != 0 {
				t.Errorf("source.port %v, want 0 for an address from x-forwarded-for", port)
			}
			if got != want {
				t.Errorf("source.address %q, want %q", got, want)
			}
			var xff []string
			for _, h := range rh.GetRequestHeaders().GetHeaders().GetHeaders() {
				if h.GetKey() == "x-forwarded-for" {
					xff = append(xff, string(h.GetRawValue()))
				}
			}
			if strings.Join(xff, "|") != tt.wantXFF {
				t.Errorf("x-forwarded-for %q, want %q", xff, tt.wantXFF)
			}
			if up := s.up.called()[0].header.Values("X-Forwarded-For"); strings.Join(up, "|") != tt.wantXFF {
				t.Errorf("upstream x-forwarded-for %q, want %q", up, tt.wantXFF)
			}
			if got, _ := headerOf(rh.GetRequestHeaders().GetHeaders(), "x-forwarded-proto"); got != tt.wantProto {
				t.Errorf("x-forwarded-proto %q, want %q", got, tt.wantProto)
			}
		})
	}
}
