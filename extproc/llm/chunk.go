package llm

import (
	"encoding/json"
	"errors"
)

// A streamed completion is hundreds of small events, each a JSON object of
// which tokengate reads a few strings and, once, the usage. Decoding each
// with encoding/json costs more than everything else tokengate does per
// chunk, so events are read by the scanner into chunkFields instead. The
// scan must read exactly what json.Unmarshal into a streamChunk would; where
// it cannot be sure (a type error, a key that matches a field only after
// case folding or unescaping, a repeated field), it says so and the event is
// decoded the slow way. A differential fuzz target holds the two together.

// chunkFields is what the counter takes from one event: texts as spans of
// buf, in the order the counter adds them. It is reused from event to event.
type chunkFields struct {
	buf       []byte
	typ       span
	delta     span // the Responses API's top-level delta
	usage     wireUsage
	hasUsage  bool
	respUsage wireUsage
	hasResp   bool // response.usage was present and an object
	texts     []span
}

type span struct{ from, to int }

func (f *chunkFields) reset() {
	*f = chunkFields{buf: f.buf[:0], texts: f.texts[:0]}
}

func (f *chunkFields) text(s span) []byte { return f.buf[s.from:s.to] }

// addString decodes the string field v into buf and points *dst at it.
func (f *chunkFields) addString(dst *span, v []byte) error {
	from := len(f.buf)
	buf, err := appendStringField(f.buf, v)
	if err == nil && len(buf) > from {
		f.buf, *dst = buf, span{from, len(buf)}
	}
	return err
}

// scan fills f from the event data; false means decode it instead.
// data must be valid JSON (json.Valid): the scanner is strict only about
// the parts it reads.
func (f *chunkFields) scan(data []byte) bool {
	f.reset()
	var seen fieldSet
	err := members(data, func(k, v []byte) error {
		switch string(k) {
		case "type":
			return errors.Join(seen.once(0), f.addString(&f.typ, v))
		case "delta":
			return errors.Join(seen.once(1), f.addString(&f.delta, v))
		case "choices":
			if err := seen.once(2); err != nil {
				return err
			}
			return f.scanChoices(v)
		case "usage":
			if err := seen.once(3); err != nil {
				return err
			}
			return scanUsageField(v, &f.usage, &f.hasUsage)
		case "response":
			if err := seen.once(4); err != nil {
				return err
			}
			return f.scanResponse(v)
		}
		return unknownKey(k, "type", "delta", "choices", "usage", "response")
	})
	return err == nil
}

// scanUsageField reads a usage value into *w: null means none.
func scanUsageField(v []byte, w *wireUsage, has *bool) error {
	if isNull(v) {
		*has = false
		return nil
	}
	u, err := scanUsage(v)
	if err != nil {
		return err
	}
	*w, *has = u, true
	return nil
}

func (f *chunkFields) scanResponse(v []byte) error {
	if isNull(v) {
		f.hasResp = false
		return nil
	}
	var seen fieldSet
	return object(v, func(k, v []byte) error {
		if string(k) == "usage" {
			if err := seen.once(0); err != nil {
				return err
			}
			return scanUsageField(v, &f.respUsage, &f.hasResp)
		}
		return unknownKey(k, "usage")
	})
}

// scanChoices reads each choice's texts in the order the counter adds
// them: text, content, refusal, reasoning, then the tool calls' arguments.
func (f *chunkFields) scanChoices(v []byte) error {
	return array(v, func(c []byte) error {
		var text, content, refusal, reasoning span
		var args []byte // the raw tool_calls array, read after the rest
		var seen fieldSet
		err := object(c, func(k, v []byte) error {
			switch string(k) {
			case "text":
				return errors.Join(seen.once(0), f.addString(&text, v))
			case "delta":
				if err := seen.once(1); err != nil {
					return err
				}
				return f.scanDelta(v, &content, &refusal, &reasoning, &args)
			}
			return unknownKey(k, "text", "delta")
		})
		if err != nil {
			return err
		}
		f.texts = append(f.texts, text, content, refusal, reasoning)
		return f.scanToolCalls(args)
	})
}

func (f *chunkFields) scanDelta(v []byte, content, refusal, reasoning *span, args *[]byte) error {
	var seen fieldSet
	return object(v, func(k, v []byte) error {
		switch string(k) {
		case "content":
			return errors.Join(seen.once(0), f.addString(content, v))
		case "refusal":
			return errors.Join(seen.once(1), f.addString(refusal, v))
		case "reasoning_content":
			return errors.Join(seen.once(2), f.addString(reasoning, v))
		case "tool_calls":
			if err := seen.once(3); err != nil {
				return err
			}
			if !isNull(v) && v[0] != '[' {
				return errInexact
			}
			*args = v
			return nil
		}
		return unknownKey(k, "content", "refusal", "reasoning_content", "tool_calls")
	})
}

func (f *chunkFields) scanToolCalls(v []byte) error {
	return array(v, func(call []byte) error {
		var arguments span
		var seen fieldSet
		err := object(call, func(k, v []byte) error {
			if string(k) != "function" {
				return unknownKey(k, "function")
			}
			if err := seen.once(0); err != nil {
				return err
			}
			var fseen fieldSet
			return object(v, func(k, v []byte) error {
				if string(k) != "arguments" {
					return unknownKey(k, "arguments")
				}
				return errors.Join(fseen.once(0), f.addString(&arguments, v))
			})
		})
		f.texts = append(f.texts, arguments)
		return err
	})
}

// decoded fills f from a streamChunk that encoding/json decoded, in the
// same order the scan would.
func (f *chunkFields) decoded(ch *streamChunk) {
	f.reset()
	add := func(dst *span, s string) {
		from := len(f.buf)
		f.buf = append(f.buf, s...)
		*dst = span{from, len(f.buf)}
	}
	add(&f.typ, ch.Type)
	add(&f.delta, ch.Delta)
	if ch.Usage != nil {
		f.usage, f.hasUsage = *ch.Usage, true
	}
	if ch.Response != nil && ch.Response.Usage != nil {
		f.respUsage, f.hasResp = *ch.Response.Usage, true
	}
	for _, choice := range ch.Choices {
		for _, s := range []string{choice.Text, choice.Delta.Content, choice.Delta.Refusal, choice.Delta.Reasoning} {
			var sp span
			add(&sp, s)
			f.texts = append(f.texts, sp)
		}
		for _, tc := range choice.Delta.ToolCalls {
			var sp span
			add(&sp, tc.Function.Arguments)
			f.texts = append(f.texts, sp)
		}
	}
}

// read reads one event's JSON into f; false when it is not a chunk
// (not JSON, or not of the shape), which the counter skips.
func (f *chunkFields) read(data []byte) bool {
	if json.Valid(data) && f.scan(data) {
		return true
	}
	var ch streamChunk
	if err := json.Unmarshal(data, &ch); err != nil {
		return false
	}
	f.decoded(&ch)
	return true
}
