package envoy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

const shippedFile = "envoy.yaml"

func loadShipped(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := LoadBootstrap(shippedFile)
	if err != nil {
		t.Fatalf("LoadBootstrap(%s): %v", shippedFile, err)
	}
	return b
}

func shippedHCM(t *testing.T, b *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	l, err := firstListener(b)
	if err != nil {
		t.Fatal(err)
	}
	hcms, err := connectionManagers(l)
	if err != nil || len(hcms) != 1 {
		t.Fatalf("connectionManagers: got %d, err %v; want 1", len(hcms), err)
	}
	return hcms[0]
}

func shippedCluster(t *testing.T, b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

func protocolOptions(t *testing.T, c *clusterv3.Cluster) *upstreamhttpv3.HttpProtocolOptions {
	t.Helper()
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatalf("cluster %q: no envoy.extensions.upstreams.http.v3.HttpProtocolOptions", c.GetName())
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		t.Fatalf("cluster %q: %v", c.GetName(), err)
	}
	return opts
}

func TestShippedExtProc(t *testing.T) {
	ep, err := ExtProcFilter(loadShipped(t))
	if err != nil {
		t.Fatal(err)
	}
	pm := ep.GetProcessingMode()
	modes := []struct {
		field     string
		got, want fmt.Stringer
	}{
		{"request_header_mode", pm.GetRequestHeaderMode(), extprocv3.ProcessingMode_SEND},
		{"request_body_mode", pm.GetRequestBodyMode(), extprocv3.ProcessingMode_BUFFERED},
		{"response_header_mode", pm.GetResponseHeaderMode(), extprocv3.ProcessingMode_SEND},
		{"response_body_mode", pm.GetResponseBodyMode(), extprocv3.ProcessingMode_BUFFERED},
		{"request_trailer_mode", pm.GetRequestTrailerMode(), extprocv3.ProcessingMode_SKIP},
		{"response_trailer_mode", pm.GetResponseTrailerMode(), extprocv3.ProcessingMode_SKIP},
	}
	for _, m := range modes {
		if m.got != m.want {
			t.Errorf("processing_mode.%s: got %v, want %v", m.field, m.got, m.want)
		}
	}
	if !ep.GetAllowModeOverride() {
		t.Error("allow_mode_override: got false, want true (SSE responses switch to STREAMED)")
	}
	if ep.GetFailureModeAllow() {
		t.Error("failure_mode_allow: got true, want false (fail closed)")
	}
	if ep.GetMessageTimeout() == nil {
		t.Error("message_timeout: unset, Envoy would use 200ms; want ≥ 1s")
	} else if got := ep.GetMessageTimeout().AsDuration(); got < time.Second {
		t.Errorf("message_timeout: got %v, want ≥ 1s", got)
	}
	if got := ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Contains(got, "tokengate") {
		t.Errorf("metadata_options.receiving_namespaces.untyped: got %q, want it to contain tokengate", got)
	}
	if got := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != "tokengate" {
		t.Errorf("grpc_service.envoy_grpc.cluster_name: got %q, want tokengate", got)
	}
}

func TestShippedListenerAndRoute(t *testing.T) {
	b := loadShipped(t)
	if port, err := ListenerPort(b); err != nil || port != 10000 {
		t.Errorf("ListenerPort: got %d, %v; want 10000", port, err)
	}
	if l, _ := firstListener(b); l.GetName() != "ingress" {
		t.Errorf("listener name: got %q, want ingress", l.GetName())
	}
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 9901 {
		t.Errorf("admin port: got %d, want 9901", got)
	}

	hcm := shippedHCM(t, b)
	if hcm.GetStatPrefix() == "" {
		t.Error("http_connection_manager.stat_prefix is empty")
	}
	if got := hcm.GetCodecType(); got != hcmv3.HttpConnectionManager_AUTO {
		t.Errorf("codec_type: got %v, want AUTO", got)
	}
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if want := []string{"envoy.filters.http.ext_proc", "envoy.filters.http.router"}; !slices.Equal(names, want) {
		t.Errorf("http filters: got %q, want %q", names, want)
	}

	vhs := hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhs) != 1 || len(vhs[0].GetRoutes()) != 1 {
		t.Fatalf("route_config: got %d virtual hosts, want 1 with 1 route", len(vhs))
	}
	r := vhs[0].GetRoutes()[0]
	if got := r.GetMatch().GetPrefix(); got != "/" {
		t.Errorf("route prefix: got %q, want /", got)
	}
	if got := r.GetRoute().GetCluster(); got != "openai" {
		t.Errorf("route cluster: got %q, want openai", got)
	}
	routeTimeout := r.GetRoute().GetTimeout().AsDuration()
	if routeTimeout < 5*time.Minute {
		t.Errorf("route timeout: got %v, want ≥ 5m so long streams finish", routeTimeout)
	}
	// If an Envoy version applied grpc_service.timeout to the whole ext_proc
	// stream, a shorter one would cut streamed answers before the route does.
	ep, err := ExtProcFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := ep.GetGrpcService().GetTimeout().AsDuration(); got < routeTimeout {
		t.Errorf("ext_proc grpc_service.timeout: got %v, want ≥ route timeout %v", got, routeTimeout)
	}
}

func TestShippedAccessLog(t *testing.T) {
	logs := shippedHCM(t, loadShipped(t)).GetAccessLog()
	if len(logs) != 1 {
		t.Fatalf("access_log: got %d entries, want 1", len(logs))
	}
	sl := &streamv3.StdoutAccessLog{}
	if err := logs[0].GetTypedConfig().UnmarshalTo(sl); err != nil {
		t.Fatalf("access_log is not a StdoutAccessLog: %v", err)
	}
	format := sl.GetLogFormat().GetTextFormatSource().GetInlineString()
	for _, op := range []string{
		"%REQ(:METHOD)%",
		"PATH)%",
		"%RESPONSE_CODE%",
		"%DURATION%",
		"%DYNAMIC_METADATA(tokengate:prompt_tokens)%",
		"%DYNAMIC_METADATA(tokengate:completion_tokens)%",
		"%DYNAMIC_METADATA(tokengate:total_tokens)%",
		"%DYNAMIC_METADATA(tokengate:remaining_tokens)%",
		"%DYNAMIC_METADATA(tokengate:decision)%",
	} {
		if !strings.Contains(format, op) {
			t.Errorf("access log format lacks %s: %q", op, format)
		}
	}
	if !strings.HasSuffix(format, "\n") {
		t.Error("access log format does not end in a newline; lines would run together")
	}
}

func TestShippedClusters(t *testing.T) {
	b := loadShipped(t)
	for name, want := range map[string]string{"tokengate": "tokengate:50051", "openai": "openai-mock:8080"} {
		if got, err := ClusterAddress(b, name); err != nil || got != want {
			t.Errorf("ClusterAddress(%q): got %q, %v; want %q", name, got, err, want)
		}
		if got := shippedCluster(t, b, name).GetType(); got != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("cluster %q type: got %v, want STRICT_DNS", name, got)
		}
	}

	tg := shippedCluster(t, b, "tokengate")
	if protocolOptions(t, tg).GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("cluster tokengate: want explicit_http_config.http2_protocol_options (gRPC needs HTTP/2)")
	}
	var grpcChecks int
	for _, hc := range tg.GetHealthChecks() {
		if hc.GetGrpcHealthCheck() != nil {
			grpcChecks++
		}
	}
	if grpcChecks != 1 {
		t.Errorf("cluster tokengate: got %d gRPC health checks, want 1", grpcChecks)
	}
	if got := tg.GetConnectTimeout().AsDuration(); got <= 0 || got > time.Second {
		t.Errorf("cluster tokengate connect_timeout: got %v, want in (0, 1s]", got)
	}

	oa := shippedCluster(t, b, "openai")
	if protocolOptions(t, oa).GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
		t.Error("cluster openai: want explicit_http_config.http_protocol_options (HTTP/1.1)")
	}
}

// TestParseBootstrapRejectsTypos edits the shipped file the way a hurried
// operator might and checks that each edit fails loading, so a typo in
// envoy.yaml fails `go test` rather than the demo.
func TestParseBootstrapRejectsTypos(t *testing.T) {
	orig, err := os.ReadFile(shippedFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseBootstrap(orig); err != nil {
		t.Fatalf("unedited file: %v", err)
	}
	tests := []struct {
		name     string
		old, new string
		wantErr  string
		wantLine bool // the error names the YAML line of the edit
	}{
		{"misspelled field", "message_timeout: 1s", "mesage_timeout: 1s", `unknown field "mesage_timeout"`, true},
		{"misspelled nested field", "grpc_health_check: {}", "grpc_healthcheck: {}", `unknown field "grpc_healthcheck"`, true},
		{"misspelled protocol options field", "http2_protocol_options:", "http2_protocol_option:", `unknown field "http2_protocol_option"`, true},
		{"misspelled body mode", "request_body_mode: BUFFERED", "request_body_mode: BUFFERD", "BUFFERD", true},
		{"misspelled header mode", "response_header_mode: SEND", "response_header_mode: SENT", "SENT", true},
		{"misspelled codec", "codec_type: AUTO", "codec_type: AUTOMATIC", "AUTOMATIC", true},
		{"misspelled cluster type", "type: STRICT_DNS", "type: STRICT_DSN", "STRICT_DSN", true},
		{"unknown extension type",
			"type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
			"type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcesor",
			"unable to resolve", true},
		{"negative port", "port_value: 10000", "port_value: -1", "invalid value for uint32", true},
		{"port out of range", "port_value: 10000", "port_value: 70000", "PortValue", false},
		{"negative message timeout", "message_timeout: 1s", "message_timeout: -1s", "MessageTimeout", false},
		{"duration without unit", "message_timeout: 1s", "message_timeout: 1", "unexpected token 1", true},
		{"bool as string", "allow_mode_override: true", `allow_mode_override: "true"`, "allowModeOverride", true},
		{"empty stat prefix", "stat_prefix: ingress_http", `stat_prefix: ""`, "StatPrefix", false},
		{"health check without interval", "      interval: 5s\n", "", "Interval", false},
		{"duplicate key",
			"allow_mode_override: true",
			"allow_mode_override: true\n              allow_mode_override: false",
			`key "allow_mode_override" already defined`, false},
		{"route to unknown cluster", "cluster: openai", "cluster: open-ai", `unknown cluster "open-ai"`, false},
		{"ext_proc to unknown cluster", "cluster_name: tokengate", "cluster_name: tokengat", `grpc_service: unknown cluster "tokengat"`, false},
		{"router before ext_proc",
			"          - name: envoy.filters.http.ext_proc\n",
			"          - name: envoy.filters.http.router\n" +
				"            typed_config:\n" +
				"              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n" +
				"          - name: envoy.filters.http.ext_proc\n",
			"router must be the last", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := strings.Index(string(orig), tt.old)
			if i < 0 {
				t.Fatalf("envoy.yaml no longer contains %q; update this case", tt.old)
			}
			edited := string(orig[:i]) + tt.new + string(orig[i+len(tt.old):])
			_, err := ParseBootstrap([]byte(edited))
			if err == nil {
				t.Fatalf("ParseBootstrap accepted %q → %q", tt.old, tt.new)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error: got %v, want it to contain %q", err, tt.wantErr)
			}
			if line := fmt.Sprintf("(line %d:", strings.Count(string(orig[:i]), "\n")+1); tt.wantLine && !strings.Contains(err.Error(), line) {
				t.Errorf("error: got %v, want it to name %s", err, line)
			}
		})
	}
}

func TestLoadBootstrapNamesPath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("static_resources: {clusterz: []}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		if _, err := LoadBootstrap(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadBootstrap(%s): got %v, want an error naming the path", path, err)
		}
	}
}

// minimal is the smallest bootstrap the helpers can be tried on; %s is the
// list of HTTP filters before the router.
const minimal = `
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 8000}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}
          http_filters:
%s          - name: router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: c
    connect_timeout: 1s
    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: "::1", port_value: 9}}}}]}]}
  - name: empty
    connect_timeout: 1s
`

const extProcFilter = `          - name: ep
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {envoy_grpc: {cluster_name: c}}
`

func TestHelpers(t *testing.T) {
	tests := []struct {
		name        string
		yaml        string
		wantExtProc string // "" means ExtProcFilter must succeed
		wantPort    uint32
		wantPortErr bool
	}{
		{"no listener", "static_resources: {}\n", "no static listener", 0, true},
		{"no ext_proc", fmt.Sprintf(minimal, ""), "no ext_proc http filter", 8000, false},
		{"one ext_proc", fmt.Sprintf(minimal, extProcFilter), "", 8000, false},
		{"two ext_procs", fmt.Sprintf(minimal, extProcFilter+extProcFilter), "2 ext_proc http filters", 8000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBootstrap([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("ParseBootstrap: %v", err)
			}
			_, err = ExtProcFilter(b)
			switch {
			case tt.wantExtProc == "" && err != nil:
				t.Errorf("ExtProcFilter: %v", err)
			case tt.wantExtProc != "" && (err == nil || !strings.Contains(err.Error(), tt.wantExtProc)):
				t.Errorf("ExtProcFilter: got %v, want error containing %q", err, tt.wantExtProc)
			}
			port, err := ListenerPort(b)
			if (err != nil) != tt.wantPortErr || port != tt.wantPort {
				t.Errorf("ListenerPort: got %d, %v; want %d, error %v", port, err, tt.wantPort, tt.wantPortErr)
			}
		})
	}

	b, err := ParseBootstrap([]byte(fmt.Sprintf(minimal, "")))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []struct {
		cluster, want, wantErr string
	}{
		{"c", "[::1]:9", ""},
		{"empty", "", "no endpoint"},
		{"absent", "", `no static cluster "absent"`},
	}
	for _, a := range addrs {
		got, err := ClusterAddress(b, a.cluster)
		if got != a.want || (err == nil) != (a.wantErr == "") || (err != nil && !strings.Contains(err.Error(), a.wantErr)) {
			t.Errorf("ClusterAddress(%q): got %q, %v; want %q, error containing %q", a.cluster, got, err, a.want, a.wantErr)
		}
	}
}
