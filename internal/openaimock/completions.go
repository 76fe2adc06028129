package openaimock

import (
	"encoding/json"
)

type completionsRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	MaxTokens     *int            `json:"max_tokens"`
	N             *int            `json:"n"`
	BestOf        *int            `json:"best_of"`
}

// completionsResponse is both the legacy answer and its stream chunks,
// which share one shape on the real API.
type completionsResponse = choicesObject[completionsChoice]

type completionsChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// completions answers the legacy API with n choices (one by default)
// whatever the number of prompts: the prompt tokens of all of them, n
// generated texts. best_of candidates are generated, the first n of them
// sent back, and the usage bills every candidate, as OpenAI does.
func (s *server) completions(w *wire, c call, req completionsRequest) {
	generated, n, msg := choiceCounts(req.N, req.BestOf, req.Stream)
	if msg != "" {
		badRequest(w, "%s", msg)
		return
	}
	model := c.model(req.Model)
	ins, err := splitInputs(model, req.Prompt)
	if err != nil {
		badRequest(w, "Invalid 'prompt': %v.", err)
		return
	}
	candidates, completion := generateChoices(model, c.completionTokens, limitOf(req.MaxTokens), generated)
	gens := candidates[:n]
	prompt := sumTokens(ins)
	u, _ := json.Marshal(usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion})
	resp := completionsResponse{
		ID: s.nextID("cmpl-mock"), Object: "text_completion", Created: s.now().Unix(), Model: model,
		SystemFingerprint: fingerprint,
	}
	c.begin(s, resp.ID, model, req.Stream)
	if !req.Stream {
		resp.Choices = make([]completionsChoice, n)
		texts := make([]string, n)
		for i, gen := range gens {
			texts[i] = gen.text()
			resp.Choices[i] = completionsChoice{Text: texts[i], Index: i, FinishReason: finishReason(gen)}
		}
		if !c.noUsage {
			resp.Usage = u
		}
		c.reply(w, resp, resp.Usage != nil, texts...)
		return
	}

	out := startChoices(w, c, req.StreamOptions, resp)
	out.texts(gens,
		func(i int, text string) completionsChoice {
			return completionsChoice{Text: text, Index: i}
		},
		func(i int, reason *string) completionsChoice {
			return completionsChoice{Index: i, FinishReason: reason}
		})
	out.done(u)
}
