package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const istioFilterFile = "istio/envoyfilter.yaml"

// envoyFilter is the part of Istio's networking.istio.io/v1alpha3
// EnvoyFilter that the shipped file uses, under Istio's names. Decoding is
// case-sensitive and refuses any other field (encoding/json would match
// "subfilter" to subFilter): Istio's validation would refuse a misspelt
// field, and a field this check does not know is one it cannot vouch for.
type envoyFilter struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		WorkloadSelector struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"workloadSelector"`
		ConfigPatches []*configPatch `yaml:"configPatches"`
	} `yaml:"spec"`
}

type configPatch struct {
	ApplyTo string `yaml:"applyTo"`
	Match   struct {
		Context  string         `yaml:"context"`
		Listener *listenerMatch `yaml:"listener"`
	} `yaml:"match"`
	Patch struct {
		Operation string    `yaml:"operation"`
		Value     yaml.Node `yaml:"value"`
	} `yaml:"patch"`

	// Decoded from Patch.Value according to ApplyTo.
	listener      *listenerv3.Listener
	networkFilter *listenerv3.Filter
	hcm           *hcmv3.HttpConnectionManager // when networkFilter is the connection manager
	httpFilter    *hcmv3.HttpFilter
	extProc       *extprocv3.ExternalProcessor // when httpFilter is ext_proc
}

type listenerMatch struct {
	Name        string            `yaml:"name"`
	PortNumber  uint32            `yaml:"portNumber"`
	FilterChain *filterChainMatch `yaml:"filterChain"`
}

type filterChainMatch struct {
	Filter *filterMatch `yaml:"filter"`
}

type filterMatch struct {
	Name      string `yaml:"name"`
	SubFilter *struct {
		Name string `yaml:"name"`
	} `yaml:"subFilter"`
}

// matchedFilter returns the network filter and HTTP filter names a patch's
// listener match selects, "" where it names none.
func (m *listenerMatch) matchedFilter() (filter, sub string) {
	if m == nil || m.FilterChain == nil || m.FilterChain.Filter == nil {
		return "", ""
	}
	f := m.FilterChain.Filter
	if f.SubFilter != nil {
		sub = f.SubFilter.Name
	}
	return f.Name, sub
}

func (m *listenerMatch) portNumber() uint32 {
	if m == nil {
		return 0
	}
	return m.PortNumber
}

// Istio's enum names (networking/v1alpha3/envoy_filter.proto). Istio
// refuses any other spelling.
var (
	istioApplyTo = []string{"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
		"VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER"}
	istioContexts   = []string{"ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"}
	istioOperations = []string{"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"}
)

// parseEnvoyFilter decodes one EnvoyFilter document strictly and decodes
// each patch value into the Envoy type its applyTo names, with the same
// checks LoadBootstrap applies to a bootstrap: unknown fields, bad enum
// values and unresolvable typed_config types are errors, and every message
// (typed_configs included) must pass its validation rules.
func parseEnvoyFilter(yamlData []byte) (*envoyFilter, error) {
	// yamlToJSON's checks (one document, no duplicate keys, bounded
	// aliases) first; its JSON is for protojson, not needed here.
	if _, err := yamlToJSON(yamlData); err != nil {
		return nil, fmt.Errorf("reading YAML: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(yamlData))
	dec.KnownFields(true)
	var ef envoyFilter
	if err := dec.Decode(&ef); err != nil {
		return nil, fmt.Errorf("decoding EnvoyFilter: %w", err)
	}
	var errs []error
	if ef.APIVersion != "networking.istio.io/v1alpha3" || ef.Kind != "EnvoyFilter" {
		errs = append(errs, fmt.Errorf("got %s %s, want networking.istio.io/v1alpha3 EnvoyFilter", ef.APIVersion, ef.Kind))
	}
	if ef.Metadata.Name == "" {
		errs = append(errs, errors.New("metadata.name is empty"))
	}
	if len(ef.Spec.ConfigPatches) == 0 {
		errs = append(errs, errors.New("spec.configPatches is empty"))
	}
	for i, p := range ef.Spec.ConfigPatches {
		if err := p.decode(); err != nil {
			errs = append(errs, fmt.Errorf("spec.configPatches[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &ef, nil
}

func (p *configPatch) decode() error {
	var errs []error
	for _, e := range []struct {
		field, value string
		allowed      []string
	}{
		{"applyTo", p.ApplyTo, istioApplyTo},
		{"match.context", p.Match.Context, istioContexts},
		{"patch.operation", p.Patch.Operation, istioOperations},
	} {
		if !slices.Contains(e.allowed, e.value) {
			errs = append(errs, fmt.Errorf("%s: %q is not one of %q", e.field, e.value, e.allowed))
		}
	}
	strict := protojson.UnmarshalOptions{DiscardUnknown: false}
	var msg proto.Message
	switch p.ApplyTo {
	case "LISTENER":
		p.listener = &listenerv3.Listener{}
		msg = p.listener
	case "NETWORK_FILTER":
		p.networkFilter = &listenerv3.Filter{}
		msg = p.networkFilter
	case "HTTP_FILTER":
		p.httpFilter = &hcmv3.HttpFilter{}
		msg = p.httpFilter
	default:
		errs = append(errs, fmt.Errorf("applyTo %q: this check cannot decode its patch value", p.ApplyTo))
		return errors.Join(errs...)
	}
	text, err := yaml.Marshal(&p.Patch.Value)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("patch.value: %w", err))...)
	}
	js, err := yamlToJSON(text)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("patch.value: %w", err))...)
	}
	if err := strict.Unmarshal(js, msg); err != nil {
		return errors.Join(append(errs, fmt.Errorf("patch.value: %w", err))...)
	}
	if tc := p.networkFilter.GetTypedConfig(); tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
		p.hcm = &hcmv3.HttpConnectionManager{}
		if err := tc.UnmarshalTo(p.hcm); err != nil {
			errs = append(errs, fmt.Errorf("patch.value.typed_config: %w", err))
		}
	}
	// A network filter MERGE carries only the fields it changes: its
	// filter name, the connection manager's stat_prefix and routes are
	// Istio's, so the value alone cannot pass the rules. The tests
	// validate it merged into a whole connection manager (mergedHCM).
	if p.ApplyTo == "NETWORK_FILTER" && p.Patch.Operation == "MERGE" {
		return errors.Join(errs...)
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("patch.value: %w", err))
		}
	}
	if err := validateTypedConfigs(msg); err != nil {
		errs = append(errs, fmt.Errorf("patch.value: %w", err))
	}
	if tc := p.httpFilter.GetTypedConfig(); tc.MessageIs((*extprocv3.ExternalProcessor)(nil)) {
		p.extProc = &extprocv3.ExternalProcessor{}
		if err := tc.UnmarshalTo(p.extProc); err != nil {
			errs = append(errs, fmt.Errorf("patch.value.typed_config: %w", err))
		}
	}
	return errors.Join(errs...)
}

const (
	variantBegin = "# BEGIN sidecar variant"
	variantEnd   = "# END sidecar variant"
)

// sidecarVariant returns the EnvoyFilter commented out between the
// variant markers, uncommented: the lines after its "# ---" with their
// leading "# " removed. Checking it like the live one keeps a commented
// example from rotting unseen.
func sidecarVariant(data []byte) ([]byte, error) {
	s := string(data)
	b, e := strings.Index(s, variantBegin), strings.Index(s, variantEnd)
	if b < 0 || e < b {
		return nil, fmt.Errorf("sidecar variant: want lines %q … %q", variantBegin, variantEnd)
	}
	lines := strings.Split(s[b:e], "\n")
	start := slices.Index(lines, "# ---")
	if start < 0 {
		return nil, errors.New(`sidecar variant: no "# ---" line before the document`)
	}
	var out strings.Builder
	for i, l := range lines[start+1:] {
		switch {
		case l == "" || l == "#":
			out.WriteString("\n")
		case strings.HasPrefix(l, "# "):
			out.WriteString(l[2:] + "\n")
		default:
			return nil, fmt.Errorf("sidecar variant: line %d of the document is not commented: %q", i+1, l)
		}
	}
	return []byte(out.String()), nil
}

// loadIstioFilters parses the live EnvoyFilter of data and its commented
// sidecar variant.
func loadIstioFilters(data []byte) (gateway, sidecar *envoyFilter, err error) {
	gateway, err = parseEnvoyFilter(data)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway EnvoyFilter: %w", err)
	}
	v, err := sidecarVariant(data)
	if err != nil {
		return nil, nil, err
	}
	sidecar, err = parseEnvoyFilter(v)
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar variant: %w", err)
	}
	return gateway, sidecar, nil
}

func loadShippedIstioFilters(t *testing.T) (gateway, sidecar *envoyFilter) {
	t.Helper()
	data, err := os.ReadFile(istioFilterFile)
	if err != nil {
		t.Fatal(err)
	}
	gateway, sidecar, err = loadIstioFilters(data)
	if err != nil {
		t.Fatalf("%s: %v", istioFilterFile, err)
	}
	return gateway, sidecar
}

// patchesByApplyTo returns the filter's patches keyed by applyTo, failing
// the test if one kind appears twice.
func patchesByApplyTo(t *testing.T, ef *envoyFilter) map[string]*configPatch {
	t.Helper()
	out := map[string]*configPatch{}
	for _, p := range ef.Spec.ConfigPatches {
		if out[p.ApplyTo] != nil {
			t.Errorf("%s: two %s patches, want one", ef.Metadata.Name, p.ApplyTo)
		}
		out[p.ApplyTo] = p
	}
	return out
}

func TestIstioEnvoyFilter(t *testing.T) {
	gateway, sidecar := loadShippedIstioFilters(t)
	shipped := loadShipped(t)
	wantExtProc, err := ExtProcFilter(shipped)
	if err != nil {
		t.Fatal(err)
	}
	l, err := firstListener(shipped)
	if err != nil {
		t.Fatal(err)
	}
	wantBufferLimit := l.GetPerConnectionBufferLimitBytes().GetValue()
	svc := tokengateService(t, loadShippedManifest(t))
	wantCluster := fmt.Sprintf("outbound|%d||%s", svc.port, svc.host)

	if got := gateway.Metadata.Namespace; got != "istio-system" {
		t.Errorf("gateway EnvoyFilter namespace: got %q, want istio-system (the gateway's)", got)
	}
	if got := gateway.Spec.WorkloadSelector.Labels; len(got) != 1 || got["istio"] != "ingressgateway" {
		t.Errorf("gateway workloadSelector.labels: got %v, want istio: ingressgateway", got)
	}
	if got := sidecar.Spec.WorkloadSelector.Labels; len(got) == 0 {
		t.Error("sidecar variant: no workloadSelector labels; it would apply to every proxy of its namespace")
	}

	tests := []struct {
		name    string
		ef      *envoyFilter
		context string
		port    bool // the HTTP filter patch must name a listener port
	}{
		{"gateway", gateway, "GATEWAY", false},
		{"sidecar variant", sidecar, "SIDECAR_INBOUND", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patches := patchesByApplyTo(t, tt.ef)
			if len(patches) != 3 {
				t.Errorf("patches: got %d kinds, want LISTENER, NETWORK_FILTER and HTTP_FILTER", len(patches))
			}
			for applyTo, p := range patches {
				if p.Match.Context != tt.context {
					t.Errorf("%s patch context: got %s, want %s", applyTo, p.Match.Context, tt.context)
				}
			}

			lp := patches["LISTENER"]
			if lp == nil {
				t.Fatal("no LISTENER patch: buffered bodies over 1 MiB would get 413")
			}
			if lp.Patch.Operation != "MERGE" {
				t.Errorf("LISTENER patch operation: got %s, want MERGE", lp.Patch.Operation)
			}
			if got := lp.listener.GetPerConnectionBufferLimitBytes().GetValue(); got != wantBufferLimit {
				t.Errorf("per_connection_buffer_limit_bytes: got %d, want %d as in envoy.yaml", got, wantBufferLimit)
			}

			hp := patches["HTTP_FILTER"]
			if hp == nil {
				t.Fatal("no HTTP_FILTER patch")
			}
			if hp.Patch.Operation != "INSERT_BEFORE" {
				t.Errorf("HTTP_FILTER patch operation: got %s, want INSERT_BEFORE", hp.Patch.Operation)
			}
			if filter, sub := hp.Match.Listener.matchedFilter(); filter != "envoy.filters.network.http_connection_manager" || sub != "envoy.filters.http.router" {
				t.Errorf("HTTP_FILTER match: got filter %q subFilter %q, want the HCM's envoy.filters.http.router", filter, sub)
			}
			if got := hp.Match.Listener.portNumber(); (got != 0) != tt.port {
				t.Errorf("HTTP_FILTER match.listener.portNumber: got %d, want it set: %v", got, tt.port)
			}
			if got := hp.httpFilter.GetName(); got != "envoy.filters.http.ext_proc" {
				t.Errorf("filter name: got %q, want envoy.filters.http.ext_proc", got)
			}
			ep := hp.extProc
			if ep == nil {
				t.Fatal("HTTP_FILTER typed_config is not an ExternalProcessor")
			}

			eg := ep.GetGrpcService().GetEnvoyGrpc()
			if eg.GetClusterName() != wantCluster {
				t.Errorf("grpc_service.envoy_grpc.cluster_name: got %q, want %q (tokengate.yaml's Service)", eg.GetClusterName(), wantCluster)
			}
			if eg.GetAuthority() != svc.host {
				t.Errorf("grpc_service.envoy_grpc.authority: got %q, want %q", eg.GetAuthority(), svc.host)
			}
			// Everything else must be envoy.yaml's, where each setting is
			// argued; only the way to reach tokengate differs.
			got, want := proto.Clone(ep).(*extprocv3.ExternalProcessor), proto.Clone(wantExtProc).(*extprocv3.ExternalProcessor)
			got.GetGrpcService().TargetSpecifier = nil
			want.GetGrpcService().TargetSpecifier = nil
			if !proto.Equal(got, want) {
				t.Errorf("ext_proc config differs from envoy.yaml's (grpc target aside):\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestIstioEnvoyFilterRejectsTypos edits the shipped EnvoyFilter the way a
// hurried operator might and checks that each edit fails the check, in
// the Istio envelope, in the Envoy config inside it and in the commented
// sidecar variant alike.
func TestIstioEnvoyFilterRejectsTypos(t *testing.T) {
	orig, err := os.ReadFile(istioFilterFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadIstioFilters(orig); err != nil {
		t.Fatalf("unedited file: %v", err)
	}
	tests := []struct {
		name     string
		old, new string
		wantErr  []string // each must be in the error
	}{
		{"misspelt ext_proc field", "message_timeout: 1s", "mesage_timeout: 1s", []string{"gateway", `unknown field "mesage_timeout"`}},
		{"misspelt nested ext_proc field", "receiving_namespaces:", "receiving_namespace:", []string{`unknown field "receiving_namespace"`}},
		{"misspelt forwarding field", "            forwarding_namespaces:", "            forwarding_namespace:", []string{"gateway", `unknown field "forwarding_namespace"`}},
		{"attributes as one string", "          request_attributes: [source.address]", "          request_attributes: source.address", []string{"gateway", `unexpected token "source.address"`}},
		{"misspelt connection manager field", "          use_remote_address: true", "          use_remote_adress: true", []string{"gateway", `unknown field "use_remote_adress"`}},
		{"sidecar: misspelt attributes field", "#           request_attributes:", "#           request_attribute:", []string{"sidecar variant", `unknown field "request_attribute"`}},
		{"misspelt processing mode", "request_body_mode: BUFFERED", "request_body_mode: BUFFERD", []string{"BUFFERD"}},
		{"unknown extension type", "ext_proc.v3.ExternalProcessor\n", "ext_proc.v3.ExternalProcesor\n", []string{"unable to resolve"}},
		{"misspelt listener field", "per_connection_buffer_limit_bytes: 16777216", "per_connection_buffer_limits: 16777216", []string{`unknown field "per_connection_buffer_limits"`}},
		{"negative message timeout", "message_timeout: 1s", "message_timeout: -1s", []string{"MessageTimeout"}},
		{"empty filter name", "name: envoy.filters.http.ext_proc", `name: ""`, []string{"HttpFilter.Name"}},
		{"duplicate key", "          failure_mode_allow: false\n", "          failure_mode_allow: false\n          failure_mode_allow: true\n", []string{`"failure_mode_allow" already defined`}},
		{"misspelt Istio field", "subFilter:", "subfilter:", []string{"field subfilter not found"}},
		{"misspelt Istio spec field", "configPatches:", "configPatchs:", []string{"field configPatchs not found"}},
		{"misspelt applyTo", "applyTo: HTTP_FILTER", "applyTo: HTTP_FILTERS", []string{`"HTTP_FILTERS" is not one of`}},
		{"misspelt context", "context: GATEWAY", "context: GATEWAYS", []string{`"GATEWAYS" is not one of`}},
		{"misspelt operation", "operation: INSERT_BEFORE", "operation: INSERT_BEFOR", []string{`"INSERT_BEFOR" is not one of`}},
		{"wrong kind", "kind: EnvoyFilter", "kind: EnvoyFilters", []string{"want networking.istio.io/v1alpha3 EnvoyFilter"}},
		{"sidecar: misspelt ext_proc field", "#           message_timeout: 1s", "#           mesage_timeout: 1s", []string{"sidecar variant: spec.configPatches[2]", `unknown field "mesage_timeout"`}},
		{"sidecar: misspelt context", "#       context: SIDECAR_INBOUND\n#       listener:\n#         portNumber",
			"#       context: SIDECAR_INBOND\n#       listener:\n#         portNumber", []string{`sidecar variant: spec.configPatches[1]: match.context: "SIDECAR_INBOND"`}},
		{"sidecar: misspelt Istio field", "#         portNumber: 8000", "#         port_number: 8000", []string{"sidecar variant", "field port_number not found"}},
		{"sidecar: end marker gone", variantEnd, "# the end", []string{"sidecar variant: want lines"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := strings.Index(string(orig), tt.old)
			if i < 0 {
				t.Fatalf("%s no longer contains %q; update this case", istioFilterFile, tt.old)
			}
			edited := string(orig[:i]) + tt.new + string(orig[i+len(tt.old):])
			_, _, err := loadIstioFilters([]byte(edited))
			if err == nil {
				t.Fatalf("accepted %q → %q", tt.old, tt.new)
			}
			t.Log(err)
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error: got %v, want it to contain %q", err, want)
				}
			}
		})
	}
}
