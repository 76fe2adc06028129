package front

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// run is the life of one request through the filter.
func (x *exchange) run() {
	reqHeaders := requestHeaders(x.r)
	x.connectionManager(&reqHeaders)
	x.reqHeaders = &reqHeaders
	if lr := x.filtersBefore(&reqHeaders); lr != nil {
		x.writeLocal(lr)
		return
	}
	out, lr := x.decode(&reqHeaders)
	var resp *http.Response
	if lr == nil {
		resp, lr = x.forward(&reqHeaders, out)
	}
	if lr != nil {
		x.reply(lr)
		return
	}
	defer resp.Body.Close()
	if lr := x.encode(resp, false); lr != nil {
		x.writeLocal(lr)
	}
}

// reply answers the client with a local reply. One Envoy makes itself (the
// router's 503 or 504, the 413 of the buffer limit) goes through the
// ext_proc response phases like any response up to 1.33 and again from
// 1.37; from 1.34 to 1.36 (skip_ext_proc_on_local_reply) it is kept from
// the processor, which only sees its stream closed at the end.
func (x *exchange) reply(lr *localReply) {
	if lr.envoy && lr.status != 0 && !x.wroteHeaders {
		x.st.RouterReply = lr.details
		if !x.f.cfg.Envoy.LocalRepliesReachProcessor() {
			x.complete = true
		} else if !x.complete {
			x.st.LocalReplyProcessed = true
			x.st.Details = lr.details
			resp := lr.response()
			if lr2 := x.encode(resp, true); lr2 != nil {
				x.writeLocal(lr2)
			}
			return
		}
	}
	x.writeLocal(lr)
}

// responseHeaders builds the map the processor sees: ":status", then the
// upstream's headers lower-cased.
func responseHeaders(resp *http.Response) headerMap {
	var h headerMap
	h.add(":status", strconv.Itoa(resp.StatusCode))
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range resp.Header[k] {
			h.add(lk, v)
		}
	}
	return h
}

// responseTrailers says where the upstream's trailers are once its body
// has ended; nil when Envoy would drop them (an HTTP/1.1 upstream without
// the cluster's http_protocol_options.enable_trailers) or for a local
// reply.
func (x *exchange) responseTrailers(resp *http.Response, local bool) func() http.Header {
	if local || resp.ProtoMajor < 2 && !x.f.cfg.UpstreamHTTP1Trailers {
		return nil
	}
	return func() http.Header { return resp.Trailer }
}

// encode runs the response side: headers, then the body per its mode,
// writing to the client as Envoy would. The body is read from the start,
// so what arrives while the headers are with the processor is ready when
// the reply comes. local is set for a reply Envoy made itself, which the
// router's x-envoy-upstream-service-time is not added to.
func (x *exchange) encode(resp *http.Response, local bool) *localReply {
	h := responseHeaders(resp)
	x.respHeaders = &h
	if !local && !h.has("x-envoy-upstream-service-time") {
		h.add("x-envoy-upstream-service-time", strconv.FormatInt(x.upHeaders.Milliseconds(), 10))
	}
	noBody := resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength == 0 || x.r.Method == http.MethodHead ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	if !noBody {
		var body io.Reader = resp.Body
		if !local && x.routeTimer != nil {
			// The route timeout covers the upstream's whole response.
			body = &endReader{r: resp.Body, end: func() { x.routeTimer.Stop() }}
		}
		x.respSrc = newBodySource(body, x.queueLimit(), x.responseTrailers(resp, local))
	}
	src := x.respSrc
	out := &outgoing{}
	sentHeaders := false
	if x.resp.sendHeaders && !x.complete {
		msg := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocsvc.HttpHeaders{Headers: h.proto(), EndOfStream: noBody},
		}}
		x.dropContentLength(&h, x.resp)
		m, lr := x.roundTrip(msg, phaseResponseHeaders)
		if lr != nil {
			return lr
		}
		if m != nil {
			sentHeaders = true
			if lr := x.headersReply(&h, m.GetResponseHeaders(), &x.resp, out); lr != nil {
				return lr
			}
			if x.f.cfg.Envoy.closesAfterLastReply() &&
				(noBody || x.resp.body == extprocv3.ProcessingMode_NONE && !x.resp.sendTrailers) {
				x.closeEarly()
			}
		}
	} else {
		x.dropContentLength(&h, x.resp)
	}
	whole := sentHeaders && x.wholeAtHeaders
	switch {
	case out.hasBody:
		if src != nil {
			src.close()
		}
		x.writeHeaders(&h)
		x.write(out.body)
	case noBody:
		x.writeHeaders(&h)
	case x.complete || x.resp.body == extprocv3.ProcessingMode_NONE:
		x.writeHeaders(&h)
		return x.relay(src)
	case x.resp.body == extprocv3.ProcessingMode_STREAMED && !whole:
		x.writeHeaders(&h)
		var first *chunk
		if sentHeaders {
			if c := src.takeAll(); len(c.data) > 0 || c.eof {
				first = &c
			}
		}
		trailers, lr, err := x.streamed(src, phaseResponseBody, x.resp, first, x.emit)
		if lr != nil {
			return lr
		}
		if err != nil {
			return x.clientFailed()
		}
		x.writeTrailers(trailers)
	default:
		// BUFFERED; BUFFERED_PARTIAL as long as the body fits; and a
		// STREAMED body that was whole when the headers reply came, which
		// Envoy sends as one buffered message with end_of_stream.
		body, trailers, lr := x.bufferedBody(&h, phaseResponseBody, x.resp, src, whole)
		if lr != nil {
			return lr
		}
		x.writeHeaders(&h)
		x.write(body)
		x.writeTrailers(trailers)
	}
	return nil
}

// emit relays one piece of the response to the client at once, so a
// server-sent-event stream is never held back.
func (x *exchange) emit(b []byte) error {
	if _, err := x.w.Write(b); err != nil {
		return err
	}
	http.NewResponseController(x.w).Flush()
	return nil
}

// relay passes the upstream body on unprocessed, chunk by chunk; trailers
// still go to the processor in SEND trailer mode.
func (x *exchange) relay(src *bodySource) *localReply {
	for {
		ch := src.wait()
		c, ok := src.take()
		if !ok {
			select {
			case <-ch:
				continue
			case <-x.r.Context().Done():
				return x.clientFailed()
			}
		}
		if len(c.data) > 0 {
			if err := x.emit(c.data); err != nil {
				return x.clientFailed()
			}
		}
		if c.eof {
			break
		}
	}
	if _, err, _, _ := src.state(); err != nil {
		return x.bodyFailed()
	}
	trailers := src.endTrailers()
	x.noteTrailers(phaseResponseBody, trailers)
	if trailers != nil && x.resp.sendTrailers && !x.complete {
		var lr *localReply
		if trailers, lr = x.trailersRoundTrip(phaseResponseTrailers, trailers); lr != nil {
			return lr
		}
	}
	x.writeTrailers(trailers)
	return nil
}

// clientFailed ends a response the client stopped reading: Envoy resets
// both sides, the ext_proc stream included.
func (x *exchange) clientFailed() *localReply {
	if x.r.Context().Err() != nil {
		x.st.ClientGone = true
	}
	x.abandon()
	return &localReply{}
}

// writeTrailers sends the response's trailers when the client's codec
// carries them: always on HTTP/2, on HTTP/1.1 only with the connection
// manager's enable_trailers (and a chunked response).
func (x *exchange) writeTrailers(trailers http.Header) {
	if len(trailers) == 0 || x.r.ProtoMajor < 2 && !x.f.cfg.DownstreamHTTP1Trailers {
		return
	}
	for k, vv := range trailers {
		for _, v := range vv {
			x.w.Header().Add(http.TrailerPrefix+k, v)
		}
	}
}

// writeHeaders sends the response head. The map is copied as is, except
// pseudo and hop-by-hop headers; a missing content-type stays missing.
func (x *exchange) writeHeaders(h *headerMap) {
	status := http.StatusOK
	if s, ok := h.get(":status"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			status = n
		}
	}
	out := x.w.Header()
	for _, e := range h.entries {
		if strings.HasPrefix(e.key, ":") || hopByHop[e.key] {
			continue
		}
		k := http.CanonicalHeaderKey(e.key)
		out[k] = append(out[k], e.value)
	}
	if _, ok := out["Content-Type"]; !ok {
		out["Content-Type"] = nil // keep net/http from sniffing one
	}
	x.w.WriteHeader(status)
	x.wroteHeaders = true
	x.st.Status = status
}

func (x *exchange) write(b []byte) {
	if _, err := x.w.Write(b); err != nil {
		x.st.ClientGone = true
	}
}

// writeLocal answers the client with a local reply, as sendLocalReply: a
// text/plain body unless the processor's headers say otherwise, and a
// content-length. Once the response head is out nothing can be answered
// any more, and like Envoy the front cuts the response instead.
func (x *exchange) writeLocal(lr *localReply) {
	if lr.status == 0 || x.wroteHeaders {
		if !x.st.ClientGone {
			x.st.Aborted = true
		}
		panic(http.ErrAbortHandler)
	}
	x.st.LocalReply = true
	x.st.Details = lr.details
	var h headerMap
	h.add(":status", strconv.Itoa(lr.status))
	if len(lr.body) > 0 {
		h.set("content-type", "text/plain")
	}
	if lr.headers != nil {
		// Envoy logs a failed mutation of a local reply and sends it anyway.
		_ = x.f.checker.applyMutation(&h, lr.headers, false, &x.st)
	}
	for _, e := range lr.plain {
		h.set(e.key, e.value)
	}
	h.set(":status", strconv.Itoa(lr.status))
	h.set("content-length", strconv.Itoa(len(lr.body)))
	x.writeHeaders(&h)
	x.write(lr.body)
}
