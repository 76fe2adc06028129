package openaimock

import "encoding/json"

// usage is the Chat and legacy Completions usage block. The details are
// only on chat, as on the real API; the mock never caches or reasons, so
// both detail counts are zero.
type usage struct {
	PromptTokens            int                `json:"prompt_tokens"`
	CompletionTokens        int                `json:"completion_tokens"`
	TotalTokens             int                `json:"total_tokens"`
	PromptTokensDetails     *promptDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *completionDetails `json:"completion_tokens_details,omitempty"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type completionDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

func chatUsage(prompt, completion int) *usage {
	return &usage{
		PromptTokens:            prompt,
		CompletionTokens:        completion,
		TotalTokens:             prompt + completion,
		PromptTokensDetails:     &promptDetails{},
		CompletionTokensDetails: &completionDetails{},
	}
}

// streamOptions is the stream_options object of Chat and Completions.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

func (o *streamOptions) includeUsage() bool { return o != nil && o.IncludeUsage }

// chunksPerEvent is how many generated pieces (one token each) go in one
// streamed event: small enough that a stream has many events.
const chunksPerEvent = 3

// nullJSON marks "usage": null on stream chunks when include_usage is set,
// as OpenAI sends it on every chunk but the last.
var nullJSON = json.RawMessage("null")

func finishReason(c completion) *string {
	r := c.finish("stop", "length")
	return &r
}
