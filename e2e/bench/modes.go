package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mode is one configuration of tokengate the tool measures against the
// nop. The nop does the same nothing in every mode; only tokengate's work
// and the messages change.
type mode struct {
	name     string
	streamed bool   // the response is an event stream of streamChunks chunks
	estimate bool   // estimate_prompt_tokens: tokenize the prompt at the request body
	redis    bool   // the redis store instead of memory
	api      string // "" is OpenAI's Chat Completions; "anthropic" is Anthropic's Messages
	budget   bool   // four limits (requests, input, output, cost) instead of one
	about    string
}

var modes = []mode{
	{name: "buffered", about: "4 messages, 1 KB chat prompt, memory store, no estimation (SPEC §9 rows 1-2)"},
	{name: "estimate", estimate: true, about: "as buffered, with the prompt tokenized at the request body"},
	{name: "streamed", streamed: true, about: "stream: true, event stream of 500 chunks + usage + [DONE], one message each"},
	{name: "redis", redis: true, about: "as buffered, the store a local redis-server (one round trip per decision)"},
	{name: "anthropic", api: "anthropic", about: "as buffered, an Anthropic Messages request and answer (/v1/messages)"},
	{name: "budget", budget: true, about: "as buffered, a policy of four limits: requests, input and output tokens a minute, cost a day"},
}

// pickModes turns -mode into the modes to run, in a fixed order.
func pickModes(s string) ([]mode, error) {
	if s == "all" {
		return modes, nil
	}
	var out []mode
	for _, name := range strings.Split(s, ",") {
		found := false
		for _, m := range modes {
			if m.name == strings.TrimSpace(name) {
				out, found = append(out, m), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-mode %q: want buffered, estimate, streamed, redis, anthropic, budget, a comma-separated list of them, or all", name)
		}
	}
	return out, nil
}

// writeConfig writes tokengate's config for m into dir: one policy whose
// budget no run can spend, so every request is counted and none refused
// (the bench measures the counting, not the 429 path).
func writeConfig(dir string, m mode, redisAddr string) (string, error) {
	store := "store: {backend: memory}\n"
	if m.redis {
		store = fmt.Sprintf("store: {backend: redis, redis: {addrs: [%s], on_error: fail_open}}\n", redisAddr)
	}
	limits := "  tokens_per_minute: 1000000000000\n"
	if m.budget {
		limits = `  limits:
  - {unit: requests, max: 1000000000000, window: 1m}
  - {unit: tokens, kind: input, max: 1000000000000, window: 1m}
  - {unit: tokens, kind: output, max: 1000000000000, window: 1m}
  - {unit: cost, max: 1000000, period: daily}
`
		store += "prices: {default: {input: 2.50, output: 10}}\n"
	}
	cfg := store + fmt.Sprintf(`policies:
- name: bench
%s  counter_key: {header: [api-key]}
  estimate_prompt_tokens: %t
`, limits, m.estimate)
	path := filepath.Join(dir, "tokengate-"+m.name+".yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}
