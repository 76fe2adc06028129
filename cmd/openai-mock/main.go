// Command openai-mock is an OpenAI-compatible upstream for tokengate's tests
// and demo stack. It answers chat completions, legacy completions,
// embeddings and the Responses API on both OpenAI and Azure paths, with usage
// numbers counted by the same tokenizer tokengate uses, so a test can compare
// tokengate's estimate with what the "provider" reports.
//
// Each inference request may change its own answer with headers:
//
//	x-mock-status: 500              answer this status (errors get OpenAI's JSON error)
//	x-mock-completion-tokens: 90    generate this many completion tokens (per choice)
//	x-mock-latency: 250ms           wait before answering (or a bare number of ms)
//	x-mock-encoding: gzip|deflate|br  compress the body; streams are flushed per event
//	x-mock-ignore-include-usage: true  stream without the usage chunk although asked
//	x-mock-no-usage: true           leave "usage" out of a buffered answer (every API)
//	x-mock-chunk-delay: 10ms        wait before every event but the first
//	x-mock-stall: 1s                wait once, after x-mock-stall-after events (default 1)
//	x-mock-cut-after: 5             drop the connection after 5 events, without [DONE]
//
// Chat completions honour n: that many choices, each its own text of the
// asked length (streamed as chunks per choice index), the usage's
// completion_tokens their sum. Legacy completions honour n and best_of:
// best_of candidates are generated and billed, the first n returned. As on
// OpenAI, n below 1 or above 128, best_of above 20 or below n, and a
// stream with best_of above n are answered 400.
//
// The completion text is deterministic: words that are one token each in
// o200k_base and cl100k_base, three to a streamed event (after a first event
// with the role and no text). So a test knows the expected completion tokens
// of any prefix of a stream: tokenize.Text(model, concatenated deltas), which
// is also what the usage reports for the whole stream.
//
// GET /mock/traces/{id}, with the answer's id (chatcmpl-mock…, cmpl-mock…,
// resp_mock…), reports what was actually sent: events, completion text (per
// choice too when there are several) and its tokens, whether usage and the
// stream's end went out, whether it was cut, and the size and SHA-256 of
// the body bytes on the wire (after compression). GET /mock/calls counts
// requests by path.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2) // the flag package already printed what was wrong
	default:
		fmt.Fprintln(os.Stderr, "openai-mock:", err)
		os.Exit(1)
	}
}
