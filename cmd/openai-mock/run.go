package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// errUsage marks bad command-line flags, so main can exit 2 like other
// command-line tools instead of 1.
var errUsage = errors.New("usage")

// shutdownGrace bounds how long open requests may take to finish once a
// signal arrives; a mock has no reason to outlive a test harness's patience.
const shutdownGrace = 5 * time.Second

// config is what the flags set: the defaults every inference request gets
// unless its x-mock-* headers say otherwise.
type config struct {
	listen           string
	completionTokens int
	latency          time.Duration
	status           int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("openai-mock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "address to serve HTTP on (port 0 picks a free one)")
	fs.IntVar(&c.completionTokens, "completion-tokens", 64, "completion tokens to generate per request, before max_tokens caps it")
	fs.DurationVar(&c.latency, "latency", 0, "delay before answering each inference request")
	fs.IntVar(&c.status, "status", 0, "force this HTTP status on every inference request (0: answer normally)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if c.completionTokens < 0 {
		errs = append(errs, fmt.Errorf("--completion-tokens: %d is negative", c.completionTokens))
	}
	if c.latency < 0 {
		errs = append(errs, fmt.Errorf("--latency: %v is negative", c.latency))
	}
	if !validStatus(c.status) {
		errs = append(errs, fmt.Errorf("--status: %d is neither 0 nor in 200..599", c.status))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	return c, nil
}

// run serves until ctx is cancelled, then shuts down gracefully. It prints
// the ready line on stdout once the listener is bound, so harnesses that
// pass port 0 learn the real address and never have to sleep.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	// Load vocabularies before announcing readiness so the first request
	// is not the one that pays for it.
	if err := tokenize.Preload(tokenize.O200kBase, tokenize.Cl100kBase); err != nil {
		return fmt.Errorf("load tokenizer: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           newServer(cfg).routes(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "openai-mock ready http=%s\n", ln.Addr())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
