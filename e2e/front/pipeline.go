package front

import (
	"net/http"
	"time"
)

// queued is a STREAMED chunk sent to the processor and awaiting its reply.
type queued struct {
	data []byte
	eos  bool
}

// streamed sends a STREAMED body as Envoy's handleDataStreamedMode does:
// every chunk read goes to the processor at once, without waiting for the
// replies to the chunks before it, and waits in a queue; each reply
// releases the oldest chunk, mutated as the reply says, to emit. first,
// when set, is what arrived while the headers were with the processor, and
// goes as one chunk. end_of_stream rides on the chunk that ended the body,
// which is empty when the end came alone (an HTTP/1.1 chunked body's last
// chunk); a body ending in trailers sends none, and in SEND trailer mode
// its trailers follow once every chunk is answered. While the queue holds
// more than the buffer limit, reading pauses (Envoy's watermark).
//
// The message timer restarts with every chunk sent and stops at every
// reply, as Envoy's onStartProcessorCall and onFinishProcessorCall do:
// chunks left unanswered after a reply are not timed.
//
// It returns the trailers the body ended in, a localReply when processing
// ended the request, or the error emit returned.
func (x *exchange) streamed(src *bodySource, p phase, m dirMode, first *chunk, emit func([]byte) error) (http.Header, *localReply, error) {
	var queue []queued
	var inflight int64
	limit := x.queueLimit()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var timerC <-chan time.Time
	extended := false
	ended := false
	// cut is set when the body ended in an error (the peer reset): the
	// front lets the data before it through the processor and the queue,
	// then gives up, as Envoy does when the reset comes after those
	// replies.
	cut := false

	// put sends one chunk, or passes it on as is once processing is over.
	put := func(c chunk) (*localReply, error) {
		if c.eof {
			ended = true
			if _, err, _, _ := src.state(); err != nil {
				cut = true
				c.eof = false
			}
		}
		eos := c.eof && src.endTrailers() == nil
		if x.complete {
			if len(c.data) > 0 {
				return nil, emit(c.data)
			}
			return nil, nil
		}
		if len(c.data) == 0 && !eos {
			return nil, nil
		}
		if lr, ok := x.send(bodyMessage(p, c.data, eos), p); !ok {
			if lr != nil {
				return lr, nil
			}
			return nil, x.flush(&queue, c.data, emit)
		}
		queue = append(queue, queued{c.data, eos})
		inflight += int64(len(c.data))
		x.st.MaxInFlight = max(x.st.MaxInFlight, len(queue))
		timer.Reset(x.f.timeout)
		timerC, extended = timer.C, false
		return nil, nil
	}

	if first != nil {
		if lr, err := put(*first); lr != nil || err != nil {
			return nil, lr, err
		}
	}
	for {
		if x.complete && len(queue) > 0 {
			// Processing is over (failure allowed, the processor closed the
			// stream): what waits in the queue goes on unprocessed, as
			// Envoy's clearAsyncState injects it.
			if err := x.flush(&queue, nil, emit); err != nil {
				return nil, nil, err
			}
			timerC = nil
		}
		ch := src.wait()
		for !ended && inflight <= limit {
			c, ok := src.take()
			if !ok {
				break
			}
			if lr, err := put(c); lr != nil || err != nil {
				return nil, lr, err
			}
		}
		if ended && len(queue) == 0 {
			if cut {
				return nil, x.bodyFailed(), nil
			}
			break
		}
		var more <-chan struct{}
		if !ended && inflight <= limit {
			more = ch
		}
		var replies <-chan reply
		if len(queue) > 0 && !x.complete {
			replies = x.replies
		}
		select {
		case <-more:
		case <-timerC:
			timerC = nil
			if lr := x.timedOut(); lr != nil {
				return nil, lr, nil
			}
		case <-x.r.Context().Done():
			x.st.ClientGone = true
			x.abandon()
			return nil, &localReply{}, nil
		case rp := <-replies:
			if rp.err != nil {
				if lr := x.streamFailed(rp.err); lr != nil {
					return nil, lr, nil
				}
				continue
			}
			x.st.Received++
			msg := rp.msg
			if d := msg.GetOverrideMessageTimeout(); d != nil {
				if timerC != nil && !extended && x.f.overrideTimeoutOK(d.AsDuration()) {
					timer.Reset(d.AsDuration())
					extended = true
				}
				continue
			}
			x.modeOverride(msg, p)
			r, lr := x.dispatch(msg, p)
			if r == nil {
				if lr != nil {
					return nil, lr, nil
				}
				continue // failure allowed: the queue goes on unprocessed
			}
			head := queue[0]
			queue = queue[1:]
			inflight -= int64(len(head.data))
			timer.Stop()
			timerC = nil
			data := head.data
			if bm := commonOf(r, p).GetBodyMutation(); bm != nil {
				data = mutateBody(data, bm)
			}
			x.replied(p)
			if head.eos && x.f.cfg.Envoy.closesAfterLastReply() && (!p.request() || x.resp.noExternalProcess()) {
				x.closeEarly()
			}
			if len(data) > 0 {
				if err := emit(data); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	trailers := src.endTrailers()
	x.noteTrailers(p, trailers)
	if trailers != nil && m.sendTrailers && !x.complete {
		var lr *localReply
		if trailers, lr = x.trailersRoundTrip(p+1, trailers); lr != nil {
			return nil, lr, nil
		}
	}
	return trailers, nil, nil
}

// flush emits what waits in the queue, then extra, unprocessed.
func (x *exchange) flush(queue *[]queued, extra []byte, emit func([]byte) error) error {
	for _, q := range *queue {
		if len(q.data) > 0 {
			if err := emit(q.data); err != nil {
				return err
			}
		}
	}
	*queue = nil
	if len(extra) > 0 {
		return emit(extra)
	}
	return nil
}

// bodyFailed ends a body whose peer went away mid-way: Envoy resets both
// sides, the ext_proc stream included, and has nothing to answer.
func (x *exchange) bodyFailed() *localReply {
	if x.r.Context().Err() != nil {
		x.st.ClientGone = true
	}
	x.abandon()
	return &localReply{}
}
