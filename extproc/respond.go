package extproc

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/limiter"
)

// headerSet collects response headers, each name once: a policy's custom
// name that equals a standard one must not send the value twice.
type headerSet struct {
	opts []*corev3.HeaderValueOption
	seen map[string]bool
}

func (h *headerSet) set(name, value string) {
	if name == "" || h.seen[name] {
		return
	}
	if h.seen == nil {
		h.seen = make(map[string]bool, 8)
	}
	h.seen[name] = true
	h.opts = append(h.opts, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
}

func (h *headerSet) mutation() *extprocv3.HeaderMutation {
	if len(h.opts) == 0 {
		return nil
	}
	return &extprocv3.HeaderMutation{SetHeaders: h.opts}
}

// rateHeaders are the OpenAI-style x-ratelimit-* headers and the policy's
// custom names for the same figures.
// A budget the key does not have is not advertised.
func (p *processor) rateHeaders(h *headerSet, d limiter.Decision) {
	if d.Limit > 0 {
		remaining := strconv.FormatInt(d.Remaining, 10)
		h.set("x-ratelimit-limit-tokens", strconv.FormatInt(d.Limit, 10))
		h.set("x-ratelimit-remaining-tokens", remaining)
		h.set("x-ratelimit-reset-tokens", d.Reset.Round(time.Millisecond).String())
		h.set(p.policy.Headers.RemainingTokens, remaining)
	}
	if d.Quota.Limit > 0 {
		h.set(p.policy.Headers.RemainingQuotaTokens, strconv.FormatInt(d.Quota.Remaining, 10))
	}
}

// retryHeaders tell the client how long to wait: whole seconds rounded up,
// and milliseconds rounded up, so that a client honouring either is never
// early.
func (p *processor) retryHeaders(h *headerSet, wait time.Duration) int64 {
	secs := int64(math.Ceil(wait.Seconds()))
	ms := (wait + time.Millisecond - 1) / time.Millisecond
	h.set("retry-after", strconv.FormatInt(secs, 10))
	h.set("retry-after-ms", strconv.FormatInt(int64(ms), 10))
	h.set(p.policy.Headers.RetryAfter, strconv.FormatInt(secs, 10))
	return secs
}

// apiError is the OpenAI error envelope, so SDKs parse our refusals.
type apiError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func errorBody(message, typ, code string) []byte {
	var e apiError
	e.Error.Message, e.Error.Type, e.Error.Code = message, typ, code
	b, _ := json.Marshal(e)
	return b
}

func immediate(code typev3.StatusCode, h *headerSet, body []byte, details string, md *structpb.Struct) *extprocv3.ProcessingResponse {
	h.set("content-type", "application/json")
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: code},
			Headers: h.mutation(),
			Body:    body,
			Details: details,
		}},
		DynamicMetadata: md,
	}
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
	h.set("content-length", strconv.Itoa(len(body)))
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
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil
}

// meta builds the dynamic metadata Envoy's access log can print, in the
// tokengate namespace, straight into protobuf values.
type meta map[string]*structpb.Value

func newMeta(decision string) meta {
	return meta{"decision": structpb.NewStringValue(decision)}
}

func (m meta) num(k string, v int64) meta {
	m[k] = structpb.NewNumberValue(float64(v))
	return m
}

func (m meta) str(k, v string) meta {
	m[k] = structpb.NewStringValue(v)
	return m
}

func (m meta) build() *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		Namespace: structpb.NewStructValue(&structpb.Struct{Fields: m}),
	}}
}
