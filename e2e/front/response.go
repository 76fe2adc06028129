package front

import (
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
	out, lr := x.decode(&reqHeaders)
	if lr != nil {
		x.writeLocal(lr)
		return
	}
	resp, lr := x.forward(&reqHeaders, out)
	if lr != nil {
		x.writeLocal(lr)
		return
	}
	defer resp.Body.Close()
	if lr := x.encode(resp); lr != nil {
		x.writeLocal(lr)
	}
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

// encode runs the response side: headers, then the body per its mode,
// writing to the client as Envoy would.
func (x *exchange) encode(resp *http.Response) *localReply {
	h := responseHeaders(resp)
	noBody := resp.ContentLength == 0 || x.r.Method == http.MethodHead ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	out := &outgoing{}
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
			if lr := x.headersReply(&h, m.GetResponseHeaders(), &x.resp, out); lr != nil {
				return lr
			}
		}
	} else {
		x.dropContentLength(&h, x.resp)
	}
	switch {
	case out.hasBody:
		x.writeHeaders(&h)
		x.write(out.body)
	case noBody:
		x.writeHeaders(&h)
	case x.complete || x.resp.body == extprocv3.ProcessingMode_NONE:
		x.writeHeaders(&h)
		return x.copyResponse(resp, false)
	case x.resp.body == extprocv3.ProcessingMode_STREAMED:
		x.writeHeaders(&h)
		return x.copyResponse(resp, true)
	default: // BUFFERED, and BUFFERED_PARTIAL as long as the body fits
		body, lr := x.readBuffered(resp.Body, http.StatusInternalServerError, "Internal Server Error")
		if lr != nil {
			return lr
		}
		if body, lr = x.bufferedBody(&h, phaseResponseBody, body, x.resp); lr != nil {
			return lr
		}
		x.writeHeaders(&h)
		x.write(body)
	}
	return nil
}

// copyResponse relays the upstream body, flushing each chunk at once so a
// server-sent-event stream is never held back; in STREAMED mode each chunk
// goes through the processor first.
func (x *exchange) copyResponse(resp *http.Response, streamed bool) *localReply {
	emit := func(b []byte) error {
		if _, err := x.w.Write(b); err != nil {
			return err
		}
		http.NewResponseController(x.w).Flush()
		return nil
	}
	if !streamed {
		x.complete = true // nothing more goes to the processor
	}
	lr, err := x.streamBody(resp.Body, phaseResponseBody, emit)
	if lr != nil {
		return lr
	}
	if err != nil {
		// The client or the upstream went away mid-body: Envoy resets both
		// sides, the ext_proc stream included.
		if x.r.Context().Err() != nil {
			x.st.ClientGone = true
		}
		x.abandon()
		return &localReply{}
	}
	return nil
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
	h.set(":status", strconv.Itoa(lr.status))
	h.set("content-length", strconv.Itoa(len(lr.body)))
	x.writeHeaders(&h)
	x.write(lr.body)
}
