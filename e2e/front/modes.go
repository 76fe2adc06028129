package front

import (
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
)

// dirMode is what is sent to the processor in one direction (request or
// response), as Envoy's ProcessorState keeps it.
type dirMode struct {
	sendHeaders  bool
	body         extprocv3.ProcessingMode_BodySendMode
	sendTrailers bool
}

// modesOf splits a ProcessingMode into its two directions. Headers are sent
// unless SKIP (DEFAULT means SEND for headers); trailers only when SEND
// (DEFAULT means SKIP for trailers), as Envoy's setProcessingModeInternal.
func modesOf(pm *extprocv3.ProcessingMode) (req, resp dirMode) {
	req = dirMode{
		sendHeaders:  pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP,
		body:         pm.GetRequestBodyMode(),
		sendTrailers: pm.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND,
	}
	resp = dirMode{
		sendHeaders:  pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP,
		body:         pm.GetResponseBodyMode(),
		sendTrailers: pm.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND,
	}
	return req, resp
}

// noExternalProcess is Envoy's ProcessorState::noExternalProcess: nothing
// of this direction goes to the processor.
func (m dirMode) noExternalProcess() bool {
	return !m.sendHeaders && m.body == extprocv3.ProcessingMode_NONE && !m.sendTrailers
}

// dropsContentLength mirrors Envoy's shouldRemoveContentLength: when the
// body may change piece by piece, the original length cannot be promised,
// so Envoy removes the header and re-frames the message.
func (m dirMode) dropsContentLength() bool {
	switch m.body {
	case extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		return true
	case extprocv3.ProcessingMode_BUFFERED:
		return !m.sendHeaders
	}
	return false
}

// effectiveOverride builds the mode Envoy switches to on a mode_override:
// it starts from the filter's configured mode (not the current one), takes
// the header and trailer modes of the override unless DEFAULT, and always
// takes both body modes, so an override that only names the response body
// mode also sets the request body mode to NONE.
func effectiveOverride(override, configured *extprocv3.ProcessingMode) *extprocv3.ProcessingMode {
	m := &extprocv3.ProcessingMode{}
	if configured != nil {
		m = proto.Clone(configured).(*extprocv3.ProcessingMode)
	}
	if v := override.GetRequestHeaderMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.RequestHeaderMode = v
	}
	if v := override.GetResponseHeaderMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.ResponseHeaderMode = v
	}
	if v := override.GetRequestTrailerMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.RequestTrailerMode = v
	}
	if v := override.GetResponseTrailerMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.ResponseTrailerMode = v
	}
	m.RequestBodyMode = override.GetRequestBodyMode()
	m.ResponseBodyMode = override.GetResponseBodyMode()
	return m
}

// overrideAllowed applies allowed_override_modes: when the list is set, the
// effective mode must equal one entry, request_header_mode aside.
func overrideAllowed(m *extprocv3.ProcessingMode, allowed []*extprocv3.ProcessingMode) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		if m.GetRequestBodyMode() == a.GetRequestBodyMode() &&
			m.GetRequestTrailerMode() == a.GetRequestTrailerMode() &&
			m.GetResponseHeaderMode() == a.GetResponseHeaderMode() &&
			m.GetResponseBodyMode() == a.GetResponseBodyMode() &&
			m.GetResponseTrailerMode() == a.GetResponseTrailerMode() {
			return true
		}
	}
	return false
}

// supportedBody reports whether the front can emulate a body mode. The
// full-duplex and gRPC modes follow other rules (no message timeout, flow
// control) and are refused rather than imitated badly.
func supportedBody(m extprocv3.ProcessingMode_BodySendMode) error {
	switch m {
	case extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_STREAMED,
		extprocv3.ProcessingMode_BUFFERED, extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		return nil
	}
	return fmt.Errorf("body mode %v is not supported by the front", m)
}
