package envoy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Issue 18: tokengate on Envoy Gateway. envoy/gateway/ holds the Gateway
// API objects and Envoy Gateway policies; these tests decode them into the
// upstream Go types (sigs.k8s.io/gateway-api v1.6, Envoy Gateway v1.9's
// api/v1alpha1) and check what Envoy Gateway would make of them against
// envoy.yaml.

const gatewayDir = "gateway"

// gatewayScheme knows the Gateway API's and Envoy Gateway's kinds, and no
// other: a document of any other kind (or version) is an error.
var gatewayScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{gwapiv1.AddToScheme, gwapiv1b1.AddToScheme, egv1a1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// gatewayObjects are the decoded documents of envoy/gateway, by kind.
type gatewayObjects struct {
	classes         []*gwapiv1.GatewayClass
	gateways        []*gwapiv1.Gateway
	routes          []*gwapiv1.HTTPRoute
	grants          []*gwapiv1b1.ReferenceGrant
	extensions      []*egv1a1.EnvoyExtensionPolicy
	clientPolicies  []*egv1a1.ClientTrafficPolicy
	backendPolicies []*egv1a1.BackendTrafficPolicy
}

// decodeStrict decodes one Kubernetes document into the Go type its
// apiVersion and kind name, as `kubectl apply` with strict field
// validation would: an unknown or duplicate field, a field in the wrong
// case or a value of the wrong type is an error.
func decodeStrict(scheme *runtime.Scheme, doc []byte) (runtime.Object, error) {
	ser := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme,
		k8sjson.SerializerOptions{Yaml: true, Strict: true})
	obj, gvk, err := ser.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	if gvk.Version == "" || gvk.Kind == "" {
		return nil, errors.New("document has no apiVersion or kind")
	}
	return obj, nil
}

// splitDocuments splits a multi-document YAML stream, dropping documents
// that hold only comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		empty := true
		for line := range strings.SplitSeq(string(doc), "\n") {
			if l := strings.TrimSpace(line); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, doc)
		}
	}
}

// parseGatewayManifests decodes every document of files (name → content)
// strictly.
func parseGatewayManifests(files map[string][]byte) (*gatewayObjects, error) {
	var objs gatewayObjects
	var errs []error
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		docs, err := splitDocuments(files[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		for i, doc := range docs {
			obj, err := decodeStrict(gatewayScheme, doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s document %d: %w", name, i+1, err))
				continue
			}
			switch o := obj.(type) {
			case *gwapiv1.GatewayClass:
				objs.classes = append(objs.classes, o)
			case *gwapiv1.Gateway:
				objs.gateways = append(objs.gateways, o)
			case *gwapiv1.HTTPRoute:
				objs.routes = append(objs.routes, o)
			case *gwapiv1b1.ReferenceGrant:
				objs.grants = append(objs.grants, o)
			case *egv1a1.EnvoyExtensionPolicy:
				objs.extensions = append(objs.extensions, o)
			case *egv1a1.ClientTrafficPolicy:
				objs.clientPolicies = append(objs.clientPolicies, o)
			case *egv1a1.BackendTrafficPolicy:
				objs.backendPolicies = append(objs.backendPolicies, o)
			default:
				errs = append(errs, fmt.Errorf("%s document %d: %T is not a kind envoy/gateway is expected to hold", name, i+1, obj))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &objs, nil
}

func readGatewayFiles(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(gatewayDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no manifests in %s", gatewayDir)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = data
	}
	return files
}

func loadGatewayManifests(t *testing.T) *gatewayObjects {
	t.Helper()
	objs, err := parseGatewayManifests(readGatewayFiles(t))
	if err != nil {
		t.Fatalf("%s: %v", gatewayDir, err)
	}
	return objs
}

// The translation below is Envoy Gateway v1.9's, from
// internal/gatewayapi/envoyextensionpolicy.go (buildExtProc: API → IR) and
// internal/xds/translator/extproc.go (extProcConfig, buildProcessingMode:
// IR → Envoy). That module's internal packages cannot be imported, so the
// mapping is restated here, field by field; a value the CRD's enums would
// refuse is an error instead of a default.

// egExtProcGRPCTimeout is the grpc_service.timeout Envoy Gateway sets on
// every ext_proc filter (defaultExtServiceRequestTimeout); no field of
// EnvoyExtensionPolicy changes it.
const egExtProcGRPCTimeout = 10 * time.Second

var egBodyModes = map[egv1a1.ExtProcBodyProcessingMode]extprocv3.ProcessingMode_BodySendMode{
	egv1a1.BufferedExtProcBodyProcessingMode:          extprocv3.ProcessingMode_BUFFERED,
	egv1a1.BufferedPartialExtBodyHeaderProcessingMode: extprocv3.ProcessingMode_BUFFERED_PARTIAL,
	egv1a1.StreamedExtProcBodyProcessingMode:          extprocv3.ProcessingMode_STREAMED,
	egv1a1.FullDuplexStreamedExtBodyProcessingMode:    extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED,
}

// egExtProcFilter is the ext_proc filter Envoy Gateway v1.9 configures for
// ep, its gRPC target named cluster.
func egExtProcFilter(ep *egv1a1.ExtProc, cluster string) (*extprocv3.ExternalProcessor, error) {
	out := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
			Timeout:         durationpb.New(egExtProcGRPCTimeout),
		},
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SKIP,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SKIP,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
	}
	if ep.MessageTimeout != nil {
		d, err := time.ParseDuration(string(*ep.MessageTimeout))
		if err != nil {
			return nil, fmt.Errorf("messageTimeout: %w", err)
		}
		out.MessageTimeout = durationpb.New(d)
	}
	if ep.ShadowMode != nil {
		out.ObservabilityMode = *ep.ShadowMode
	}
	if ep.FailOpen != nil {
		out.FailureModeAllow = *ep.FailOpen
	}
	if ep.StatusOnError != nil {
		out.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode(*ep.StatusOnError)}
	}
	body := func(field string, m *egv1a1.ExtProcBodyProcessingMode, mode *extprocv3.ProcessingMode_BodySendMode, trailers *extprocv3.ProcessingMode_HeaderSendMode) error {
		if m == nil {
			return nil
		}
		v, ok := egBodyModes[*m]
		if !ok {
			return fmt.Errorf("%s: %q is not one of Streamed, Buffered, BufferedPartial, FullDuplexStreamed", field, *m)
		}
		*mode = v
		if v == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED {
			*trailers = extprocv3.ProcessingMode_SEND
		}
		return nil
	}
	pm := out.ProcessingMode
	if m := ep.ProcessingMode; m != nil {
		if r := m.Request; r != nil {
			pm.RequestHeaderMode = extprocv3.ProcessingMode_SEND
			if err := body("processingMode.request.body", r.Body, &pm.RequestBodyMode, &pm.RequestTrailerMode); err != nil {
				return nil, err
			}
			out.RequestAttributes = slices.Clone(r.Attributes)
		}
		if r := m.Response; r != nil {
			pm.ResponseHeaderMode = extprocv3.ProcessingMode_SEND
			if err := body("processingMode.response.body", r.Body, &pm.ResponseBodyMode, &pm.ResponseTrailerMode); err != nil {
				return nil, err
			}
			out.ResponseAttributes = slices.Clone(r.Attributes)
		}
		out.AllowModeOverride = m.AllowModeOverride
	}
	if md := ep.Metadata; md != nil && (md.AccessibleNamespaces != nil || md.WritableNamespaces != nil) {
		out.MetadataOptions = &extprocv3.MetadataOptions{}
		if md.AccessibleNamespaces != nil {
			out.MetadataOptions.ForwardingNamespaces = &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: slices.Clone(md.AccessibleNamespaces)}
		}
		if md.WritableNamespaces != nil {
			out.MetadataOptions.ReceivingNamespaces = &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: slices.Clone(md.WritableNamespaces)}
		}
	}
	if err := out.ValidateAll(); err != nil {
		return nil, err
	}
	return out, nil
}

var egEscapedSlashes = map[egv1a1.PathEscapedSlashAction]hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction{
	egv1a1.KeepUnchangedAction: hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
	egv1a1.RejectRequestAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
	egv1a1.UnescapeAndRedirect: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
	egv1a1.UnescapeAndForward:  hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD,
}

// egConnectionManager is the part of the connection manager Envoy Gateway
// v1.9 generates for a listener under ctp that these tests compare
// (internal/xds/translator/listener.go, internal/gatewayapi/
// clienttrafficpolicy.go): normalize_path always on, slashes merged and
// %2F redirected unless the policy says otherwise, the TCP peer as the
// client's address unless a custom header replaces it.
func egConnectionManager(ctp *egv1a1.ClientTrafficPolicy) (*hcmv3.HttpConnectionManager, error) {
	hcm := &hcmv3.HttpConnectionManager{
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		UseRemoteAddress:             wrapperspb.Bool(true),
	}
	if p := ctp.Spec.Path; p != nil {
		if p.DisableMergeSlashes != nil {
			hcm.MergeSlashes = !*p.DisableMergeSlashes
		}
		if p.EscapedSlashesAction != nil {
			a, ok := egEscapedSlashes[*p.EscapedSlashesAction]
			if !ok {
				return nil, fmt.Errorf("path.escapedSlashesAction: %q is not one of KeepUnchanged, RejectRequest, UnescapeAndRedirect, UnescapeAndForward", *p.EscapedSlashesAction)
			}
			hcm.PathWithEscapedSlashesAction = a
		}
	}
	if d := ctp.Spec.ClientIPDetection; d != nil {
		if d.CustomHeader != nil {
			hcm.UseRemoteAddress = wrapperspb.Bool(false)
			hcm.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{{Name: "envoy.extensions.http.original_ip_detection.custom_header"}}
		}
		if x := d.XForwardedFor; x != nil && x.NumTrustedHops != nil && *x.NumTrustedHops > 0 {
			hcm.XffNumTrustedHops = *x.NumTrustedHops - 1
		}
	}
	return hcm, nil
}

// targets reports whether refs name kind/name (Gateway API group).
func targets(refs []gwapiv1.LocalPolicyTargetReferenceWithSectionName, kind, name string) bool {
	for _, r := range refs {
		if string(r.Group) == gwapiv1.GroupName && string(r.Kind) == kind && string(r.Name) == name {
			return true
		}
	}
	return false
}

func TestGatewayManifestsWiring(t *testing.T) {
	objs := loadGatewayManifests(t)
	for what, n := range map[string]int{
		"GatewayClass": len(objs.classes), "Gateway": len(objs.gateways), "HTTPRoute": len(objs.routes),
		"ReferenceGrant": len(objs.grants), "EnvoyExtensionPolicy": len(objs.extensions),
		"ClientTrafficPolicy": len(objs.clientPolicies), "BackendTrafficPolicy": len(objs.backendPolicies),
	} {
		if n != 1 {
			t.Fatalf("%s: got %d, want 1", what, n)
		}
	}
	class, gw, route := objs.classes[0], objs.gateways[0], objs.routes[0]
	eep, ctp, btp, grant := objs.extensions[0], objs.clientPolicies[0], objs.backendPolicies[0], objs.grants[0]

	if got := string(class.Spec.ControllerName); got != "gateway.envoyproxy.io/gatewayclass-controller" {
		t.Errorf("GatewayClass controllerName: got %q, want Envoy Gateway's", got)
	}
	if string(gw.Spec.GatewayClassName) != class.Name {
		t.Errorf("Gateway gatewayClassName: got %q, want %q", gw.Spec.GatewayClassName, class.Name)
	}
	ns := gw.Namespace
	if ns == "" {
		t.Fatal("Gateway has no namespace")
	}
	for kind, got := range map[string]string{"HTTPRoute": route.Namespace, "EnvoyExtensionPolicy": eep.Namespace,
		"ClientTrafficPolicy": ctp.Namespace, "BackendTrafficPolicy": btp.Namespace} {
		if got != ns {
			t.Errorf("%s namespace: got %q, want the Gateway's %q (policies target objects of their own namespace)", kind, got, ns)
		}
	}
	attached := false
	for _, p := range route.Spec.ParentRefs {
		if string(p.Name) == gw.Name && (p.Namespace == nil || string(*p.Namespace) == ns) {
			attached = true
			if p.SectionName != nil && !slices.ContainsFunc(gw.Spec.Listeners, func(l gwapiv1.Listener) bool { return l.Name == *p.SectionName }) {
				t.Errorf("HTTPRoute parentRef sectionName %q: no such listener", *p.SectionName)
			}
		}
	}
	if !attached {
		t.Errorf("HTTPRoute %q is not attached to Gateway %q", route.Name, gw.Name)
	}
	if !targets(eep.Spec.TargetRefs, "HTTPRoute", route.Name) {
		t.Errorf("EnvoyExtensionPolicy targetRefs %v: want HTTPRoute %q (only the LLM route pays for ext_proc)", eep.Spec.TargetRefs, route.Name)
	}
	if !targets(ctp.Spec.TargetRefs, "Gateway", gw.Name) {
		t.Errorf("ClientTrafficPolicy targetRefs %v: want Gateway %q", ctp.Spec.TargetRefs, gw.Name)
	}
	if !targets(btp.Spec.TargetRefs, "HTTPRoute", route.Name) {
		t.Errorf("BackendTrafficPolicy targetRefs %v: want HTTPRoute %q", btp.Spec.TargetRefs, route.Name)
	}

	// The ext_proc backend is the tokengate Service that the Istio
	// manifest (and so the Helm chart, which a test keeps in step with it)
	// creates, on its gRPC port.
	if len(eep.Spec.ExtProc) != 1 {
		t.Fatalf("EnvoyExtensionPolicy extProc: got %d, want 1", len(eep.Spec.ExtProc))
	}
	ep := eep.Spec.ExtProc[0]
	if len(ep.BackendRefs) != 1 {
		t.Fatalf("extProc backendRefs: got %d, want 1", len(ep.BackendRefs))
	}
	ref := ep.BackendRefs[0].BackendObjectReference
	m := loadShippedManifest(t)
	svc := tokengateService(t, m)
	refNS := eep.Namespace
	if ref.Namespace != nil {
		refNS = string(*ref.Namespace)
	}
	if ref.Kind != nil && *ref.Kind != "Service" || ref.Group != nil && *ref.Group != "" {
		t.Errorf("extProc backendRef: %v/%v, want a core Service", ref.Group, ref.Kind)
	}
	if string(ref.Name) != m.service.Metadata.Name || refNS != m.service.Metadata.Namespace || ref.Port == nil || int(*ref.Port) != svc.port {
		t.Errorf("extProc backendRef: %s/%s port %v, want tokengate's Service %s/%s port %d",
			refNS, ref.Name, ref.Port, m.service.Metadata.Namespace, m.service.Metadata.Name, svc.port)
	}
	if refNS != eep.Namespace {
		granted := grant.Namespace == refNS &&
			slices.ContainsFunc(grant.Spec.From, func(f gwapiv1b1.ReferenceGrantFrom) bool {
				return string(f.Group) == egv1a1.GroupName && f.Kind == "EnvoyExtensionPolicy" && string(f.Namespace) == eep.Namespace
			}) &&
			slices.ContainsFunc(grant.Spec.To, func(to gwapiv1b1.ReferenceGrantTo) bool {
				return to.Group == "" && to.Kind == "Service" && (to.Name == nil || string(*to.Name) == string(ref.Name))
			})
		if !granted {
			t.Errorf("ReferenceGrant %s/%s does not let EnvoyExtensionPolicies of %q reach Service %s/%s", grant.Namespace, grant.Name, eep.Namespace, refNS, ref.Name)
		}
	}
}

func TestGatewayExtProcMatchesEnvoyYAML(t *testing.T) {
	objs := loadGatewayManifests(t)
	shipped := loadShipped(t)
	want, err := ExtProcFilter(shipped)
	if err != nil {
		t.Fatal(err)
	}
	for _, eep := range objs.extensions {
		for i := range eep.Spec.ExtProc {
			got, err := egExtProcFilter(&eep.Spec.ExtProc[i], "tokengate")
			if err != nil {
				t.Fatalf("EnvoyExtensionPolicy %s extProc[%d]: %v", eep.Name, i, err)
			}
			// Each setting by name first, for a readable failure …
			g, w := got, want
			checks := []struct {
				field     string
				got, want any
			}{
				{"request_header_mode", g.GetProcessingMode().GetRequestHeaderMode(), w.GetProcessingMode().GetRequestHeaderMode()},
				{"request_body_mode", g.GetProcessingMode().GetRequestBodyMode(), w.GetProcessingMode().GetRequestBodyMode()},
				{"request_trailer_mode", g.GetProcessingMode().GetRequestTrailerMode(), w.GetProcessingMode().GetRequestTrailerMode()},
				{"response_header_mode", g.GetProcessingMode().GetResponseHeaderMode(), w.GetProcessingMode().GetResponseHeaderMode()},
				{"response_body_mode", g.GetProcessingMode().GetResponseBodyMode(), w.GetProcessingMode().GetResponseBodyMode()},
				{"response_trailer_mode", g.GetProcessingMode().GetResponseTrailerMode(), w.GetProcessingMode().GetResponseTrailerMode()},
				{"allow_mode_override", g.GetAllowModeOverride(), w.GetAllowModeOverride()},
				{"message_timeout", g.GetMessageTimeout().AsDuration(), w.GetMessageTimeout().AsDuration()},
				{"failure_mode_allow", g.GetFailureModeAllow(), w.GetFailureModeAllow()},
				{"metadata_options.forwarding_namespaces", g.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), w.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()},
				{"metadata_options.receiving_namespaces", g.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(), w.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()},
				{"request_attributes", g.GetRequestAttributes(), w.GetRequestAttributes()},
			}
			for _, c := range checks {
				if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
					t.Errorf("%s extProc[%d] → %s: got %v, want %v as in envoy.yaml", eep.Name, i, c.field, c.got, c.want)
				}
			}
			// … then the whole filter, so a setting added to envoy.yaml
			// and not here fails too. The gRPC service is Envoy Gateway's:
			// its cluster, and the 10 s timeout it sets on every ext_proc
			// filter (envoy.yaml: 300 s, the route timeout).
			g, w = proto.Clone(got).(*extprocv3.ExternalProcessor), proto.Clone(want).(*extprocv3.ExternalProcessor)
			g.GrpcService, w.GrpcService = nil, nil
			if !proto.Equal(g, w) {
				t.Errorf("%s extProc[%d]: ext_proc config differs from envoy.yaml's (gRPC service aside):\n got %v\nwant %v", eep.Name, i, g, w)
			}
			for _, p := range forwardingProblems(got) {
				t.Errorf("%s extProc[%d]: %s", eep.Name, i, p)
			}
		}
	}

	// The tokengate cluster's settings that Envoy Gateway exposes.
	cluster := shippedCluster(t, shipped, "tokengate")
	ep := objs.extensions[0].Spec.ExtProc[0]
	bs := ep.BackendSettings
	if bs == nil {
		t.Fatal("extProc backendSettings: unset; envoy.yaml's tokengate cluster sets circuit breakers, a connect timeout and a gRPC health check")
	}
	th := cluster.GetCircuitBreakers().GetThresholds()[0]
	if cb := bs.CircuitBreaker; cb == nil || cb.MaxParallelRequests == nil || cb.MaxPendingRequests == nil ||
		uint32(*cb.MaxParallelRequests) != th.GetMaxRequests().GetValue() || uint32(*cb.MaxPendingRequests) != th.GetMaxPendingRequests().GetValue() {
		t.Errorf("backendSettings.circuitBreaker: got %+v, want maxParallelRequests %d, maxPendingRequests %d as in envoy.yaml",
			bs.CircuitBreaker, th.GetMaxRequests().GetValue(), th.GetMaxPendingRequests().GetValue())
	}
	if to := bs.Timeout; to == nil || to.TCP == nil || to.TCP.ConnectTimeout == nil {
		t.Error("backendSettings.timeout.tcp.connectTimeout: unset")
	} else if d, err := time.ParseDuration(string(*to.TCP.ConnectTimeout)); err != nil || d != cluster.GetConnectTimeout().AsDuration() {
		t.Errorf("backendSettings.timeout.tcp.connectTimeout: got %s, want %v as in envoy.yaml", *to.TCP.ConnectTimeout, cluster.GetConnectTimeout().AsDuration())
	}
	hc := cluster.GetHealthChecks()[0]
	if bs.HealthCheck == nil || bs.HealthCheck.Active == nil {
		t.Fatal("backendSettings.healthCheck.active: unset; envoy.yaml checks grpc.health.v1")
	}
	a := bs.HealthCheck.Active
	if a.Type != egv1a1.ActiveHealthCheckerTypeGRPC {
		t.Errorf("healthCheck.active.type: got %q, want GRPC", a.Type)
	}
	dur := func(d *gwapiv1.Duration) time.Duration {
		if d == nil {
			return 0
		}
		v, err := time.ParseDuration(string(*d))
		if err != nil {
			t.Errorf("duration %q: %v", *d, err)
		}
		return v
	}
	u32 := func(p *uint32) uint32 {
		if p == nil {
			return 0
		}
		return *p
	}
	if dur(a.Timeout) != hc.GetTimeout().AsDuration() || dur(a.Interval) != hc.GetInterval().AsDuration() ||
		u32(a.UnhealthyThreshold) != hc.GetUnhealthyThreshold().GetValue() || u32(a.HealthyThreshold) != hc.GetHealthyThreshold().GetValue() {
		t.Errorf("healthCheck.active: got timeout %v interval %v unhealthy %d healthy %d, want envoy.yaml's %v %v %d %d",
			dur(a.Timeout), dur(a.Interval), u32(a.UnhealthyThreshold), u32(a.HealthyThreshold),
			hc.GetTimeout().AsDuration(), hc.GetInterval().AsDuration(), hc.GetUnhealthyThreshold().GetValue(), hc.GetHealthyThreshold().GetValue())
	}
}

func TestGatewayListenerAndRouteMatchEnvoyYAML(t *testing.T) {
	objs := loadGatewayManifests(t)
	shipped := loadShipped(t)
	hcm, err := egConnectionManager(objs.clientPolicies[0])
	if err != nil {
		t.Fatal(err)
	}
	wantPathNormalization(t, "ClientTrafficPolicy", hcm)
	for _, p := range clientAddressProblems(hcm) {
		t.Errorf("ClientTrafficPolicy: %s", p)
	}
	want := shippedHCM(t, shipped)
	if hcm.GetXffNumTrustedHops() != want.GetXffNumTrustedHops() {
		t.Errorf("ClientTrafficPolicy → xff_num_trusted_hops %d, want %d as in envoy.yaml", hcm.GetXffNumTrustedHops(), want.GetXffNumTrustedHops())
	}

	l, err := firstListener(shipped)
	if err != nil {
		t.Fatal(err)
	}
	conn := objs.clientPolicies[0].Spec.Connection
	if conn == nil || conn.BufferLimit == nil || conn.BufferLimit.Value() != int64(l.GetPerConnectionBufferLimitBytes().GetValue()) {
		t.Errorf("ClientTrafficPolicy connection.bufferLimit: got %v, want %d bytes as envoy.yaml's listener (buffered bodies past it get 413)", conn, l.GetPerConnectionBufferLimitBytes().GetValue())
	}
	upstream := shippedCluster(t, shipped, "openai")
	bc := objs.backendPolicies[0].Spec.Connection
	if bc == nil || bc.BufferLimit == nil || bc.BufferLimit.Value() != int64(upstream.GetPerConnectionBufferLimitBytes().GetValue()) {
		t.Errorf("BackendTrafficPolicy connection.bufferLimit: got %v, want %d bytes as envoy.yaml's openai cluster", bc, upstream.GetPerConnectionBufferLimitBytes().GetValue())
	}

	wantTimeout := want.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetTimeout().AsDuration()
	for _, r := range objs.routes[0].Spec.Rules {
		if r.Timeouts == nil || r.Timeouts.Request == nil {
			t.Errorf("HTTPRoute rule %v: timeouts.request unset (Envoy Gateway's default 15 s cuts long streamed answers)", r.Name)
			continue
		}
		if d, err := time.ParseDuration(string(*r.Timeouts.Request)); err != nil || d != wantTimeout {
			t.Errorf("HTTPRoute timeouts.request: got %s, want %v as envoy.yaml's route", *r.Timeouts.Request, wantTimeout)
		}
	}
}

// TestGatewayManifestsRejectTypos edits the manifests the way a hurried
// operator might and checks that each edit fails the parsing or the
// comparison with envoy.yaml.
func TestGatewayManifestsRejectTypos(t *testing.T) {
	orig := readGatewayFiles(t)
	if _, err := parseGatewayManifests(orig); err != nil {
		t.Fatalf("unedited files: %v", err)
	}
	want, err := ExtProcFilter(loadShipped(t))
	if err != nil {
		t.Fatal(err)
	}
	// check parses the edited files and compares what Envoy Gateway would
	// make of the policies with envoy.yaml, returning the first problem.
	check := func(files map[string][]byte) error {
		objs, err := parseGatewayManifests(files)
		if err != nil {
			return err
		}
		for _, eep := range objs.extensions {
			for i := range eep.Spec.ExtProc {
				got, err := egExtProcFilter(&eep.Spec.ExtProc[i], "tokengate")
				if err != nil {
					return err
				}
				g, w := proto.Clone(got).(*extprocv3.ExternalProcessor), proto.Clone(want).(*extprocv3.ExternalProcessor)
				g.GrpcService, w.GrpcService = nil, nil
				if !proto.Equal(g, w) {
					return fmt.Errorf("ext_proc differs from envoy.yaml's: got %v", g)
				}
			}
		}
		for _, ctp := range objs.clientPolicies {
			hcm, err := egConnectionManager(ctp)
			if err != nil {
				return err
			}
			if p := pathNormalizationProblems(hcm); len(p) > 0 {
				return errors.New(strings.Join(p, "; "))
			}
		}
		return nil
	}
	tests := []struct {
		name, file, old, new, wantErr string
	}{
		{"misspelt ext_proc field", "extproc.yaml", "messageTimeout: 1s", "mesageTimeout: 1s", `unknown field "spec.extProc[0].mesageTimeout"`},
		{"wrong case", "extproc.yaml", "allowModeOverride: true", "allowmodeoverride: true", `unknown field "spec.extProc[0].processingMode.allowmodeoverride"`},
		{"misspelt body mode", "extproc.yaml", "      request:\n        body: Buffered", "      request:\n        body: Bufferd", `"Bufferd" is not one of`},
		{"streamed request body", "extproc.yaml", "      request:\n        body: Buffered", "      request:\n        body: Streamed", "ext_proc differs"},
		{"fail open", "extproc.yaml", "failOpen: false", "failOpen: true", "ext_proc differs"},
		{"failOpen as a string", "extproc.yaml", "failOpen: false", `failOpen: "false"`, "cannot unmarshal string"},
		{"other message timeout", "extproc.yaml", "messageTimeout: 1s", "messageTimeout: 200ms", "ext_proc differs"},
		{"namespace dropped", "extproc.yaml", "writableNamespaces: [tokengate]", "writableNamespaces: []", "ext_proc differs"},
		{"attributes as one string", "extproc.yaml", "attributes: [source.address]", "attributes: source.address", "cannot unmarshal string"},
		{"duplicate key", "extproc.yaml", "    failOpen: false\n", "    failOpen: false\n    failOpen: true\n", `key "failOpen" already set in map`},
		{"misspelt kind", "extproc.yaml", "kind: EnvoyExtensionPolicy", "kind: EnvoyExtensionPolcy", `no kind "EnvoyExtensionPolcy" is registered`},
		{"wrong apiVersion", "extproc.yaml", "apiVersion: gateway.envoyproxy.io/v1alpha1", "apiVersion: gateway.envoyproxy.io/v1", "no kind"},
		{"misspelt Gateway API field", "gateway.yaml", "gatewayClassName: envoy-gateway", "gatewayClass: envoy-gateway", `unknown field "spec.gatewayClass"`},
		{"misspelt route timeout", "gateway.yaml", "      request: 300s", "      requests: 300s", `unknown field "spec.rules[0].timeouts.requests"`},
		{"misspelt escaped slashes action", "gateway.yaml", "escapedSlashesAction: UnescapeAndForward", "escapedSlashesAction: UnescapeAndForwards", `"UnescapeAndForwards" is not one of`},
		{"misspelt grant field", "extproc.yaml", "  from:\n", "  form:\n", `unknown field "spec.form"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := string(orig[tt.file])
			i := strings.Index(data, tt.old)
			if i < 0 {
				t.Fatalf("%s no longer contains %q; update this case", tt.file, tt.old)
			}
			files := map[string][]byte{}
			for k, v := range orig {
				files[k] = v
			}
			files[tt.file] = []byte(data[:i] + tt.new + data[i+len(tt.old):])
			err := check(files)
			if err == nil {
				t.Fatalf("accepted %q → %q", tt.old, tt.new)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error: got %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
