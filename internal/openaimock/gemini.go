package openaimock

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// generateRequest is a Gemini generateContent request. Like Google's own
// JSON parser, the mock takes each member under its lowerCamel or its
// snake_case name.
type generateRequest struct {
	Contents               []geminiContent   `json:"contents"`
	SystemInstruction      *geminiContent    `json:"systemInstruction"`
	SystemInstructionSnake *geminiContent    `json:"system_instruction"`
	GenerationConfig       *generationConfig `json:"generationConfig"`
	GenerationConfigSnake  *generationConfig `json:"generation_config"`
}

type geminiContent struct {
	Role  string     `json:"role,omitempty"`
	Parts []textPart `json:"parts"`
}

type generationConfig struct {
	MaxOutputTokens      *int `json:"maxOutputTokens"`
	MaxOutputTokensSnake *int `json:"max_output_tokens"`
	CandidateCount       *int `json:"candidateCount"`
	CandidateCountSnake  *int `json:"candidate_count"`
}

// generateResponse is the buffered answer and every chunk of a stream.
type generateResponse struct {
	Candidates    []candidate    `json:"candidates"`
	UsageMetadata *usageMetadata `json:"usageMetadata,omitempty"` // nil only for x-mock-no-usage
	ModelVersion  string         `json:"modelVersion"`
	ResponseID    string         `json:"responseId"`
}

type candidate struct {
	Content      geminiContent `json:"content"`
	FinishReason string        `json:"finishReason,omitempty"`
	Index        int           `json:"index"`
}

// usageMetadata leaves zero counts out, as the API does. The prompt count
// includes the cached tokens, and the candidates count leaves out the
// thoughts: the total is prompt + candidates + thoughts.
type usageMetadata struct {
	PromptTokenCount        int `json:"promptTokenCount"`
	CandidatesTokenCount    int `json:"candidatesTokenCount,omitempty"`
	TotalTokenCount         int `json:"totalTokenCount"`
	CachedContentTokenCount int `json:"cachedContentTokenCount,omitempty"`
	ThoughtsTokenCount      int `json:"thoughtsTokenCount,omitempty"`
}

// maxCandidates is Gemini's bound on candidateCount.
const maxCandidates = 8

// orElse is a, or b when the request has no a.
func orElse[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// generateContent answers Gemini's generateContent and
// streamGenerateContent, on the Gemini API and on Vertex AI, with
// candidateCount candidates, each its own text as chat's n choices are.
// The key (x-goog-api-key or ?key=) is neither checked nor kept.
func (s *server) generateContent(w *wire, c call, req generateRequest) {
	if len(req.Contents) == 0 {
		c.badRequest(w, "* GenerateContentRequest.contents: contents is not specified")
		return
	}
	var cfg generationConfig
	if g := orElse(req.GenerationConfig, req.GenerationConfigSnake); g != nil {
		cfg = *g
	}
	n := 1
	if cc := orElse(cfg.CandidateCount, cfg.CandidateCountSnake); cc != nil && *cc != 0 {
		if *cc < 1 || *cc > maxCandidates {
			c.badRequest(w, "* GenerateContentRequest.generation_config.candidate_count: must be in [1, %d], got %d", maxCandidates, *cc)
			return
		}
		n = *cc
	}
	var system string
	if si := orElse(req.SystemInstruction, req.SystemInstructionSnake); si != nil {
		system = joinText(si.Parts)
	}
	msgs := make([]tokenize.Message, len(req.Contents))
	for i, m := range req.Contents {
		msgs[i] = tokenize.Message{Role: m.Role, Content: joinText(m.Parts)}
	}
	model := c.pathModel
	prompt := promptTokens(model, system, msgs)
	limit := limitOf(orElse(cfg.MaxOutputTokens, cfg.MaxOutputTokensSnake))
	gens, completion := generateChoices(model, c.completionTokens, limit, n)
	usage := func(candidates int) *usageMetadata {
		return &usageMetadata{PromptTokenCount: prompt, CandidatesTokenCount: candidates,
			TotalTokenCount: prompt + candidates + c.reasoning, CachedContentTokenCount: c.splitPrompt(prompt).cacheRead,
			ThoughtsTokenCount: c.reasoning}
	}
	head := generateResponse{ModelVersion: model, ResponseID: s.nextID("gemini-mock")}
	stream := c.op == "streamGenerateContent"
	c.begin(s, head.ResponseID, model, stream)
	if !stream {
		resp := head
		texts := make([]string, n)
		for i, gen := range gens {
			texts[i] = gen.text()
			resp.Candidates = append(resp.Candidates, candidate{Content: modelContent(texts[i]), FinishReason: gen.finish("STOP", "MAX_TOKENS"), Index: i})
		}
		if !c.noUsage {
			resp.UsageMetadata = usage(completion)
		}
		c.reply(w, resp, resp.UsageMetadata != nil, texts...)
		return
	}

	out := geminiOut{array: c.query.Get("alt") != "sse"}
	if out.array {
		out.sse = startStream(w, c, "application/json")
	} else {
		out.sse = startSSE(w, c)
	}
	pieces := make([][]string, n)
	turns, streamError := 0, false
	for i, gen := range gens {
		pieces[i], streamError = c.textEvents(gen)
		turns = max(turns, len(pieces[i]))
	}
	if !streamError {
		turns = max(turns, 1) // the finish goes out even with no text
	}
	sent := make([]string, n)
	for turn := range turns {
		last := !streamError && turn == turns-1
		ch := head
		deltas := make([]string, n)
		for i := range gens {
			if turn < len(pieces[i]) {
				deltas[i] = pieces[i][turn]
			} else if !last {
				continue
			}
			sent[i] += deltas[i]
			cand := candidate{Content: modelContent(deltas[i]), Index: i}
			if last {
				cand.FinishReason = gens[i].finish("STOP", "MAX_TOKENS")
			}
			ch.Candidates = append(ch.Candidates, cand)
		}
		// Every chunk reports the usage so far: the prompt, the thoughts
		// (which come first) and the candidates' tokens sent.
		sofar := 0
		for _, t := range sent {
			sofar += tokenize.Text(model, t)
		}
		ch.UsageMetadata = usage(sofar)
		out.chunk(ch, func(r *traceRecord) {
			for i, d := range deltas {
				r.addText(i, d)
			}
			r.Usage = last
			r.Done = last && !out.array
		})
	}
	if streamError {
		c.tr.update(errorNote) // the stream just ends, without its last chunk
	} else {
		out.close()
	}
	out.end()
}

// modelContent is a candidate's content: text from the model.
func modelContent(text string) geminiContent {
	return geminiContent{Role: "model", Parts: []textPart{{Text: text}}}
}

// geminiOut frames a stream's chunks: with alt=sse as "data:" events
// ended by CRLF CRLF, otherwise as one JSON array written element by
// element, each pretty-printed and separated as the API separates them.
type geminiOut struct {
	*sse
	array  bool
	chunks int
}

func (o *geminiOut) chunk(v generateResponse, note func(*traceRecord)) {
	b, ok := o.encode(v)
	if !ok {
		return
	}
	if o.array {
		sep := "\n,\r\n"
		if o.chunks == 0 {
			sep = "["
		}
		var buf bytes.Buffer
		buf.WriteString(sep)
		json.Indent(&buf, b, "", "  ") // valid JSON, just marshalled
		b = buf.Bytes()
	} else {
		b = fmt.Appendf(nil, "data: %s\r\n\r\n", b)
	}
	o.chunks++
	o.write(b, note)
}

// close ends the JSON array.
func (o *geminiOut) close() {
	if o.array {
		o.write([]byte("\n]"), doneNote)
	}
}
