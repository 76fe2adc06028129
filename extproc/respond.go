package extproc

import (
	"math"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/tokengate/tokengate/extproc/llm"
)

// headerSet collects response headers, each name once: a policy's custom
// name that equals a standard one must not send the value twice. Every
// counted request gets a reply with headers, so they are built with few
// allocations: values share one buffer, and options come in blocks.
type headerSet struct {
	opts  []*corev3.HeaderValueOption
	slots []headerSlot // allocated, not yet used
	buf   []byte
}

type headerSlot struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

func (h *headerSet) set(name, value string) {
	if !h.fresh(name) {
		return
	}
	at := h.start()
	h.buf = append(h.buf, value...)
	h.add(name, at)
}

// setWith sets name to what appendValue writes, in the shared buffer.
func (h *headerSet) setWith(name string, appendValue func([]byte) []byte) {
	if !h.fresh(name) {
		return
	}
	at := h.start()
	h.buf = appendValue(h.buf)
	h.add(name, at)
}

// setBytes sets name to a copy of v.
func (h *headerSet) setBytes(name string, v []byte) {
	if !h.fresh(name) {
		return
	}
	at := h.start()
	h.buf = append(h.buf, v...)
	h.add(name, at)
}

func (h *headerSet) setInt(name string, v int64) {
	if !h.fresh(name) {
		return
	}
	at := h.start()
	h.buf = strconv.AppendInt(h.buf, v, 10)
	h.add(name, at)
}

// fresh reports whether name is to be set: not empty, not set before.
func (h *headerSet) fresh(name string) bool {
	if name == "" {
		return false
	}
	for _, o := range h.opts {
		if o.Header.Key == name {
			return false
		}
	}
	return true
}

// start returns where the next value begins in the shared buffer.
func (h *headerSet) start() int {
	if h.buf == nil {
		h.buf = make([]byte, 0, 128)
	}
	return len(h.buf)
}

// add sets name to the value at h.buf[at:]. Later appends may move h.buf,
// but never the bytes an earlier header already points at.
func (h *headerSet) add(name string, at int) {
	if len(h.slots) == 0 {
		h.slots = make([]headerSlot, 4)
		if h.opts == nil {
			h.opts = make([]*corev3.HeaderValueOption, 0, 8)
		}
	}
	s := &h.slots[0]
	h.slots = h.slots[1:]
	s.val.Key, s.val.RawValue = name, h.buf[at:len(h.buf):len(h.buf)]
	s.opt.Header, s.opt.AppendAction = &s.val, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	h.opts = append(h.opts, &s.opt)
}

func (h *headerSet) mutation() *extprocv3.HeaderMutation {
	if len(h.opts) == 0 {
		return nil
	}
	return &extprocv3.HeaderMutation{SetHeaders: h.opts}
}

// retryHeaders tell the client how long to wait: whole seconds rounded up,
// and milliseconds rounded up, so that a client honouring either is never
// early.
func (p *processor) retryHeaders(h *headerSet, wait time.Duration) int64 {
	secs := int64(math.Ceil(wait.Seconds()))
	ms := (wait + time.Millisecond - 1) / time.Millisecond
	h.setInt("retry-after", secs)
	h.setInt("retry-after-ms", int64(ms))
	h.setInt(p.policy.Headers().RetryAfter, secs)
	return secs
}

// refuse answers the request at once with r, shaped as the request's
// API sends its own errors so that its SDK understands it (llm.ErrorBody).
func (p *processor) refuse(r llm.Refusal, h *headerSet, message, details string, md *meta) *extprocv3.ProcessingResponse {
	body, name, value := llm.ErrorBody(p.route.API.Provider(), r, message)
	h.set(name, value)
	// The SDKs show the request's id with an error: Envoy's x-request-id,
	// under the provider's own name, so a refusal can be found in the logs.
	if id := p.id.headers.get("x-request-id"); id != "" {
		h.set(llm.RequestIDHeader(p.route.API.Provider()), id)
	}
	return immediate(typev3.StatusCode(r.Status()), h, body, details, md)
}

func immediate(code typev3.StatusCode, h *headerSet, body []byte, details string, md *meta) *extprocv3.ProcessingResponse {
	h.set("content-type", "application/json")
	resp := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: code},
			Headers: h.mutation(),
			Body:    body,
			Details: details,
		}},
	}
	md.attach(resp)
	return resp
}

func continueRequestHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{},
	}}
}

func continueRequestBody() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{},
	}}
}

// rewriteRequestBody replaces a buffered request body. With headers sent
// and the body buffered, Envoy keeps content-length and rejects a body that
// does not match it, so the new length goes with the new body.
func rewriteRequestBody(body []byte) *extprocv3.ProcessingResponse {
	var h headerSet
	h.setInt("content-length", int64(len(body)))
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: h.mutation(),
			BodyMutation:   &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}},
		}},
	}}
}

func continueResponseHeaders(m *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: m}},
	}}
}

func continueResponseBody(m *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{HeaderMutation: m}},
	}}
}

// continueAny answers a message we have nothing to say about, in the shape
// its phase requires: Envoy rejects a reply of the wrong kind.
func continueRequestTrailers() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
}

// continueResponseTrailers lets the trailers go, with m set on them: once
// the body has passed, trailers are where headers can still go.
func continueResponseTrailers(m *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{HeaderMutation: m}}}
}

func continueAny(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return continueRequestHeaders()
	case *extprocv3.ProcessingRequest_RequestBody:
		return continueRequestBody()
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return continueResponseHeaders(nil)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return continueResponseBody(nil)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return continueRequestTrailers()
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return continueResponseTrailers(nil)
	}
	return nil
}
