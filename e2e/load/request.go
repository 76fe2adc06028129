package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
)

// words are one token each, with their leading space, in o200k_base and
// cl100k_base (the test checks), and the tokenizers never merge across a
// space-led word: a prompt of n of them is n tokens of text.
var words = []string{
	" the", " of", " and", " to", " in", " is", " that", " for", " it", " with",
	" as", " was", " on", " be", " at", " by", " this", " had", " not", " are",
	" but", " from", " or", " have", " an", " they", " which", " one", " you", " were",
	" all", " we", " when", " there", " can", " more", " time", " about", " would", " people",
	" model", " request", " token", " limit", " window", " answer", " question", " data", " write", " please",
}

// client is one simulated caller: its own random sizes, so a run is
// reproducible whatever the scheduling.
type client struct {
	id  int
	rng *rand.Rand
}

func between(rng *rand.Rand, r Range) int { return r.Min + rng.IntN(r.Max-r.Min+1) }

// promptText is n random words.
func promptText(rng *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n * 7)
	for range n {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()
}

type chatBody struct {
	Model     string        `json:"model"`
	Messages  []chatMessage `json:"messages"`
	MaxTokens int           `json:"max_tokens"`
	N         int           `json:"n,omitempty"`
}

// legacyBody is a legacy Completions request.
type legacyBody struct {
	Model     string `json:"model"`
	Prompt    string `json:"prompt"`
	MaxTokens int    `json:"max_tokens"`
	N         int    `json:"n,omitempty"`
	BestOf    int    `json:"best_of,omitempty"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// newRequest builds a chat completion (or a legacy completion, with
// Options.Legacy) whose every choice will be exactly completion tokens:
// asked of the mock, and capped by max_tokens at the same figure, which is
// what a strict policy reserves for each choice.
func (o *Options) newRequest(ctx context.Context, url string, prompt string, completion int) (*http.Request, error) {
	path := "/v1/chat/completions"
	var v any = chatBody{
		Model:     o.Model,
		Messages:  []chatMessage{{Role: "user", Content: prompt}},
		MaxTokens: completion,
		N:         o.N,
	}
	if o.Legacy {
		path = "/v1/completions"
		v = legacyBody{Model: o.Model, Prompt: prompt, MaxTokens: completion, N: o.N, BestOf: o.BestOf}
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(url, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", o.Key)
	req.Header.Set("x-mock-completion-tokens", strconv.Itoa(completion))
	return req, nil
}

// usage is the part of an answer the harness reads: the upstream's own
// account, which for n choices or best_of candidates bills them all.
type usage struct {
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

// readUsage reads an admitted answer's usage, which must be there: the
// harness counts what the provider reported, as tokengate charges.
func readUsage(resp *http.Response) (prompt, completion, total int64, err error) {
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, 0, err
	}
	var u usage
	if err := json.Unmarshal(body, &u); err != nil || u.Usage == nil || u.Usage.TotalTokens <= 0 {
		return 0, 0, 0, fmt.Errorf("200 without usage.total_tokens: %.200q", body)
	}
	return u.Usage.PromptTokens, u.Usage.CompletionTokens, u.Usage.TotalTokens, nil
}
