package envoy

import (
	"fmt"
	"os"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Issue 21: tokengate picks the API and the policy from the path, so the
// path the upstream routes on must be the one tokengate read. Every
// gateway config shipped normalises it in Envoy, and forwards the
// normalised path.

// pathNormalizationProblems lists what keeps hcm from forwarding the path
// tokengate reads: the three connection manager settings that normalise
// it, or the extension that would make Envoy ignore them.
func pathNormalizationProblems(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	switch np := hcm.GetNormalizePath(); {
	case np == nil:
		out = append(out, "normalize_path: unset (Envoy's default is off), want true (dot segments resolved before routing and upstream)")
	case !np.GetValue():
		out = append(out, "normalize_path: got false, want true (dot segments resolved before routing and upstream)")
	}
	if !hcm.GetMergeSlashes() {
		out = append(out, "merge_slashes: got false, want true (//v1//chat/completions forwarded as /v1/chat/completions)")
	}
	if got, want := hcm.GetPathWithEscapedSlashesAction(), hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD; got != want {
		out = append(out, fmt.Sprintf("path_with_escaped_slashes_action: got %v, want %v (/v1/chat%%2Fcompletions forwarded decoded)", got, want))
	}
	// The header validation extension replaces the three fields above
	// (Envoy then ignores them); it is not part of what is shipped.
	if hcm.GetTypedHeaderValidationConfig() != nil {
		out = append(out, "typed_header_validation_config is set: Envoy would ignore the path settings")
	}
	return out
}

func wantPathNormalization(t *testing.T, where string, hcm *hcmv3.HttpConnectionManager) {
	t.Helper()
	for _, p := range pathNormalizationProblems(hcm) {
		t.Errorf("%s: %s", where, p)
	}
}

func TestShippedPathNormalization(t *testing.T) {
	wantPathNormalization(t, shippedFile, shippedHCM(t, loadShipped(t)))
}

// istioDefaultHCM is the connection manager Istio generates before
// EnvoyFilters apply, as far as these tests look at it: envoy.yaml's,
// with the path settings of Istio's default meshConfig.pathNormalization
// (BASE: normalize_path on, slashes neither merged nor decoded).
func istioDefaultHCM(t *testing.T) *hcmv3.HttpConnectionManager {
	t.Helper()
	hcm := proto.Clone(shippedHCM(t, loadShipped(t))).(*hcmv3.HttpConnectionManager)
	hcm.NormalizePath = wrapperspb.Bool(true)
	hcm.MergeSlashes = false
	hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	return hcm
}

// mergedHCM applies a NETWORK_FILTER MERGE patch of the connection manager
// the way Istio does (the patch's typed_config merged into the generated
// one, proto.Merge semantics) and validates the result as LoadBootstrap
// validates a bootstrap's connection manager.
func mergedHCM(t *testing.T, p *configPatch) *hcmv3.HttpConnectionManager {
	t.Helper()
	return mergedHCMOnto(t, istioDefaultHCM(t), p)
}

// mergedHCMOnto is mergedHCM onto the connection manager hcm, changed in
// place.
func mergedHCMOnto(t *testing.T, hcm *hcmv3.HttpConnectionManager, p *configPatch) *hcmv3.HttpConnectionManager {
	t.Helper()
	if p.hcm == nil {
		t.Fatalf("NETWORK_FILTER patch: typed_config is not an HttpConnectionManager")
	}
	proto.Merge(hcm, p.hcm)
	tc, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	name := p.networkFilter.GetName()
	if name == "" {
		name = "envoy.filters.network.http_connection_manager" // MERGE keeps Istio's name
	}
	f := &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc}}
	if err := f.ValidateAll(); err != nil {
		t.Errorf("merged connection manager: %v", err)
	}
	if err := validateTypedConfigs(f); err != nil {
		t.Errorf("merged connection manager: %v", err)
	}
	return hcm
}

func TestIstioPathNormalization(t *testing.T) {
	// The starting point must not already normalise, or the check below
	// could not tell a missing patch.
	base := istioDefaultHCM(t)
	if base.GetMergeSlashes() || base.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD {
		t.Fatal("istioDefaultHCM already merges or decodes slashes")
	}
	gateway, sidecar := loadShippedIstioFilters(t)
	for _, tt := range []struct {
		name    string
		ef      *envoyFilter
		context string
		port    bool
	}{
		{"gateway", gateway, "GATEWAY", false},
		{"sidecar variant", sidecar, "SIDECAR_INBOUND", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			patches := patchesByApplyTo(t, tt.ef)
			p := patches["NETWORK_FILTER"]
			if p == nil {
				t.Fatal("no NETWORK_FILTER patch: Istio's default keeps // and %2F in the path the upstream gets")
			}
			if p.Match.Context != tt.context {
				t.Errorf("context: got %s, want %s", p.Match.Context, tt.context)
			}
			if p.Patch.Operation != "MERGE" {
				t.Errorf("operation: got %s, want MERGE (anything else replaces Istio's connection manager)", p.Patch.Operation)
			}
			if filter, sub := p.Match.Listener.matchedFilter(); filter != "envoy.filters.network.http_connection_manager" || sub != "" {
				t.Errorf("match: got filter %q subFilter %q, want the connection manager itself", filter, sub)
			}
			// The sidecar's patch must select the listener its ext_proc
			// filter is on, and no other.
			if got, want := p.Match.Listener.portNumber(), patches["HTTP_FILTER"].Match.Listener.portNumber(); got != want || (got != 0) != tt.port {
				t.Errorf("match.listener.portNumber: got %d, want %d as the HTTP_FILTER patch's", got, want)
			}
			if name := p.networkFilter.GetName(); name != "" {
				t.Errorf("patch value renames the filter to %q; a MERGE should keep Istio's", name)
			}
			wantPathNormalization(t, tt.name, mergedHCM(t, p))
		})
	}
}

// TestPathNormalizationRejectsTypos edits the new settings the way a
// hurried operator might, in envoy.yaml and in the EnvoyFilter, and checks
// each edit fails the checks.
func TestPathNormalizationRejectsTypos(t *testing.T) {
	edit := func(t *testing.T, file, old, new string) []byte {
		t.Helper()
		orig, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(string(orig), old)
		if i < 0 {
			t.Fatalf("%s no longer contains %q; update this case", file, old)
		}
		return []byte(string(orig[:i]) + new + string(orig[i+len(old):]))
	}
	for _, tt := range []struct {
		name, old, new, wantErr string
	}{
		{"misspelt field", "merge_slashes: true", "merge_slash: true", `unknown field "merge_slash"`},
		{"misspelt action", "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "path_with_escaped_slashes_action: UNESCAPE_FORWARD", "UNESCAPE_FORWARD"},
		{"string for a bool", "normalize_path: true", `normalize_path: "yes"`, `invalid value for bool field value: "yes"`},
	} {
		t.Run("envoy.yaml: "+tt.name, func(t *testing.T) {
			_, err := ParseBootstrap(edit(t, shippedFile, tt.old, tt.new))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
		t.Run("EnvoyFilter: "+tt.name, func(t *testing.T) {
			_, _, err := loadIstioFilters(edit(t, istioFilterFile, tt.old, tt.new))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "gateway EnvoyFilter: spec.configPatches[1]") {
				t.Errorf("got %v, want an error of the gateway's NETWORK_FILTER patch containing %q", err, tt.wantErr)
			}
		})
	}

	// Values that decode but turn normalisation off are caught by the
	// field checks, not the decoder.
	for _, tt := range []struct{ old, new, want string }{
		{"path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "path_with_escaped_slashes_action: KEEP_UNCHANGED", "path_with_escaped_slashes_action: got KEEP_UNCHANGED"},
		{"path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", "got UNESCAPE_AND_REDIRECT"},
		{"merge_slashes: true", "merge_slashes: false", "merge_slashes: got false"},
		{"          normalize_path: true\n", "", "normalize_path: unset"},
		{"normalize_path: true", "normalize_path: false", "normalize_path: got false"},
	} {
		b, err := ParseBootstrap(edit(t, shippedFile, tt.old, tt.new))
		if err != nil {
			t.Fatalf("%q → %q: %v", tt.old, tt.new, err)
		}
		got := pathNormalizationProblems(shippedHCM(t, b))
		if len(got) != 1 || !strings.Contains(got[0], tt.want) {
			t.Errorf("%q → %q: problems %q, want one containing %q", tt.old, tt.new, got, tt.want)
		}
	}
}
