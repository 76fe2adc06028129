package front

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// hopByHop headers belong to one connection; Envoy's connection manager
// strips them before the filters see the request.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true,
}

// errLocalReply aborts the upstream request body when the processor
// answered the client itself mid-body.
var errLocalReply = errors.New("front: request answered locally")

// errRouteTimeout cancels the upstream request when the route times out.
var errRouteTimeout = errors.New("front: route timeout")

// upstreamFailureText is the body of the router's 503 when the upstream
// cannot be reached.
const upstreamFailureText = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"

// outgoing is a body to send on: exact bytes, the body as it comes (src),
// or (streamed) src through the processor chunk by chunk.
type outgoing struct {
	body     []byte
	hasBody  bool
	src      *bodySource
	streamed bool
	// first is, for a STREAMED body, the data that arrived while the
	// headers were with the processor: it goes as one chunk.
	first *chunk
}

// requestHeaders builds the header map Envoy's filters see: pseudo-headers
// first, then the client's headers lower-cased, plus what the connection
// manager adds before any filter runs (x-forwarded-proto, x-request-id).
func requestHeaders(r *http.Request) headerMap {
	var h headerMap
	path := r.RequestURI
	if path == "" {
		path = r.URL.RequestURI()
	}
	h.add(":authority", r.Host)
	h.add(":path", path)
	h.add(":method", r.Method)
	h.add(":scheme", "http")
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range r.Header[k] {
			h.add(lk, v)
		}
	}
	if !h.has("content-length") && r.ContentLength > 0 {
		h.add("content-length", strconv.FormatInt(r.ContentLength, 10))
	}
	if !h.has("x-forwarded-proto") {
		h.add("x-forwarded-proto", "http")
	}
	if !h.has("x-request-id") {
		h.add("x-request-id", newRequestID())
	}
	return h
}

// newRequestID makes a random UUID (version 4), the form Envoy generates.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// requestTrailers says where the client's trailers are once its body has
// ended; nil when Envoy would drop them (HTTP/1.1 without
// http_protocol_options.enable_trailers).
func (x *exchange) requestTrailers() func() http.Header {
	if x.r.ProtoMajor < 2 && !x.f.cfg.DownstreamHTTP1Trailers {
		return nil
	}
	return func() http.Header { return x.r.Trailer }
}

// queueLimit bounds what waits in a STREAMED queue or in a body source
// before reading pauses: the buffer limit, or Envoy's default.
func (x *exchange) queueLimit() int64 {
	if x.f.cfg.BufferLimit > 0 {
		return x.f.cfg.BufferLimit
	}
	return defaultBufferLimit
}

// decode runs the request side: headers, then the body per its mode. The
// body is read from the start, as Envoy's codec keeps reading while the
// headers are with the processor.
func (x *exchange) decode(h *headerMap) (*outgoing, *localReply) {
	// HTTP/2 marks a request without body by END_STREAM on its headers,
	// which net/http reports as a zero length.
	noBody := x.r.Body == nil || x.r.Body == http.NoBody || x.r.ContentLength == 0
	if !noBody {
		x.reqSrc = newBodySource(x.r.Body, x.queueLimit(), x.requestTrailers())
	}
	src := x.reqSrc
	out := &outgoing{}
	sentHeaders := false
	if x.req.sendHeaders {
		msg := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocsvc.HttpHeaders{Headers: h.proto(), EndOfStream: noBody},
		}}
		// Envoy drops content-length right after sending the headers, so
		// the processor still sees it but the upstream does not.
		x.dropContentLength(h, x.req)
		m, lr := x.roundTrip(msg, phaseRequestHeaders)
		if lr != nil {
			return nil, lr
		}
		if m != nil {
			sentHeaders = true
			if lr := x.headersReply(h, m.GetRequestHeaders(), &x.req, out); lr != nil {
				return nil, lr
			}
			if x.f.cfg.Envoy.closesAfterLastReply() && x.resp.noExternalProcess() &&
				(noBody || x.req.body == extprocv3.ProcessingMode_NONE && !x.req.sendTrailers) {
				x.closeEarly()
			}
		}
	} else {
		x.dropContentLength(h, x.req)
	}
	// Envoy's complete_body_available_: the whole request, trailers
	// included, was in when the headers reply was applied.
	whole := sentHeaders && x.wholeAtHeaders
	switch {
	case out.hasBody: // replaced by CONTINUE_AND_REPLACE: what the client sends is drained
		if src != nil {
			go io.Copy(io.Discard, src.reader(x.r.Context().Done()))
		}
	case noBody:
	case x.complete || x.req.body == extprocv3.ProcessingMode_NONE:
		out.src = src
	case x.req.body == extprocv3.ProcessingMode_STREAMED && !whole:
		out.streamed, out.src = true, src
		if sentHeaders {
			if c := src.takeAll(); len(c.data) > 0 || c.eof {
				out.first = &c
			}
		}
	default:
		// BUFFERED; BUFFERED_PARTIAL as long as the body fits; and a
		// STREAMED body that arrived whole during the headers round trip,
		// which Envoy sends as one buffered message.
		body, _, lr := x.bufferedBody(h, phaseRequestBody, x.req, src, whole)
		if lr != nil {
			return nil, lr
		}
		out.body, out.hasBody = body, true
	}
	return out, nil
}

// dropContentLength removes content-length where Envoy does (streamed
// bodies, or buffered ones whose headers the processor never sees).
func (x *exchange) dropContentLength(h *headerMap, m dirMode) {
	if !x.complete && !x.f.filter.GetAllowContentLengthHeader() && m.dropsContentLength() {
		h.del("content-length")
	}
}

// headersReply applies a headers reply: its header mutation, and for
// CONTINUE_AND_REPLACE the replacement body, after which Envoy sends
// nothing more for this direction.
func (x *exchange) headersReply(h *headerMap, hr *extprocsvc.HeadersResponse, m *dirMode, out *outgoing) *localReply {
	cr := hr.GetResponse()
	if hm := cr.GetHeaderMutation(); hm != nil {
		if err := x.f.checker.applyMutation(h, hm, m.dropsContentLength(), &x.st); err != nil {
			return x.failed(err)
		}
	}
	if cr.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE {
		if bm := cr.GetBodyMutation(); bm != nil {
			h.del("content-length")
			out.body, out.hasBody = mutateBody(nil, bm), true
		}
		m.body = extprocv3.ProcessingMode_NONE
		m.sendTrailers = false
	}
	return nil
}

// bufferedBody waits for the whole body of src and sends it in one
// message, as Envoy's BUFFERED mode does. The message carries
// end_of_stream, except when the body ended in trailers after the headers
// reply (onTrailers then sends what was buffered with end_of_stream
// false, and nothing at all when no data came); a body that was whole,
// trailers included, while the headers were with the processor goes with
// end_of_stream all the same (whole). In SEND trailer mode the trailers
// follow in their own message. The headers are still held, so a body
// reply's header mutation applies; a body mutation that disagrees with a
// remaining content-length is refused, as Envoy refuses it: the processor
// must fix or remove content-length. Past the buffer limit, a request gets
// Envoy's 413 and a response its 500.
func (x *exchange) bufferedBody(h *headerMap, p phase, m dirMode, src *bodySource, whole bool) ([]byte, http.Header, *localReply) {
	limit := x.f.cfg.BufferLimit
	src.setHigh(limit)
	for {
		ch := src.wait()
		done, err, _, pending := src.state()
		if limit > 0 && pending > limit {
			if p.request() {
				return nil, nil, &localReply{status: http.StatusRequestEntityTooLarge, body: []byte("Payload Too Large"),
					details: "request_payload_too_large", envoy: true}
			}
			x.complete = true
			return nil, nil, &localReply{status: http.StatusInternalServerError, body: []byte("Internal Server Error"),
				details: "response_payload_too_large"}
		}
		if done {
			if err != nil {
				// The peer went away mid-body: nothing to answer.
				if x.r.Context().Err() != nil {
					x.st.ClientGone = true
				}
				x.abandon()
				return nil, nil, &localReply{}
			}
			break
		}
		select {
		case <-ch:
		case <-x.r.Context().Done():
			x.st.ClientGone = true
			x.abandon()
			return nil, nil, &localReply{}
		}
	}
	body := src.takeAll().data
	trailers := src.endTrailers()
	x.noteTrailers(p, trailers)
	if x.complete {
		return body, trailers, nil
	}
	if eos := whole || trailers == nil; eos || len(body) > 0 {
		reply, lr := x.roundTrip(bodyMessage(p, body, eos), p)
		if lr != nil {
			return nil, nil, lr
		}
		if reply != nil {
			cr := commonOf(reply, p)
			if hm := cr.GetHeaderMutation(); hm != nil {
				if err := x.f.checker.applyMutation(h, hm, m.dropsContentLength(), &x.st); err != nil {
					return nil, nil, x.failed(err)
				}
			}
			if bm := cr.GetBodyMutation(); bm != nil {
				if cl, ok := h.get("content-length"); ok {
					if n, err := strconv.ParseUint(cl, 10, 64); err == nil && n != uint64(len(bm.GetBody())) {
						return nil, nil, x.failed(errors.New("mismatch between content length and the length of the mutated body"))
					}
				}
				body = mutateBody(body, bm)
			}
		}
	}
	if trailers != nil && m.sendTrailers && !x.complete {
		var lr *localReply
		if trailers, lr = x.trailersRoundTrip(p+1, trailers); lr != nil {
			return nil, nil, lr
		}
	}
	return body, trailers, nil
}

// noteTrailers records that a body ended in trailers.
func (x *exchange) noteTrailers(p phase, trailers http.Header) {
	if trailers == nil {
		return
	}
	if p.request() {
		x.st.RequestTrailers = true
	} else {
		x.st.ResponseTrailers = true
	}
}

// trailersRoundTrip sends trailers (SEND trailer mode) and applies the
// reply's header mutation to them.
func (x *exchange) trailersRoundTrip(p phase, trailers http.Header) (http.Header, *localReply) {
	hm := headerMapOf(trailers)
	msg := &extprocsvc.ProcessingRequest{}
	if p == phaseRequestTrailers {
		msg.Request = &extprocsvc.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocsvc.HttpTrailers{Trailers: hm.proto()}}
	} else {
		msg.Request = &extprocsvc.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocsvc.HttpTrailers{Trailers: hm.proto()}}
	}
	reply, lr := x.roundTrip(msg, p)
	if lr != nil || reply == nil {
		return trailers, lr
	}
	mut := reply.GetRequestTrailers().GetHeaderMutation()
	if p == phaseResponseTrailers {
		mut = reply.GetResponseTrailers().GetHeaderMutation()
	}
	if mut != nil {
		if err := x.f.checker.applyMutation(&hm, mut, false, &x.st); err != nil {
			return nil, x.failed(err)
		}
	}
	if x.f.cfg.Envoy.closesAfterLastReply() && (p == phaseResponseTrailers || x.resp.noExternalProcess()) {
		x.closeEarly()
	}
	return hm.header(), nil
}

func bodyMessage(p phase, body []byte, eos bool) *extprocsvc.ProcessingRequest {
	hb := &extprocsvc.HttpBody{Body: body, EndOfStream: eos}
	if p == phaseRequestBody {
		return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}}
	}
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}}
}

// commonOf returns the CommonResponse of a body reply (nil-safe).
func commonOf(m *extprocsvc.ProcessingResponse, p phase) *extprocsvc.CommonResponse {
	if p == phaseRequestBody {
		return m.GetRequestBody().GetResponse()
	}
	return m.GetResponseBody().GetResponse()
}

func mutateBody(body []byte, bm *extprocsvc.BodyMutation) []byte {
	switch bm.GetMutation().(type) {
	case *extprocsvc.BodyMutation_Body:
		return bm.GetBody()
	case *extprocsvc.BodyMutation_ClearBody:
		if bm.GetClearBody() {
			return nil
		}
	}
	return body
}

// endReader calls end once r has ended.
type endReader struct {
	r    io.Reader
	end  func()
	once sync.Once
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(e.end)
	}
	return n, err
}

// forward sends the request upstream, as the router does. A STREAMED body
// is fed by its own goroutine while the upstream reads it; the exchange is
// left to that goroutine until it is done. The route timeout starts once
// the request has been sent whole.
func (x *exchange) forward(h *headerMap, out *outgoing) (*http.Response, *localReply) {
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	authority, _ := h.get(":authority")
	ctx, cancel := context.WithCancelCause(x.r.Context())
	x.upCancel = cancel
	if d := x.f.cfg.RouteTimeout; d > 0 {
		x.routeTimer = time.AfterFunc(time.Hour, func() { cancel(errRouteTimeout) })
		x.routeTimer.Stop()
	}
	startRoute := func() {
		if x.routeTimer != nil {
			x.routeTimer.Reset(x.f.cfg.RouteTimeout)
		}
	}

	var body io.Reader
	var fed chan *localReply
	x.st.UpstreamCalled = true
	switch {
	case out.streamed:
		pr, pw := io.Pipe()
		body = pr
		fed = make(chan *localReply, 1)
		go func() {
			_, lr, err := x.streamed(out.src, phaseRequestBody, x.req, out.first, func(b []byte) error {
				_, err := pw.Write(b)
				return err
			})
			if lr != nil {
				err = errLocalReply
				cancel(errLocalReply)
			}
			pw.CloseWithError(err) // nil closes with EOF
			fed <- lr
		}()
	case out.src != nil:
		body = out.src.reader(ctx.Done())
	case out.hasBody:
		body = bytes.NewReader(out.body)
	}
	if body != nil {
		body = &endReader{r: body, end: startRoute}
	} else {
		startRoute()
	}
	req, err := http.NewRequestWithContext(ctx, method, x.f.upstream+path, body)
	if err != nil {
		x.abandon()
		return nil, &localReply{status: http.StatusBadRequest, body: []byte("Bad Request"), details: err.Error()}
	}
	req.Host = authority
	for _, e := range h.entries {
		if strings.HasPrefix(e.key, ":") || hopByHop[e.key] || e.key == "host" || e.key == "content-length" {
			continue
		}
		req.Header.Add(e.key, e.value)
	}
	if !h.has("user-agent") {
		req.Header["User-Agent"] = []string{""} // Envoy adds none
	}
	req.ContentLength = 0
	if cl, ok := h.get("content-length"); ok {
		req.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
	} else if body != nil {
		req.ContentLength = -1 // no length: chunked, as Envoy re-frames it
	}
	x.upStart = time.Now()
	resp, err := x.f.http.Do(req)
	if fed != nil {
		if lr := <-fed; lr != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, lr
		}
	}
	if err != nil {
		switch {
		case errors.Is(context.Cause(ctx), errRouteTimeout):
			x.st.UpstreamError = err.Error()
			return nil, &localReply{status: http.StatusGatewayTimeout, body: []byte("upstream request timeout"),
				details: "upstream_response_timeout", envoy: true}
		case x.r.Context().Err() != nil:
			x.st.ClientGone = true
			x.abandon()
			return nil, &localReply{}
		}
		x.st.UpstreamError = err.Error()
		return nil, &localReply{status: http.StatusServiceUnavailable, body: []byte(upstreamFailureText),
			details: "upstream_reset_before_response_started{connection_failure}", envoy: true}
	}
	x.upHeaders = time.Since(x.upStart)
	return resp, nil
}
