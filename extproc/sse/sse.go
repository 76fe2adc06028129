// Package sse parses server-sent events incrementally: a response arrives in
// chunks cut at any byte, and events are handed over as soon as their blank
// line arrives, without holding more than the event being read.
package sse

// Event is one dispatched event.
type Event struct {
	// Name is the event field, empty for the default "message".
	Name string
	// Data is the data lines joined with "\n". It is only valid during the
	// callback: the parser reuses its storage.
	Data []byte
}

// maxLine bounds a single line so that a stream without line breaks cannot
// grow the parser without limit; longer lines are dropped whole.
const maxLine = 8 << 20

// Parser is an incremental SSE parser (WHATWG HTML, "event stream
// interpretation"). The zero value is ready to use.
type Parser struct {
	line      []byte // the line being read, without its terminator
	skipLF    bool   // the previous chunk ended in \r: a leading \n belongs to it
	overlong  bool   // the current line passed maxLine and is being dropped
	dropped   bool   // some line was
	data      []byte
	hasData   bool
	eventName []byte
}

// Feed consumes one chunk and calls fn for every event it completes.
func (p *Parser) Feed(chunk []byte, fn func(Event)) {
	for len(chunk) > 0 {
		if p.skipLF {
			p.skipLF = false
			if chunk[0] == '\n' {
				chunk = chunk[1:]
				continue
			}
		}
		i := indexEOL(chunk)
		if i < 0 {
			p.appendLine(chunk)
			return
		}
		p.appendLine(chunk[:i])
		if chunk[i] == '\r' {
			if i+1 < len(chunk) {
				if chunk[i+1] == '\n' {
					i++
				}
			} else {
				p.skipLF = true
			}
		}
		chunk = chunk[i+1:]
		p.endLine(fn)
	}
}

// Dropped reports whether a line was too long to read, and dropped: what
// it held is unknown.
func (p *Parser) Dropped() bool { return p.dropped }

func indexEOL(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}

func (p *Parser) appendLine(b []byte) {
	if p.overlong {
		return
	}
	if len(p.line)+len(b) > maxLine {
		p.overlong, p.dropped = true, true
		p.line = p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

func (p *Parser) endLine(fn func(Event)) {
	line := p.line
	p.line = p.line[:0]
	if p.overlong {
		p.overlong = false
		return
	}
	if len(line) == 0 {
		p.dispatch(fn)
		return
	}
	if line[0] == ':' { // a comment, often a keep-alive
		return
	}
	field, value := line, []byte(nil)
	for i, c := range line {
		if c == ':' {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
			break
		}
	}
	switch string(field) {
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "event":
		p.eventName = append(p.eventName[:0], value...)
	}
}

// dispatch hands over the event read so far. Per the spec, an event with no
// data lines is not dispatched.
func (p *Parser) dispatch(fn func(Event)) {
	if p.hasData {
		fn(Event{Name: string(p.eventName), Data: p.data})
	}
	p.data = p.data[:0]
	p.hasData = false
	p.eventName = p.eventName[:0]
}
