package openaimock

import (
	"encoding/json"
)

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	N                   *int           `json:"n"`
}

type chatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"` // nil only for x-mock-no-usage
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
}

type assistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	Usage             json.RawMessage   `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// chatDelta has pointers so the last delta marshals as {}.
type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

const fingerprint = "fp_openai_mock"

// chat answers Chat Completions with n choices (one by default), each its
// own text of the asked length; the usage bills them all.
func (s *server) chat(w *wire, c call) {
	var req chatRequest
	if !decodeBody(w, c.body, &req) {
		return
	}
	if req.Messages == nil {
		badRequest(w, "Missing required parameter: 'messages'.")
		return
	}
	_, n, msg := choiceCounts(req.N, nil, req.Stream)
	if msg != "" {
		badRequest(w, "%s", msg)
		return
	}
	model := c.model(req.Model)
	prompt, err := chatTokens(model, req.Messages)
	if err != nil {
		badRequest(w, "Invalid 'messages': %v.", err)
		return
	}
	gens, completion := generateChoices(model, c.completionTokens, limitOf(req.MaxTokens, req.MaxCompletionTokens), n)
	u := chatUsage(prompt, completion)
	id, created := s.nextID("chatcmpl-mock"), s.now().Unix()
	c.begin(s, id, model, req.Stream)
	if !req.Stream {
		resp := chatResponse{
			ID: id, Object: "chat.completion", Created: created, Model: model,
			Choices:           make([]chatChoice, n),
			Usage:             u,
			SystemFingerprint: fingerprint,
		}
		texts := make([]string, n)
		for i, gen := range gens {
			texts[i] = gen.text()
			resp.Choices[i] = chatChoice{
				Index:        i,
				Message:      assistantMessage{Role: "assistant", Content: texts[i]},
				FinishReason: finishReason(gen),
			}
		}
		if c.noUsage {
			resp.Usage = nil
		}
		c.buffered(resp.Usage != nil, texts...)
		writeJSON(w, c.status, resp)
		return
	}

	withUsage := req.StreamOptions.includeUsage() && !c.ignoreUsage
	chunk := func(index int, d chatDelta, finish *string) chatChunk {
		ch := chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			SystemFingerprint: fingerprint,
			Choices:           []chatChunkChoice{{Index: index, Delta: d, FinishReason: finish}},
		}
		if withUsage {
			ch.Usage = nullJSON
		}
		return ch
	}
	out := startSSE(w, c)
	// Every choice opens with its role, then the choices' texts go out
	// in turns, an event of each per turn, as OpenAI interleaves them;
	// each closes with its finish_reason.
	empty := ""
	pieces := make([][]string, n)
	turns := 0
	for i, gen := range gens {
		out.dataAt(chunk(i, chatDelta{Role: "assistant", Content: &empty}, nil), i, "")
		pieces[i] = gen.chunks(chunksPerEvent)
		turns = max(turns, len(pieces[i]))
	}
	for turn := range turns {
		for i := range gens {
			if turn < len(pieces[i]) {
				text := pieces[i][turn]
				out.dataAt(chunk(i, chatDelta{Content: &text}, nil), i, text)
			}
		}
	}
	for i, gen := range gens {
		out.dataAt(chunk(i, chatDelta{}, finishReason(gen)), i, "")
	}
	if withUsage {
		last := chunk(0, chatDelta{}, nil)
		last.Choices = []chatChunkChoice{}
		last.Usage, _ = json.Marshal(u)
		out.usageData(last)
	}
	out.done()
}
