package openaimock

import (
	"encoding/json"
)

type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	echoedBefore
	echoedAfter
}

// echoedBefore and echoedAfter are the request fields the Responses API
// writes back into the response object as the client sent them. They are
// where a hostile client hides a "usage" of its own, so the mock echoes
// them verbatim and in OpenAI's order: instructions to tools before usage,
// user and metadata after it (encoding/json writes an embedded struct's
// fields where it is embedded).
type echoedBefore struct {
	Instructions json.RawMessage `json:"instructions,omitempty"`
	Prompt       json.RawMessage `json:"prompt,omitempty"`
	Reasoning    json.RawMessage `json:"reasoning,omitempty"`
	Text         json.RawMessage `json:"text,omitempty"`
	ToolChoice   json.RawMessage `json:"tool_choice,omitempty"`
	Tools        json.RawMessage `json:"tools,omitempty"`
}

type echoedAfter struct {
	User     json.RawMessage `json:"user,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

type responseObject struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	CreatedAt         int64              `json:"created_at"`
	Status            string             `json:"status"`
	Error             *struct{}          `json:"error"`
	IncompleteDetails *incompleteDetails `json:"incomplete_details"`
	Model             string             `json:"model"`
	MaxOutputTokens   *int               `json:"max_output_tokens"`
	Output            []outputItem       `json:"output"`
	echoedBefore
	// Usage is the marshalled responsesUsage, null while the response
	// is in progress or when a stream leaves it out, and missing
	// altogether from a buffered answer under x-mock-no-usage.
	Usage json.RawMessage `json:"usage,omitempty"`
	echoedAfter
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

type outputItem struct {
	ID      string       `json:"id"`
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type outputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type responsesUsage struct {
	InputTokens         int               `json:"input_tokens"`
	InputTokensDetails  promptDetails     `json:"input_tokens_details"`
	OutputTokens        int               `json:"output_tokens"`
	OutputTokensDetails completionDetails `json:"output_tokens_details"`
	TotalTokens         int               `json:"total_tokens"`
}

// responses answers the Responses API. Like OpenAI, a text cut short by
// max_output_tokens makes the response "incomplete", and a stream then ends
// with response.incomplete instead of response.completed; both carry usage.
func (s *server) responses(w *wire, c call, req responsesRequest) {
	model := c.model(req.Model)
	in, err := responsesInputTokens(model, req.Input)
	if err != nil {
		badRequest(w, "Invalid 'input': %v.", err)
		return
	}
	gen := generate(model, c.completionTokens, limitOf(req.MaxOutputTokens))
	text := outputText{Type: "output_text", Text: gen.text(), Annotations: []any{}}
	item := outputItem{ID: s.nextID("msg_mock"), Type: "message", Status: "completed", Role: "assistant",
		Content: []outputText{text}}
	u, _ := json.Marshal(responsesUsage{InputTokens: in, OutputTokens: gen.tokens, TotalTokens: in + gen.tokens})
	final := responseObject{
		ID: s.nextID("resp_mock"), Object: "response", CreatedAt: s.now().Unix(), Status: "completed",
		Model: model, MaxOutputTokens: req.MaxOutputTokens, Output: []outputItem{item},
		Usage:        u,
		echoedBefore: req.echoedBefore, echoedAfter: req.echoedAfter,
	}
	done := "response.completed"
	if gen.capped {
		final.Status = "incomplete"
		final.IncompleteDetails = &incompleteDetails{Reason: "max_output_tokens"}
		done = "response.incomplete"
	}
	c.begin(s, final.ID, model, req.Stream)
	if !req.Stream {
		if c.noUsage {
			final.Usage = nil
		}
		c.reply(w, final, final.Usage != nil, gen.text())
		return
	}

	out := startSSE(w, c)
	seq := 0
	emitText := func(name string, fields map[string]any, delta string) {
		fields["type"] = name
		fields["sequence_number"] = seq
		seq++
		out.event(name, fields, delta)
	}
	emit := func(name string, fields map[string]any) { emitText(name, fields, "") }
	started := final
	started.Status, started.IncompleteDetails, started.Output, started.Usage = "in_progress", nil, []outputItem{}, nullJSON
	emit("response.created", map[string]any{"response": started})
	emit("response.in_progress", map[string]any{"response": started})
	open := item
	open.Status, open.Content = "in_progress", []outputText{}
	emit("response.output_item.added", map[string]any{"output_index": 0, "item": open})
	at := func(f map[string]any) map[string]any {
		f["item_id"], f["output_index"], f["content_index"] = item.ID, 0, 0
		return f
	}
	emit("response.content_part.added", at(map[string]any{"part": outputText{Type: "output_text", Annotations: []any{}}}))
	for _, d := range gen.chunks(chunksPerEvent) {
		emitText("response.output_text.delta", at(map[string]any{"delta": d, "logprobs": []any{}}), d)
	}
	emit("response.output_text.done", at(map[string]any{"text": text.Text, "logprobs": []any{}}))
	emit("response.content_part.done", at(map[string]any{"part": text}))
	emit("response.output_item.done", map[string]any{"output_index": 0, "item": item})
	withUsage := !c.ignoreUsage
	if !withUsage {
		// The Responses API has no include_usage; an upstream that leaves
		// usage out of its terminal event is the same case for a counter.
		final.Usage = nullJSON
	}
	out.final(done, map[string]any{"type": done, "sequence_number": seq, "response": final}, withUsage)
	out.end()
}
