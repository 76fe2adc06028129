package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// phase names the message a reply is awaited for.
type phase int

const (
	phaseRequestHeaders phase = iota + 1
	phaseRequestBody
	phaseRequestTrailers
	phaseResponseHeaders
	phaseResponseBody
	phaseResponseTrailers
)

func (p phase) String() string {
	switch p {
	case phaseRequestHeaders:
		return "request_headers"
	case phaseRequestBody:
		return "request_body"
	case phaseRequestTrailers:
		return "request_trailers"
	case phaseResponseHeaders:
		return "response_headers"
	case phaseResponseBody:
		return "response_body"
	case phaseResponseTrailers:
		return "response_trailers"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// answers reports whether m is the reply to a message of phase p.
func (p phase) answers(m *extprocsvc.ProcessingResponse) bool {
	switch p {
	case phaseRequestHeaders:
		return m.GetRequestHeaders() != nil
	case phaseRequestBody:
		return m.GetRequestBody() != nil
	case phaseRequestTrailers:
		return m.GetRequestTrailers() != nil
	case phaseResponseHeaders:
		return m.GetResponseHeaders() != nil
	case phaseResponseBody:
		return m.GetResponseBody() != nil
	case phaseResponseTrailers:
		return m.GetResponseTrailers() != nil
	}
	return false
}

func (p phase) request() bool { return p <= phaseRequestTrailers }

// localReply is an answer the front gives by itself, as Envoy's
// sendLocalReply. A zero status means the client is gone and nothing can
// be answered.
type localReply struct {
	status  int
	body    []byte
	headers *extprocsvc.HeaderMutation
	// plain are headers set as they are, not through the processor's
	// mutation rules: the reply of a filter before ext_proc (jwt_authn).
	plain   []header
	details string
	// envoy marks a reply made by Envoy itself (the router, the buffer
	// limit) rather than by the ext_proc filter: whether the filter
	// processes it depends on the Envoy version.
	envoy bool
}

// response is the local reply as the filter chain's encoders see it:
// :status, content-length and a text/plain content-type.
func (lr *localReply) response() *http.Response {
	return &http.Response{
		StatusCode: lr.status,
		Header: http.Header{
			"Content-Type":   {"text/plain"},
			"Content-Length": {strconv.Itoa(len(lr.body))},
		},
		Body:          io.NopCloser(strings.NewReader(string(lr.body))),
		ContentLength: int64(len(lr.body)),
	}
}

// reply is one Recv result handed over by the receiving goroutine.
type reply struct {
	msg *extprocsvc.ProcessingResponse
	err error
}

// exchange is the state of one HTTP request, like Envoy's per-stream
// ext_proc Filter object.
type exchange struct {
	f  *Front
	w  http.ResponseWriter
	r  *http.Request
	st RequestStats

	req, resp dirMode

	stream     extprocsvc.ExternalProcessor_ProcessClient
	cancel     context.CancelFunc
	replies    chan reply
	configSent bool
	// complete is Envoy's processing_complete_: after an immediate
	// response, a failure, a close or a local reply kept from the
	// processor, nothing more goes to it.
	complete bool
	// closed is set once the stream was closed (half-closed and reset) or
	// has ended, so there is nothing left to do with it.
	closed bool

	reqSrc, respSrc *bodySource
	// wholeAtHeaders is snapshotBody's answer for the last headers reply.
	wholeAtHeaders bool

	upCancel     context.CancelCauseFunc // ends the upstream request
	routeTimer   *time.Timer
	upStart      time.Time
	upHeaders    time.Duration // from the upstream request to its response headers
	wroteHeaders bool
	metadata     *structpb.Struct

	// reqHeaders and respHeaders are the header maps as the filters see
	// them, for the attributes (respHeaders is nil until the response).
	reqHeaders, respHeaders *headerMap
	// source is the address the connection manager trusts as the
	// client's (source.address), dest the listener's (destination.address).
	source, dest netip.AddrPort
	// dynamic is the dynamic metadata the filters before ext_proc wrote.
	dynamic                     *corev3.Metadata
	reqAttrsSent, respAttrsSent bool
}

func newExchange(f *Front, w http.ResponseWriter, r *http.Request) *exchange {
	return &exchange{
		f: f, w: w, r: r,
		st: RequestStats{Method: r.Method, Path: r.URL.RequestURI(), Proto: r.Proto,
			Envoy: f.cfg.Envoy.Resolve(), RequestID: r.Header.Get("x-request-id")},
		req: f.req, resp: f.resp,
	}
}

// open starts the ext_proc stream on first use: Envoy opens it with the
// first message it has to send, not before.
func (x *exchange) open() error {
	if x.stream != nil {
		return nil
	}
	ctx, cancel := x.f.streamContext(x.r.Context())
	s, err := x.f.client.Process(ctx)
	if err != nil {
		cancel()
		return err
	}
	x.stream, x.cancel = s, cancel
	x.replies = make(chan reply)
	go receive(ctx, s, x.replies)
	return nil
}

// receive forwards every reply until the stream ends; the last value sent
// carries the stream's error (io.EOF on a clean end).
func receive(ctx context.Context, s extprocsvc.ExternalProcessor_ProcessClient, out chan<- reply) {
	for {
		m, err := s.Recv()
		select {
		case out <- reply{m, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// send opens the stream if need be and sends msg: metadata_context rides
// on every message and attributes on the first of each direction (from
// 1.30), protocol_config on the stream's first message (from 1.34). When
// the stream cannot be opened, ok is false and lr is what the client gets
// (nil: go on unprocessed).
func (x *exchange) send(msg *extprocsvc.ProcessingRequest, p phase) (lr *localReply, ok bool) {
	if err := x.open(); err != nil {
		return x.streamFailed(err), false
	}
	x.addMetadataAndAttributes(msg, p)
	if !x.configSent {
		if x.f.cfg.Envoy.SendsProtocolConfig() {
			msg.ProtocolConfig = &extprocsvc.ProtocolConfiguration{
				RequestBodyMode:  x.req.body,
				ResponseBodyMode: x.resp.body,
			}
		}
		x.configSent = true
	}
	x.st.Sent = append(x.st.Sent, p.String())
	if b := bodyOf(msg); b != nil {
		x.st.Bodies = append(x.st.Bodies, BodyMessage{Phase: p.String(), Bytes: len(b.GetBody()), EndOfStream: b.GetEndOfStream()})
	}
	// A failed Send means the stream is over; its status comes from Recv,
	// so the error is left for the receiving goroutine to report.
	_ = x.stream.Send(msg)
	return nil, true
}

func bodyOf(m *extprocsvc.ProcessingRequest) *extprocsvc.HttpBody {
	if b := m.GetRequestBody(); b != nil {
		return b
	}
	return m.GetResponseBody()
}

// roundTrip sends msg and waits for the reply that answers it, applying
// what Envoy applies on receipt (mode override, dynamic metadata). It
// returns the reply, or nil with a nil localReply when ext_proc is over for
// this request and processing goes on without it (failure_mode_allow, a
// clean close), or a localReply the client must get instead.
func (x *exchange) roundTrip(msg *extprocsvc.ProcessingRequest, p phase) (*extprocsvc.ProcessingResponse, *localReply) {
	if lr, ok := x.send(msg, p); !ok {
		return nil, lr
	}
	timer := time.NewTimer(x.f.timeout)
	defer timer.Stop()
	extended := false
	for {
		m, lr, over := x.await(timer.C)
		if over {
			return nil, lr
		}
		if d := m.GetOverrideMessageTimeout(); d != nil {
			// Honoured once per message, within max_message_timeout.
			if !extended && x.f.overrideTimeoutOK(d.AsDuration()) {
				timer.Reset(d.AsDuration())
				extended = true
			}
			continue
		}
		x.modeOverride(m, p)
		r, lr := x.dispatch(m, p)
		if r != nil {
			x.snapshotBody(p)
			x.replied(p)
		}
		return r, lr
	}
}

// snapshotBody records, when a headers reply comes in, whether the body
// of that direction had already arrived whole (Envoy's
// complete_body_available_ as handleHeadersResponse reads it): Envoy
// decides on the spot, so what arrives after the reply is never part of
// it.
func (x *exchange) snapshotBody(p phase) {
	src := x.reqSrc
	switch p {
	case phaseRequestHeaders:
	case phaseResponseHeaders:
		src = x.respSrc
	default:
		return
	}
	x.wholeAtHeaders = false
	if src == nil {
		return
	}
	if fn := x.f.cfg.headersApplied; fn != nil {
		fn(p, src)
	}
	// A body cut by its peer (an error, not an end) is not whole: Envoy
	// has no end of stream for it. The front acts on the cut once the
	// data before it has gone through (see streamed), one of the timings
	// Envoy can meet.
	done, err, _, _ := src.state()
	x.wholeAtHeaders = done && err == nil
}

// await waits for the next reply while a message is in flight. over is
// set when the exchange with the processor has ended instead: lr is then
// what the client gets (nil: go on unprocessed). A nil timeout never fires.
func (x *exchange) await(timeout <-chan time.Time) (m *extprocsvc.ProcessingResponse, lr *localReply, over bool) {
	select {
	case <-timeout:
		return nil, x.timedOut(), true
	case <-x.r.Context().Done():
		x.st.ClientGone = true
		x.abandon()
		return nil, &localReply{}, true
	case rp := <-x.replies:
		if rp.err != nil {
			return nil, x.streamFailed(rp.err), true
		}
		x.st.Received++
		return rp.msg, nil, false
	}
}

// replied tells Config.OnReply that the reply to a message of phase p has
// come in and is being applied.
func (x *exchange) replied(p phase) {
	if fn := x.f.cfg.OnReply; fn != nil {
		fn(ReplyEvent{Header: x.r.Header, Phase: p.String()})
	}
}

// dispatch sorts a reply: the awaited one, an immediate response, or a
// spurious message.
func (x *exchange) dispatch(m *extprocsvc.ProcessingResponse, p phase) (*extprocsvc.ProcessingResponse, *localReply) {
	if m.GetResponse() != nil {
		x.keepMetadata(m)
	}
	if ir := m.GetImmediateResponse(); ir != nil {
		if x.f.filter.GetDisableImmediateResponse() {
			return nil, x.spurious()
		}
		// Envoy closes the stream before it answers (closeStreamMaybeGraceful).
		x.complete = true
		x.closeMaybeGraceful()
		x.st.Immediate = true
		x.st.ImmediatePhase = p.String()
		code := int(ir.GetStatus().GetCode())
		if code < 200 {
			code = http.StatusOK // Envoy's default for a missing or invalid status
		}
		return nil, &localReply{status: code, body: ir.GetBody(), headers: ir.GetHeaders(), details: ir.GetDetails()}
	}
	if p.answers(m) {
		return m, nil
	}
	return nil, x.spurious()
}

// modeOverride applies mode_override when Envoy would: allowed by the
// filter, in a reply awaited for headers, and on the allow-list if any.
func (x *exchange) modeOverride(m *extprocsvc.ProcessingResponse, p phase) {
	o := m.GetModeOverride()
	if o == nil {
		return
	}
	inHeaders := p == phaseRequestHeaders || p == phaseResponseHeaders
	if !x.f.filter.GetAllowModeOverride() || !inHeaders {
		x.st.IgnoredModeOverrides++
		return
	}
	eff := effectiveOverride(o, x.f.filter.GetProcessingMode())
	if !overrideAllowed(eff, x.f.filter.GetAllowedOverrideModes()) {
		x.st.IgnoredModeOverrides++
		return
	}
	x.st.ModeOverrides++
	x.req, x.resp = modesOf(eff)
}

// keepMetadata merges the reply's dynamic metadata into the request's, for
// the namespaces listed in receiving_namespaces only; Envoy drops the rest.
func (x *exchange) keepMetadata(m *extprocsvc.ProcessingResponse) {
	for ns, v := range m.GetDynamicMetadata().GetFields() {
		if !x.f.receiving[ns] {
			x.st.DroppedMetadata = append(x.st.DroppedMetadata, ns)
			continue
		}
		if x.metadata == nil {
			x.metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		cur := x.metadata.Fields[ns].GetStructValue()
		if cur == nil {
			cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			x.metadata.Fields[ns] = structpb.NewStructValue(cur)
		}
		for k, fv := range v.GetStructValue().GetFields() {
			cur.Fields[k] = fv
		}
	}
}

// timedOut is Envoy's onMessageTimeout: fail open, or 504.
func (x *exchange) timedOut() *localReply {
	x.st.TimedOut = true
	x.abandon()
	if x.f.filter.GetFailureModeAllow() {
		x.st.FailedOpen = true
		return nil
	}
	return &localReply{status: http.StatusGatewayTimeout, details: "ext_proc_error_per-message_timeout_exceeded"}
}

// streamFailed is Envoy's onGrpcError and onGrpcClose.
func (x *exchange) streamFailed(err error) *localReply {
	if errors.Is(err, io.EOF) {
		// The processor ended the stream with OK: Envoy stops talking to
		// it and lets the request go on, whatever failure_mode_allow says.
		x.st.ClosedByProcessor = true
		x.complete, x.closed = true, true
		if x.cancel != nil {
			x.cancel()
		}
		return nil
	}
	if x.r.Context().Err() != nil {
		x.st.ClientGone = true
		x.abandon()
		return &localReply{}
	}
	s := status.Convert(err)
	x.st.GRPCError = s.Code().String() + ": " + s.Message()
	x.abandon()
	if x.f.filter.GetFailureModeAllow() {
		x.st.FailedOpen = true
		return nil
	}
	return &localReply{
		status:  x.f.statusOnError,
		details: fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", s.Code(), s.Message()),
	}
}

// spurious handles a reply that answers nothing awaited: current Envoy
// fails closed unless failure_mode_allow is set.
func (x *exchange) spurious() *localReply {
	x.st.Spurious++
	x.abandon()
	if x.f.filter.GetFailureModeAllow() {
		x.st.FailedOpen = true
		return nil
	}
	return &localReply{status: x.f.statusOnError, details: "ext_proc_error_spurious_message"}
}

// failed ends processing after a reply Envoy refuses (a bad mutation, a
// content-length mismatch) with a local reply carrying status_on_error.
func (x *exchange) failed(err error) *localReply {
	x.abandon()
	return &localReply{status: x.f.statusOnError, details: err.Error()}
}

// abandon stops all processing and closes the stream, as Envoy's
// closeStream does on a failure, a timeout or an immediate response.
func (x *exchange) abandon() {
	x.complete = true
	x.closeStream()
}

// closeStream is Envoy's ExternalProcessorStreamImpl::close: the stream is
// half-closed and reset right after, without waiting for the processor,
// which may therefore see either its end of stream or a cancellation.
func (x *exchange) closeStream() {
	if x.stream == nil || x.closed {
		return
	}
	x.closed = true
	_ = x.stream.CloseSend()
	x.cancel()
}

// closeEarly is 1.37's closeGrpcStreamIfLastRespReceived: once the last
// reply the request needs is in, the stream is closed at once instead of
// when the HTTP stream ends.
func (x *exchange) closeEarly() {
	if x.closed || x.stream == nil {
		return
	}
	x.st.ClosedEarly = true
	x.complete = true
	x.closeMaybeGraceful()
}

// finish ends the exchange: the stream is closed as when Envoy destroys
// the filter, unless it already was.
func (x *exchange) finish() {
	x.st.Metadata = x.metadata
	if x.upCancel != nil {
		defer x.upCancel(nil)
	}
	if x.routeTimer != nil {
		x.routeTimer.Stop()
	}
	for _, s := range []*bodySource{x.reqSrc, x.respSrc} {
		if s != nil {
			s.close()
		}
	}
	x.complete = true
	x.closeMaybeGraceful()
}

// closeMaybeGraceful is closeStreamMaybeGraceful: a plain close, or with
// the runtime guard envoy.reloadable_features.ext_proc_graceful_grpc_close
// (1.34 on, off by default) a half-close that waits for the processor to
// end its side, up to the remote close timeout, before the reset.
func (x *exchange) closeMaybeGraceful() {
	if x.stream == nil || x.closed {
		return
	}
	if !x.f.cfg.GracefulClose {
		x.closeStream()
		return
	}
	x.closed = true
	defer x.cancel()
	_ = x.stream.CloseSend()
	timer := time.NewTimer(remoteCloseTimeout)
	defer timer.Stop()
	for {
		select {
		case rp := <-x.replies:
			if rp.err != nil {
				return
			}
			// Nothing is awaited any more: Envoy ignores such messages.
			x.st.Received++
		case <-x.r.Context().Done():
			return
		case <-timer.C:
			x.st.StreamLeftOpen = true
			return
		}
	}
}
