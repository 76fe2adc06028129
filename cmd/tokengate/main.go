// Command tokengate is an Envoy external processor that puts a token budget
// in front of OpenAI-compatible APIs. The server is internal/server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokengate/tokengate/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := server.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokengate:", err)
		os.Exit(server.ExitCode(err))
	}
}
