package front

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
)

// configure checks the filter configuration the way Envoy would at load
// time, refuses what the front cannot imitate, and derives the settings
// used per request.
func (f *Front) configure() error {
	fc := f.filter
	if fc == nil {
		return errors.New("Config.Filter is nil")
	}
	if err := fc.ValidateAll(); err != nil {
		return fmt.Errorf("invalid ext_proc filter config: %w", err)
	}
	if f.cfg.ExtProcAddr == "" {
		return errors.New("Config.ExtProcAddr is empty")
	}
	up, err := parseUpstream(f.cfg.Upstream)
	if err != nil {
		return err
	}
	f.upstream = strings.TrimSuffix(up, "/")

	var unsupported []string
	check := func(set bool, field string) {
		if set {
			unsupported = append(unsupported, field)
		}
	}
	check(fc.GetGrpcService() == nil, "grpc_service (only gRPC processors are supported)")
	check(fc.GetObservabilityMode(), "observability_mode")
	check(fc.GetForwardRules() != nil, "forward_rules")
	check(fc.GetSendBodyWithoutWaitingForHeaderResponse(), "send_body_without_waiting_for_header_response")
	check(fc.GetProcessingRequestModifier() != nil, "processing_request_modifier")
	check(fc.GetOnProcessingResponse() != nil, "on_processing_response")
	check(fc.GetMetadataOptions().GetClusterMetadataForwardingNamespaces() != nil, "metadata_options.cluster_metadata_forwarding_namespaces")
	// Envoy before 1.30 accepts forwarding_namespaces and the attributes
	// and ignores them: nothing to evaluate then.
	if f.cfg.Envoy.ForwardsMetadataAndAttributes() {
		var unknownReq, unknownResp []string
		f.reqAttrs, unknownReq = compileAttributes(fc.GetRequestAttributes())
		f.respAttrs, unknownResp = compileAttributes(fc.GetResponseAttributes())
		for _, e := range append(unknownReq, unknownResp...) {
			unsupported = append(unsupported, fmt.Sprintf("attribute %q", e))
		}
		f.fwdUntyped = fc.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()
		f.fwdTyped = fc.GetMetadataOptions().GetForwardingNamespaces().GetTyped()
	}
	pm := fc.GetProcessingMode()
	for _, m := range []struct {
		name string
		err  error
	}{
		{"processing_mode.request_body_mode", supportedBody(pm.GetRequestBodyMode())},
		{"processing_mode.response_body_mode", supportedBody(pm.GetResponseBodyMode())},
	} {
		if m.err != nil {
			unsupported = append(unsupported, m.name+": "+m.err.Error())
		}
	}
	check(f.cfg.GracefulClose && (f.cfg.Envoy.Resolve() == Envoy129 || f.cfg.Envoy.Resolve() == Envoy133),
		"Config.GracefulClose before 1.34 (ext_proc_graceful_grpc_close came with 1.34)")
	if len(unsupported) > 0 {
		return fmt.Errorf("ext_proc settings the front cannot imitate: %s", strings.Join(unsupported, "; "))
	}
	if f.cfg.JWTAuthn != nil {
		if f.jwt, err = newJWTAuthn(f.cfg.JWTAuthn); err != nil {
			return err
		}
	}

	f.req, f.resp = modesOf(pm)
	f.timeout = DefaultMessageTimeout
	if d := fc.GetMessageTimeout(); d != nil {
		f.timeout = d.AsDuration()
	}
	f.maxTimeout = fc.GetMaxMessageTimeout().AsDuration()
	f.statusOnError = http.StatusInternalServerError
	if s := fc.GetStatusOnError(); s != nil && s.GetCode() != 0 {
		f.statusOnError = int(s.GetCode())
	}
	f.receiving = map[string]bool{}
	for _, ns := range fc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped() {
		f.receiving[ns] = true
	}
	if f.checker, err = newChecker(fc.GetMutationRules()); err != nil {
		return err
	}
	for _, hv := range fc.GetGrpcService().GetInitialMetadata() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		if f.initialMD == nil {
			f.initialMD = metadata.MD{}
		}
		f.initialMD.Append(hv.GetKey(), v)
	}
	return nil
}

// overrideTimeoutOK reports whether an override_message_timeout is taken:
// between 1 ms and max_message_timeout (0, the default, disables the API).
func (f *Front) overrideTimeoutOK(d time.Duration) bool {
	return d >= time.Millisecond && d <= f.maxTimeout
}
