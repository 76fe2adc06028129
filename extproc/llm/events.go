package llm

import "bytes"

// Each provider's stream events, read for their usage and generated text.
// An event is read by its top-level members only (an event never echoes
// the request, but the rule is the same everywhere); a member of the wrong
// type counts as nothing.

var doneMarker = []byte("[DONE]")

// openAIEvent reads a Chat Completions, Completions or Responses event.
// Texts count in the order a choice carries them: text, content, refusal,
// reasoning, then the tool calls' arguments.
func (c *StreamCounter) openAIEvent(data []byte) {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, doneMarker) {
		c.done = true
		return
	}
	var f [5][]byte
	if lastMembers(data, openAIEventFields[:], f[:]) != nil {
		return
	}
	switch string(c.stringOf(f[0])) {
	case "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
		"response.reasoning_text.delta":
		c.addString(f[1])
	case "response.completed", "response.incomplete", "response.failed":
		c.done = true
	}
	_ = array(f[2], func(choice []byte) error {
		var ch [2][]byte
		if lastMembers(choice, []string{"text", "delta"}, ch[:]) != nil {
			return nil
		}
		c.addString(ch[0])
		var d [4][]byte
		if lastMembers(ch[1], []string{"content", "refusal", "reasoning_content", "tool_calls"}, d[:]) != nil {
			return nil
		}
		c.addString(d[0])
		c.addString(d[1])
		c.addString(d[2])
		_ = array(d[3], func(call []byte) error {
			fn := memberOf(call, "function")
			c.addString(memberOf(fn, "arguments"))
			return nil
		})
		return nil
	})
	if f[3] != nil {
		c.replaceUsage(f[3])
	}
	if u := memberOf(f[4], "usage"); u != nil {
		c.replaceUsage(u)
	}
}

var openAIEventFields = [...]string{"type", "delta", "choices", "usage", "response"}

// anthropicEvent reads a Messages stream event. message_start carries the
// prompt's usage (and a first output count), message_delta the usage so
// far: cumulative, so each count it carries replaces the one before, never
// adds to it.
func (c *StreamCounter) anthropicEvent(data []byte) {
	var f [4][]byte
	if lastMembers(data, []string{"type", "message", "usage", "delta"}, f[:]) != nil {
		return
	}
	switch string(c.stringOf(f[0])) {
	case "message_start":
		var w wireUsage
		if u := memberOf(f[1], "usage"); u != nil && w.read(Anthropic, u) == nil {
			c.usage, c.started = w, true
		}
	case "message_delta":
		var w wireUsage
		if f[2] == nil || w.read(Anthropic, f[2]) != nil {
			return
		}
		for i, seen := range w.seen {
			if seen {
				c.usage.n[i], c.usage.seen[i] = w.n[i], true
			}
		}
		c.reported = true
	case "content_block_delta":
		var d [4][]byte
		if lastMembers(f[3], []string{"text", "partial_json", "thinking", "type"}, d[:]) != nil {
			return
		}
		c.addString(d[0])
		c.addString(d[1])
		c.addString(d[2])
	case "message_stop":
		c.done = true
	}
}

// geminiEvent reads one streamed GenerateContentResponse: a data line of
// alt=sse, or an element of the streamed array. Each chunk carries its
// own text; the usage is the last chunk's that has one.
func (c *StreamCounter) geminiEvent(data []byte) {
	var f [2][]byte
	if lastMembers(data, []string{"candidates", "usageMetadata"}, f[:]) != nil {
		return
	}
	_ = array(f[0], func(cand []byte) error {
		var cf [2][]byte
		if lastMembers(cand, []string{"content", "finishReason"}, cf[:]) != nil {
			return nil
		}
		c.geminiParts(memberOf(cf[0], "parts"))
		if cf[1] != nil {
			c.done = true
		}
		return nil
	})
	if f[1] != nil {
		c.replaceUsage(f[1])
	}
}

// geminiParts counts the text of a content's parts, thoughts included, and
// the arguments of function calls as their JSON.
func (c *StreamCounter) geminiParts(parts []byte) {
	_ = array(parts, func(part []byte) error {
		var pf [2][]byte
		if lastMembers(part, []string{"text", "functionCall"}, pf[:]) != nil {
			return nil
		}
		c.addString(pf[0])
		c.addText(memberOf(pf[1], "args"))
		return nil
	})
}

// converseEvent reads a ConverseStream event, named by its :event-type:
// contentBlockDelta carries text (or tool input, or reasoning), metadata
// the usage, messageStop the end.
func (c *StreamCounter) converseEvent(name string, data []byte) {
	switch name {
	case "contentBlockDelta":
		d := memberOf(data, "delta")
		var f [3][]byte
		if lastMembers(d, []string{"text", "toolUse", "reasoningContent"}, f[:]) != nil {
			return
		}
		c.addString(f[0])
		c.addString(memberOf(f[1], "input"))
		c.addString(memberOf(f[2], "text"))
	case "metadata":
		if u := memberOf(data, "usage"); u != nil {
			c.replaceUsage(u)
		}
	case "messageStop":
		c.done = true
	}
}

// memberOf returns the value of the object v's last member named name, nil
// when v is not an object or has none.
func memberOf(v []byte, name string) []byte {
	var out [1][]byte
	if lastMembers(v, []string{name}, out[:]) != nil {
		return nil
	}
	return out[0]
}
