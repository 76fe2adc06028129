// Command openai-mock is an OpenAI-compatible upstream for tokengate's tests
// and demo stack; see internal/openaimock for what it answers and the
// x-mock-* headers that shape each answer.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokengate/tokengate/internal/openaimock"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := openaimock.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, openaimock.ErrUsage):
		os.Exit(2) // the flag package already printed what was wrong
	default:
		fmt.Fprintln(os.Stderr, "openai-mock:", err)
		os.Exit(1)
	}
}
