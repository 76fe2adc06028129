package llm

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tokengate/tokengate/extproc/sse"
)

// maxEvent bounds one buffered event of a framing that has no line breaks
// to bound it (a JSON array element, an eventstream frame): a stream that
// never closes one cannot grow the counter without limit. A larger event
// is dropped whole, and counted as nothing.
const maxEvent = 8 << 20

// sseFrames reads server-sent events.
type sseFrames struct {
	parser sse.Parser
	on     func(name string, data []byte)
	fn     func(sse.Event)
}

func (f *sseFrames) lost() bool { return f.parser.Dropped() }

func (f *sseFrames) feed(chunk []byte) {
	if f.fn == nil {
		f.fn = func(e sse.Event) { f.on(e.Name, e.Data) }
	}
	f.parser.Feed(chunk, f.fn)
}

// arrayFrames reads one JSON array as it streams, handing over each
// object element as soon as its closing brace arrives: Gemini's
// streamGenerateContent without alt=sse.
type arrayFrames struct {
	on func(elem []byte)

	opened   bool // the array's '[' was seen
	depth    int  // nesting inside the current element; 0 between elements
	inString bool
	escaped  bool
	elem     []byte
	dropping bool // the current element passed maxEvent
	dropped  bool // some element did
}

func (f *arrayFrames) lost() bool { return f.dropped }

func (f *arrayFrames) feed(chunk []byte) {
	for _, c := range chunk {
		if !f.opened {
			f.opened = c == '['
			continue
		}
		if f.depth == 0 {
			if c == '{' {
				f.depth, f.elem, f.dropping = 1, append(f.elem[:0], c), false
			}
			continue // space, commas, the closing ']'
		}
		if !f.dropping {
			if len(f.elem) >= maxEvent {
				f.dropping, f.dropped, f.elem = true, true, f.elem[:0]
			} else {
				f.elem = append(f.elem, c)
			}
		}
		switch {
		case f.escaped:
			f.escaped = false
		case f.inString:
			f.escaped = c == '\\'
			f.inString = c != '"'
		case c == '"':
			f.inString = true
		case c == '{' || c == '[':
			f.depth++
		case c == '}' || c == ']':
			f.depth--
			if f.depth == 0 && !f.dropping {
				f.on(f.elem)
			}
		}
	}
}

// eventStreamFrames reads AWS eventstream frames (Bedrock's streams), as
// the AWS SDK decodes them; the frame's length prefix says when a frame
// is whole. With chunks, each event's payload is InvokeModel's
// {"bytes": base64} around the model's own event, which is what is handed
// over. Exceptions (:message-type exception) are not events of the API.
type eventStreamFrames struct {
	on     func(name string, data []byte)
	chunks bool

	buf     []byte
	broken  bool // a length that no frame has: nothing after it can be framed
	decoder *eventstream.Decoder
	payload []byte
}

func (f *eventStreamFrames) lost() bool { return f.broken }

// preludeLen is the eventstream frame's total length field.
const preludeLen = 4

func (f *eventStreamFrames) feed(chunk []byte) {
	if f.broken {
		return
	}
	if f.decoder == nil {
		f.decoder = eventstream.NewDecoder()
	}
	f.buf = append(f.buf, chunk...)
	for len(f.buf) >= preludeLen {
		n := int(binary.BigEndian.Uint32(f.buf))
		if n < preludeLen || n > maxEvent {
			f.buf, f.broken = nil, true
			return
		}
		if len(f.buf) < n {
			return
		}
		msg, err := f.decoder.Decode(bytes.NewReader(f.buf[:n]), f.payload[:0])
		f.buf = f.buf[n:]
		if err != nil {
			continue // a frame that fails its checksum counts as nothing
		}
		f.payload = msg.Payload
		f.message(msg)
	}
	if len(f.buf) == 0 {
		f.buf = f.buf[:0:0] // let a large frame's buffer go
	}
}

func (f *eventStreamFrames) message(msg eventstream.Message) {
	if v := msg.Headers.Get(":message-type"); v == nil || v.String() != "event" {
		return
	}
	name := ""
	if v := msg.Headers.Get(":event-type"); v != nil {
		name = v.String()
	}
	if !f.chunks {
		f.on(name, msg.Payload)
		return
	}
	if name != "chunk" {
		return
	}
	v, found, err := topLevel(msg.Payload, "bytes")
	if err != nil || !found {
		return
	}
	raw, err := readString(v)
	if err != nil {
		return
	}
	data, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return
	}
	f.on("", data)
}
