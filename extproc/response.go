package extproc

import (
	"strconv"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"

	"github.com/tokengate/tokengate/extproc/decode"
	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/limiter"
)

// responseHeaders notes the status and encoding. Streams (event streams,
// Bedrock's eventstream frames, Gemini's streamed JSON array) are switched
// to streamed body mode so that Envoy never buffers them, and get their
// rate headers now: once the first chunk is out, headers are final.
func (p *processor) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if !p.stage.holding() {
		return continueResponseHeaders(nil)
	}
	hm := headers(h.GetHeaders().GetHeaders())
	p.status, _ = strconv.Atoi(hm.get(":status"))
	p.encoding = hm.get("content-encoding")
	if h.GetEndOfStream() {
		return p.settleReply(continueResponseHeaders)
	}
	p.stream = llm.NewStreamCounter(p.route, p.model, hm.get("content-type"))
	if p.stream == nil {
		return continueResponseHeaders(nil)
	}
	if !decode.IsIdentity(p.encoding) {
		d, err := decode.NewStream(p.encoding, p.stream.Feed)
		if err != nil {
			p.s.log.Debug("stream encoding not decodable; counting the prompt only",
				zap.String("key", p.keyHash[:8]), zap.String("encoding", p.encoding))
		}
		p.decoder = d
	}
	var hs headerSet
	if _, behind := p.s.store.(limiter.Behind); behind {
		// A shared store: the reservation's answer, not a second round
		// trip before the stream may start.
		p.rateHeaders(&hs, p.derived(nil, p.s.clock.Now()))
	} else if d, err := p.s.store.StatusMany(p.ctx, p.counter, p.budget, p.s.clock.Now()); err == nil {
		p.rateHeaders(&hs, d)
	}
	resp := continueResponseHeaders(hs.mutation())
	resp.ModeOverride = &filterv3.ProcessingMode{ResponseBodyMode: filterv3.ProcessingMode_STREAMED}
	return resp
}

// responseBody counts a streamed chunk and lets it go at once, unmodified;
// a buffered body is read whole. Either way the request is settled at the
// end of the body.
func (p *processor) responseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if !p.stage.holding() {
		return continueResponseBody(nil)
	}
	if p.stream != nil {
		p.feedStream(b.GetBody())
		if !b.GetEndOfStream() {
			return continueResponseBody(nil)
		}
		p.endStream()
		return p.settleReply(continueResponseBody)
	}
	body := p.collect(b, p.wholeResponseBody)
	if body == nil {
		return continueResponseBody(nil)
	}
	p.readBufferedUsage(body)
	return p.settleReply(continueResponseBody)
}

// responseTrailers ends a response body that came without an
// end_of_stream (trailers follow it): the request settles now. Headers can
// no longer be set, so the rate headers go as trailers.
func (p *processor) responseTrailers() *extprocv3.ProcessingResponse {
	if !p.stage.holding() {
		return continueResponseTrailers(nil)
	}
	if p.stream != nil {
		p.endStream()
		return p.settleReply(continueResponseTrailers)
	}
	if p.body == nil {
		// No body begun: the body, if it comes, settles as usual.
		return continueResponseTrailers(nil)
	}
	p.readBufferedUsage(p.takeBody())
	return p.settleReply(continueResponseTrailers)
}

func (p *processor) feedStream(chunk []byte) {
	switch {
	case p.decoder != nil:
		p.decoder.Write(chunk)
	case decode.IsIdentity(p.encoding):
		p.stream.Feed(chunk)
	}
}

// endStream waits for the decoder to catch up and takes the stream's usage.
func (p *processor) endStream() {
	if p.decoder != nil {
		if err := p.decoder.Close(); err != nil {
			p.s.log.Debug("decoding the stream", zap.String("key", p.keyHash[:8]), zap.Error(err))
		}
		p.decoder = nil
	}
	p.takeUsage(p.stream.Usage())
}

func (p *processor) readBufferedUsage(body []byte) {
	body, err := decode.Bytes(p.encoding, body, decode.MaxResponse)
	if err != nil {
		p.s.log.Debug("response body not decodable", zap.String("key", p.keyHash[:8]), zap.Error(err))
		return
	}
	u, ok, err := llm.ParseUsage(p.route.API, body)
	if err != nil {
		p.s.log.Debug("response body carries no readable usage", zap.String("key", p.keyHash[:8]), zap.Error(err))
	}
	p.takeUsage(u, ok)
	if !ok && p.status >= 200 && p.status <= 299 {
		// An answer without usage is counted from what it carries.
		if p.answered, err = llm.CompletionTokens(p.route.API, p.model, body); err == nil {
			p.found = sourceCounted
		} else {
			// Not the API's JSON (Gemini's alt=proto, a format the client
			// asked for otherwise): what it holds cannot be counted, so
			// it must not be free.
			p.found = sourceUnreadable
			p.s.log.Debug("answer without usage not countable", zap.String("key", p.keyHash[:8]), zap.Error(err))
		}
	}
}

// settleReply settles and answers in the phase's shape with the rate
// headers (unless a stream already sent them) and the metadata.
func (p *processor) settleReply(reply func(*extprocv3.HeaderMutation) *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	m, md := p.settle()
	if p.stream != nil {
		m = nil
	}
	resp := reply(m)
	md.attach(resp)
	return resp
}
