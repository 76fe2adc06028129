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

// outgoing is the request body to send upstream: exact bytes, the
// client's own body untouched, or a STREAMED body fed chunk by chunk.
type outgoing struct {
	body     []byte
	hasBody  bool
	passthru io.Reader
	streamed bool
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

// decode runs the request side: headers, then the body per its mode.
func (x *exchange) decode(h *headerMap) (*outgoing, *localReply) {
	noBody := x.r.ContentLength == 0
	out := &outgoing{}
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
			if lr := x.headersReply(h, m.GetRequestHeaders(), &x.req, out); lr != nil {
				return nil, lr
			}
		}
	} else {
		x.dropContentLength(h, x.req)
	}
	switch {
	case out.hasBody: // replaced by CONTINUE_AND_REPLACE
	case noBody:
	case x.complete || x.req.body == extprocv3.ProcessingMode_NONE:
		out.passthru = x.r.Body
	case x.req.body == extprocv3.ProcessingMode_STREAMED:
		out.streamed = true
	default: // BUFFERED, and BUFFERED_PARTIAL as long as the body fits
		body, lr := x.readBuffered(x.r.Body, http.StatusRequestEntityTooLarge, "Payload Too Large")
		if lr != nil {
			return nil, lr
		}
		if body, lr = x.bufferedBody(h, phaseRequestBody, body, x.req); lr != nil {
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
	}
	return nil
}

// readBuffered reads a whole body for BUFFERED mode, refusing one larger
// than the buffer limit with Envoy's local reply for that direction.
func (x *exchange) readBuffered(r io.Reader, tooBig int, text string) ([]byte, *localReply) {
	if lim := x.f.cfg.BufferLimit; lim > 0 {
		r = io.LimitReader(r, lim+1)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		x.abandon()
		if x.r.Context().Err() != nil {
			x.st.ClientGone = true
		}
		return nil, &localReply{} // the peer went away mid-body: nothing to answer
	}
	if lim := x.f.cfg.BufferLimit; lim > 0 && int64(len(body)) > lim {
		x.abandon()
		return nil, &localReply{status: tooBig, body: []byte(text), details: "buffer_limit_exceeded"}
	}
	return body, nil
}

// bufferedBody sends a whole body in one message and applies the reply.
// The headers are still held, so its header mutation applies; a body
// mutation that disagrees with a remaining content-length is refused, as
// Envoy refuses it: the processor must fix or remove content-length.
func (x *exchange) bufferedBody(h *headerMap, p phase, body []byte, m dirMode) ([]byte, *localReply) {
	if x.complete {
		return body, nil
	}
	reply, lr := x.roundTrip(bodyMessage(p, body, true), p)
	if lr != nil || reply == nil {
		return body, lr
	}
	cr := commonOf(reply, p)
	if hm := cr.GetHeaderMutation(); hm != nil {
		if err := x.f.checker.applyMutation(h, hm, m.dropsContentLength(), &x.st); err != nil {
			return nil, x.failed(err)
		}
	}
	if bm := cr.GetBodyMutation(); bm != nil {
		if cl, ok := h.get("content-length"); ok {
			if n, err := strconv.ParseUint(cl, 10, 64); err == nil && n != uint64(len(bm.GetBody())) {
				return nil, x.failed(errors.New("mismatch between content length and the length of the mutated body"))
			}
		}
		body = mutateBody(body, bm)
	}
	return body, nil
}

// streamBody copies src to emit, sending each chunk read to the processor
// first while the direction is STREAMED and applying its body mutation;
// end_of_stream goes with the last chunk, or alone in an empty one.
func (x *exchange) streamBody(src io.Reader, p phase, emit func([]byte) error) (*localReply, error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		eof := errors.Is(err, io.EOF)
		if n > 0 || eof {
			chunk := bytes.Clone(buf[:n])
			if !x.complete {
				reply, lr := x.roundTrip(bodyMessage(p, chunk, eof), p)
				if lr != nil {
					return lr, nil
				}
				if bm := commonOf(reply, p).GetBodyMutation(); bm != nil {
					chunk = mutateBody(chunk, bm)
				}
			}
			if len(chunk) > 0 {
				if werr := emit(chunk); werr != nil {
					return nil, werr
				}
			}
		}
		if eof {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
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

// forward sends the request upstream. A STREAMED body is fed by its own
// goroutine while the upstream reads it; the exchange is left to that
// goroutine until it is done.
func (x *exchange) forward(h *headerMap, out *outgoing) (*http.Response, *localReply) {
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	authority, _ := h.get(":authority")
	ctx, cancel := context.WithCancel(x.r.Context())
	x.upCancel = cancel

	var body io.Reader
	var fed chan *localReply
	x.st.UpstreamCalled = true
	switch {
	case out.streamed:
		pr, pw := io.Pipe()
		body = pr
		fed = make(chan *localReply, 1)
		go func() {
			lr, err := x.streamBody(x.r.Body, phaseRequestBody, func(b []byte) error {
				_, err := pw.Write(b)
				return err
			})
			if lr != nil {
				err = errLocalReply
				cancel()
			}
			pw.CloseWithError(err) // nil closes with EOF
			fed <- lr
		}()
	case out.passthru != nil:
		body = out.passthru
	case out.hasBody:
		body = bytes.NewReader(out.body)
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
		if x.r.Context().Err() != nil {
			x.st.ClientGone = true
			x.abandon()
			return nil, &localReply{}
		}
		x.st.UpstreamError = err.Error()
		return upstreamFailure(), nil
	}
	return resp, nil
}

// upstreamFailure is the response Envoy's router makes up when the
// upstream cannot be reached; like any response it then goes through the
// ext_proc response phases.
func upstreamFailure() *http.Response {
	const msg = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	return &http.Response{
		StatusCode: http.StatusServiceUnavailable,
		Header: http.Header{
			"Content-Type":   {"text/plain"},
			"Content-Length": {strconv.Itoa(len(msg))},
		},
		Body:          io.NopCloser(strings.NewReader(msg)),
		ContentLength: int64(len(msg)),
	}
}
