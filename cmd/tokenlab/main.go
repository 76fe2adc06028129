// Command tokenlab is the token rate limiting lab: it sends chat
// completions through a gateway, prints what each one was answered and
// charged, and draws the runs as a chart. `tokenlab local` brings up the
// whole stack (openai-mock, tokengate and the Envoy stand-in) for people
// who have neither Envoy nor Docker.
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
		os.Exit(2) // what was wrong is already on stderr
	default:
		fmt.Fprintln(os.Stderr, "tokenlab:", err)
		os.Exit(1)
	}
}
