package envoy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Issue 16: tokengate can key budgets by what Envoy verified (the dynamic
// metadata of jwt_authn or ext_authz) or by the client's address. Every
// gateway config shipped forwards both to ext_proc, and works the address
// out so that a client cannot choose it.

// metadataWriters are the HTTP filters whose dynamic metadata tokengate
// can key by, by config type, with the namespace each writes: a fixed
// name, whatever the filter is called.
var metadataWriters = map[string]string{
	"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication": "envoy.filters.http.jwt_authn",
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz":          "envoy.filters.http.ext_authz",
}

// wantForwarding lists what the ext_proc filter must forward.
var (
	wantForwarded  = []string{"envoy.filters.http.jwt_authn", "envoy.filters.http.ext_authz"}
	wantAttributes = []string{"source.address"}
)

// forwardingProblems lists what keeps ep from sending tokengate the
// identity it can key by.
func forwardingProblems(ep *extprocv3.ExternalProcessor) []string {
	var out []string
	got := ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()
	for _, ns := range wantForwarded {
		if !slices.Contains(got, ns) {
			out = append(out, fmt.Sprintf("metadata_options.forwarding_namespaces.untyped: got %q, want %s in it", got, ns))
		}
	}
	for _, a := range wantAttributes {
		if !slices.Contains(ep.GetRequestAttributes(), a) {
			out = append(out, fmt.Sprintf("request_attributes: got %q, want %s in it", ep.GetRequestAttributes(), a))
		}
	}
	return out
}

// clientAddressProblems lists what in hcm lets a client choose the address
// Envoy trusts as its own (source.address), or lets a filter whose
// metadata is forwarded run after ext_proc, where its namespace would be
// missing from the request headers message.
func clientAddressProblems(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	switch ura := hcm.GetUseRemoteAddress(); {
	case ura == nil:
		out = append(out, "use_remote_address: unset (Envoy's default, false, takes the client's address from x-forwarded-for, which the client writes), want true")
	case !ura.GetValue():
		out = append(out, "use_remote_address: got false, want true (the client's address is the TCP peer's)")
	}
	if len(hcm.GetOriginalIpDetectionExtensions()) > 0 {
		out = append(out, "original_ip_detection_extensions: set, they replace use_remote_address and xff_num_trusted_hops")
	}
	extProc := false
	for _, f := range hcm.GetHttpFilters() {
		typ := strings.TrimPrefix(f.GetTypedConfig().GetTypeUrl(), "type.googleapis.com/")
		if f.GetTypedConfig().MessageIs((*extprocv3.ExternalProcessor)(nil)) {
			extProc = true
		} else if ns := metadataWriters[typ]; ns != "" && extProc {
			out = append(out, fmt.Sprintf("http filter %q writes %s after ext_proc: tokengate would not see it with the request headers", f.GetName(), ns))
		}
	}
	return out
}

func TestShippedForwardsIdentity(t *testing.T) {
	b := loadShipped(t)
	ep, err := ExtProcFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range forwardingProblems(ep) {
		t.Error(p)
	}
	hcm := shippedHCM(t, b)
	for _, p := range clientAddressProblems(hcm) {
		t.Error(p)
	}
	// The demo's Envoy is reached by clients directly: no proxy before it
	// is trusted.
	if got := hcm.GetXffNumTrustedHops(); got != 0 {
		t.Errorf("xff_num_trusted_hops: got %d, want 0 (clients reach the demo's Envoy directly)", got)
	}
	if got := ep.GetResponseAttributes(); len(got) > 0 {
		t.Errorf("response_attributes: got %q, want none (tokengate reads none)", got)
	}
}

// jwtFilter is a jwt_authn filter in envoy.yaml's indentation.
const jwtFilter = `          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: https://idp.example
                  local_jwks: {inline_string: '{"keys":[]}'}
                  payload_in_metadata: jwt_payload
              rules:
              - match: {prefix: /}
                requires: {provider_name: idp}
`

// TestForwardingProblems edits envoy.yaml the way that would break keys
// by identity and checks each edit is reported, and that a jwt_authn
// filter before ext_proc loads and passes.
func TestForwardingProblems(t *testing.T) {
	orig, err := os.ReadFile(shippedFile)
	if err != nil {
		t.Fatal(err)
	}
	const extProc, router = "          - name: envoy.filters.http.ext_proc\n", "          - name: envoy.filters.http.router\n"
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"jwt_authn before ext_proc", extProc, jwtFilter + extProc, ""},
		{"jwt_authn after ext_proc", router, jwtFilter + router, `"envoy.filters.http.jwt_authn" writes envoy.filters.http.jwt_authn after ext_proc`},
		{"use_remote_address removed", "          use_remote_address: true\n", "", "use_remote_address: unset"},
		{"use_remote_address false", "          use_remote_address: true\n", "          use_remote_address: false\n", "use_remote_address: got false"},
		{"ext_authz not forwarded", "untyped: [envoy.filters.http.jwt_authn, envoy.filters.http.ext_authz]", "untyped: [envoy.filters.http.jwt_authn]", "want envoy.filters.http.ext_authz in it"},
		{"no attributes", "request_attributes: [source.address]", "request_attributes: []", "want source.address in it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := strings.Index(string(orig), tt.old)
			if i < 0 {
				t.Fatalf("%s no longer contains %q; update this case", shippedFile, tt.old)
			}
			b, err := ParseBootstrap([]byte(string(orig[:i]) + tt.new + string(orig[i+len(tt.old):])))
			if err != nil {
				t.Fatal(err)
			}
			ep, err := ExtProcFilter(b)
			if err != nil {
				t.Fatal(err)
			}
			got := append(forwardingProblems(ep), clientAddressProblems(shippedHCM(t, b))...)
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("problems %q, want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

// TestIstioForwardsIdentity checks the EnvoyFilter as TestShippedForwardsIdentity
// checks envoy.yaml. The gateway's connection manager patch says
// use_remote_address: true (Istio's default on a gateway) and leaves
// xff_num_trusted_hops to Istio's gatewayTopology; the sidecar's keeps
// Istio's use_remote_address: false, where the last x-forwarded-for entry
// is the one the gateway appended.
func TestIstioForwardsIdentity(t *testing.T) {
	gateway, sidecar := loadShippedIstioFilters(t)
	for _, tt := range []struct {
		name          string
		ef            *envoyFilter
		remoteAddress bool
	}{
		{"gateway", gateway, true},
		{"sidecar variant", sidecar, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			patches := patchesByApplyTo(t, tt.ef)
			if p := patches["HTTP_FILTER"]; p == nil || p.extProc == nil {
				t.Fatal("no ext_proc HTTP_FILTER patch")
			} else {
				for _, problem := range forwardingProblems(p.extProc) {
					t.Error(problem)
				}
			}
			p := patches["NETWORK_FILTER"]
			if p == nil || p.hcm == nil {
				t.Fatal("no connection manager patch")
			}
			switch ura := p.hcm.GetUseRemoteAddress(); {
			case tt.remoteAddress && !ura.GetValue():
				t.Errorf("patch use_remote_address: got %v (set: %v), want true", ura.GetValue(), ura != nil)
			case !tt.remoteAddress && ura != nil:
				t.Errorf("patch sets use_remote_address: %v; a sidecar keeps Istio's false", ura.GetValue())
			}
			if p.hcm.GetXffNumTrustedHops() != 0 || len(p.hcm.GetOriginalIpDetectionExtensions()) > 0 {
				t.Error("patch sets xff_num_trusted_hops or original_ip_detection_extensions: Istio's gatewayTopology sets how many proxies are trusted")
			}
			if !tt.remoteAddress {
				return
			}
			// Merged into what Istio generates, as far as the patch goes.
			base := istioDefaultHCM(t)
			base.UseRemoteAddress = nil
			merged := mergedHCMOnto(t, base, p)
			for _, problem := range clientAddressProblems(merged) {
				t.Error(problem)
			}
		})
	}
}
