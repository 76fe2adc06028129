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
func (s *server) chat(w *wire, c call, req chatRequest) {
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
		c.reply(w, resp, resp.Usage != nil, texts...)
		return
	}

	out := startChoices(w, c, req.StreamOptions, choicesObject[chatChunkChoice]{
		ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
		SystemFingerprint: fingerprint,
	})
	// Every choice opens with its role before any choice's text, as OpenAI
	// sends them.
	empty := ""
	for i := range gens {
		out.send(i, chatChunkChoice{Index: i, Delta: chatDelta{Role: "assistant", Content: &empty}}, "")
	}
	out.texts(gens,
		func(i int, text string) chatChunkChoice {
			return chatChunkChoice{Index: i, Delta: chatDelta{Content: &text}}
		},
		func(i int, reason *string) chatChunkChoice {
			return chatChunkChoice{Index: i, FinishReason: reason}
		})
	usageJSON, _ := json.Marshal(u)
	out.done(usageJSON)
}
