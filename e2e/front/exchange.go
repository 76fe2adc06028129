package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// phase names the message a reply is awaited for.
type phase int

const (
	phaseRequestHeaders phase = iota + 1
	phaseRequestBody
	phaseResponseHeaders
	phaseResponseBody
)

func (p phase) String() string {
	switch p {
	case phaseRequestHeaders:
		return "request_headers"
	case phaseRequestBody:
		return "request_body"
	case phaseResponseHeaders:
		return "response_headers"
	case phaseResponseBody:
		return "response_body"
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
	case phaseResponseHeaders:
		return m.GetResponseHeaders() != nil
	case phaseResponseBody:
		return m.GetResponseBody() != nil
	}
	return false
}

// localReply is an answer the front gives by itself, as Envoy's
// sendLocalReply. A zero status means the client is gone and nothing can
// be answered.
type localReply struct {
	status  int
	body    []byte
	headers *extprocsvc.HeaderMutation
	details string
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
	// response, a failure or a close, nothing more goes to the processor.
	complete bool
	// reset is set once the stream was cancelled or has ended, so there is
	// nothing left to drain.
	reset bool

	upCancel     context.CancelFunc // ends the upstream request
	wroteHeaders bool
	metadata     *structpb.Struct
}

func newExchange(f *Front, w http.ResponseWriter, r *http.Request) *exchange {
	return &exchange{
		f: f, w: w, r: r,
		st:  RequestStats{Method: r.Method, Path: r.URL.RequestURI()},
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

// roundTrip sends msg and waits for the reply that answers it, applying
// what Envoy applies on receipt (mode override, dynamic metadata). It
// returns the reply, or nil with a nil localReply when ext_proc is over for
// this request and processing goes on without it (failure_mode_allow, a
// clean close), or a localReply the client must get instead.
func (x *exchange) roundTrip(msg *extprocsvc.ProcessingRequest, p phase) (*extprocsvc.ProcessingResponse, *localReply) {
	if err := x.open(); err != nil {
		return nil, x.streamFailed(err)
	}
	if !x.configSent {
		msg.ProtocolConfig = &extprocsvc.ProtocolConfiguration{
			RequestBodyMode:  x.req.body,
			ResponseBodyMode: x.resp.body,
		}
		x.configSent = true
	}
	x.st.Sent = append(x.st.Sent, p.String())
	// A failed Send means the stream is over; its status comes from Recv,
	// so the error is left for the receiving goroutine to report.
	_ = x.stream.Send(msg)

	timer := time.NewTimer(x.f.timeout)
	defer timer.Stop()
	extended := false
	for {
		select {
		case <-timer.C:
			return nil, x.timedOut()
		case <-x.r.Context().Done():
			x.st.ClientGone = true
			x.abandon()
			return nil, &localReply{}
		case rp := <-x.replies:
			if rp.err != nil {
				return nil, x.streamFailed(rp.err)
			}
			x.st.Received++
			m := rp.msg
			if d := m.GetOverrideMessageTimeout(); d != nil {
				// Honoured once per message, within max_message_timeout.
				if !extended && x.f.overrideTimeoutOK(d.AsDuration()) {
					timer.Reset(d.AsDuration())
					extended = true
				}
				continue
			}
			x.modeOverride(m, p)
			return x.dispatch(m, p)
		}
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
		x.complete = true
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
		x.abandon()
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

// abandon stops all processing and resets the stream.
func (x *exchange) abandon() {
	x.complete = true
	if x.cancel != nil && !x.reset {
		x.reset = true
		x.cancel()
	}
}

// finish ends the stream: when it is still healthy, the send side is
// closed and the processor's end awaited, so it sees a clean end of stream
// as it would from Envoy; otherwise it was already reset.
func (x *exchange) finish() {
	x.st.Metadata = x.metadata
	if x.upCancel != nil {
		defer x.upCancel()
	}
	if x.stream == nil || x.reset {
		return
	}
	defer x.cancel()
	_ = x.stream.CloseSend()
	timer := time.NewTimer(drainTimeout)
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
