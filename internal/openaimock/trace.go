package openaimock

import (
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// maxTraces bounds the traces kept; a long-running demo mock forgets the
// oldest.
const maxTraces = 1024

// traceRecord is what one answer actually contained, as GET
// /mock/traces/{id} reports it. A test reads it to know what went out:
// how many events before a cut or a client's disconnect, the completion text
// sent so far and its tokens (counted like the usage: tokenize.Text of the
// concatenated deltas), and the digest of the bytes on the wire.
type traceRecord struct {
	// ID is the answer's id ("chatcmpl-mock…", "cmpl-mock…", "resp_mock…",
	// "msg_mock…", Gemini's responseId "gemini-mock…"), the one a client
	// reads in the body or first event; on Bedrock's paths, the
	// x-amzn-RequestId header's "bedrock-mock…".
	ID     string `json:"id"`
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
	// Encoding is the content-encoding applied, empty for none.
	Encoding string `json:"encoding,omitempty"`
	// Events counts the SSE events written, [DONE] included (eventstream
	// frames on Bedrock, array elements and the closing bracket of
	// Gemini's JSON stream).
	Events int `json:"events"`
	// Text is the completion text written: the deltas sent so far, or the
	// whole text of a buffered answer. An answer with several choices
	// (n) has their texts joined in index order here, and each in
	// ChoiceTexts. CompletionTokens is the count of what was sent, summed
	// over the choices as the usage sums them; a legacy best_of's
	// candidates that were not sent are billed by the usage, not here.
	Text             string   `json:"text"`
	ChoiceTexts      []string `json:"choice_texts,omitempty"`
	CompletionTokens int      `json:"completion_tokens"`
	// Usage reports that a usage block was sent.
	Usage bool `json:"usage"`
	// Done reports that the stream's end ([DONE], the Responses API's
	// terminal event, Anthropic's message_stop, Converse's metadata,
	// Gemini's last chunk or closing bracket) was sent.
	Done bool `json:"done"`
	// Cut reports that x-mock-cut-after dropped the connection.
	Cut bool `json:"cut"`
	// StreamError reports that x-mock-stream-error-after ended the
	// stream early (Anthropic, Gemini and Bedrock streams only).
	StreamError bool `json:"stream_error,omitempty"`
	// WireBytes counts the body bytes handed to the connection, after
	// compression; WireSHA256 is their digest, set once Finished.
	WireBytes  int64  `json:"wire_bytes"`
	WireSHA256 string `json:"wire_sha256,omitempty"`
	// Finished reports that the handler is done: nothing more will be sent.
	Finished bool `json:"finished"`
}

// trace is one answer's record, written by its handler and read by
// /mock/traces at any time.
type trace struct {
	mu  sync.Mutex
	rec traceRecord
}

func (t *trace) update(f func(*traceRecord)) {
	t.mu.Lock()
	f(&t.rec)
	t.mu.Unlock()
}

func (t *trace) wrote(n int) { t.update(func(r *traceRecord) { r.WireBytes += int64(n) }) }

func (t *trace) snapshot() traceRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rec
	r.ChoiceTexts = slices.Clone(r.ChoiceTexts)
	r.Text, r.CompletionTokens = strings.Join(r.ChoiceTexts, ""), 0
	for _, text := range r.ChoiceTexts {
		r.CompletionTokens += tokenize.Text(r.Model, text)
	}
	if len(r.ChoiceTexts) < 2 {
		r.ChoiceTexts = nil // one choice: Text says it all
	}
	return r
}

// addText notes delta as sent for choice index. The texts are kept per
// choice (Text is only made from them by snapshot), so that each is
// counted apart: words joined across two choices could tokenize
// differently.
func (r *traceRecord) addText(index int, delta string) {
	for len(r.ChoiceTexts) <= index {
		r.ChoiceTexts = append(r.ChoiceTexts, "")
	}
	r.ChoiceTexts[index] += delta
}

// traces finds answers by id.
type traces struct {
	mu    sync.Mutex
	byID  map[string]*trace
	order []string // oldest first
}

// add makes t findable under id.
func (ts *traces) add(id string, t *trace) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.byID == nil {
		ts.byID = map[string]*trace{}
	}
	if len(ts.order) == maxTraces {
		delete(ts.byID, ts.order[0])
		ts.order = ts.order[1:]
	}
	ts.byID[id] = t
	ts.order = append(ts.order, id)
}

func (ts *traces) get(id string) (*trace, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.byID[id]
	return t, ok
}

func (s *server) traceHandler(w http.ResponseWriter, r *http.Request) {
	t, ok := s.traces.get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "openai-mock: no trace of "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, t.snapshot())
}

// begin names the answer and registers its trace; the handlers call it
// once they know the id.
func (c call) begin(s *server, id, model string, stream bool) {
	c.tr.update(func(r *traceRecord) {
		r.ID, r.Model, r.Stream, r.Encoding = id, model, stream, c.encoding
	})
	s.traces.add(id, c.tr)
}

// finish marks the trace final with the digest of what went out.
func (t *trace) finish(digest []byte) {
	t.update(func(r *traceRecord) {
		r.WireSHA256 = hex.EncodeToString(digest)
		r.Finished = true
	})
}

// reply sends a whole (non-streamed) answer: the text of each choice in it,
// and whether the usage went with it, are traced before it is written, so
// that a client holding the answer always finds them in the trace.
func (c call) reply(w *wire, resp any, withUsage bool, texts ...string) {
	c.tr.update(func(r *traceRecord) {
		r.ChoiceTexts = nil
		for i, text := range texts {
			r.addText(i, text)
		}
		r.Usage, r.Done = withUsage, true
	})
	writeJSON(w, c.status, resp)
}
