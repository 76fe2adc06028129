// Command openai-mock is an OpenAI-compatible upstream for tokengate's tests
// and demo stack. It answers chat completions, legacy completions,
// embeddings and the Responses API on both OpenAI and Azure paths, with usage
// numbers counted by the same tokenizer tokengate uses, so a test can compare
// tokengate's estimate with what the "provider" reports.
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
