// Command bench measures tokengate's cost on the request path against a
// do-nothing ext_proc server (SPEC §9): it builds and starts both as their
// own processes on loopback, plays HTTP requests at them over real gRPC
// ext_proc streams as Envoy would, and prints, per mode, streams/s,
// per-request latency percentiles, each server's CPU per stream and per
// message, and the ratios tokengate / nop.
//
//	go run ./e2e/bench [-mode buffered|estimate|streamed|redis|anthropic|budget|all]
//	    [-concurrency 8] [-duration 10s] [-requests 0] [-json] [-out FILE]
//
// This process is the client; it shares the machine's cores with the
// server under test, equally for both servers. See README.md next to this
// file for what is measured and how to read it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// options are the flags.
type options struct {
	mode        string
	concurrency int
	conns       int
	duration    time.Duration
	requests    int64
	warmup      time.Duration
	rounds      int
	timeout     time.Duration
	json        bool
	out         string
	redisBin    string
	args        []string // as given, for the record
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mode, "mode", "buffered", "buffered, estimate, streamed, redis, anthropic, budget, a comma-separated list, or all")
	fs.IntVar(&o.concurrency, "concurrency", 8, "streams in flight at once (1: serial, the per-request cost)")
	fs.IntVar(&o.conns, "conns", 2, "gRPC connections per server the streams spread over (Envoy opens one per worker thread)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per server per mode, split into -rounds; ignored with -requests")
	fs.Int64Var(&o.requests, "requests", 0, "streams per server per mode instead of -duration")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run per server per mode before the rounds")
	fs.IntVar(&o.rounds, "rounds", 4, "measured stretches per server, alternating nop and tokengate (ABBA order) so drift on a shared machine hits both")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole invocation")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of tables")
	fs.StringVar(&o.out, "out", "", "append the figures as a markdown snippet (machine, command, tables) to this file")
	fs.StringVar(&o.redisBin, "redis-server", "redis-server", "redis-server binary for -mode redis")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	var bad []error
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Errorf("unexpected arguments %v", fs.Args()))
	}
	if o.concurrency < 1 || o.conns < 1 || o.rounds < 1 {
		bad = append(bad, errors.New("-concurrency, -conns and -rounds must be at least 1"))
	}
	if o.requests < 0 || (o.requests == 0 && o.duration <= 0) {
		bad = append(bad, errors.New("give a positive -duration or -requests"))
	}
	if o.requests > 0 && o.requests < int64(o.rounds) {
		bad = append(bad, fmt.Errorf("-requests %d is fewer than -rounds %d", o.requests, o.rounds))
	}
	if _, err := pickModes(o.mode); err != nil {
		bad = append(bad, err)
	}
	if err := errors.Join(bad...); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	// A connection without a stream on it would only be reported, not used.
	o.conns = min(o.conns, o.concurrency)
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ms, _ := pickModes(o.mode)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	rep, err := benchAll(ctx, o, ms, stderr)
	if err != nil {
		return err
	}
	if o.json {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		writeTables(stdout, rep)
	}
	if o.out != "" {
		if err := appendMarkdown(o.out, rep); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: figures appended to %s\n", o.out)
	}
	if failed := rep.failedChecks(); len(failed) > 0 {
		return fmt.Errorf("sanity checks failed, the figures above do not measure what they claim: %v", failed)
	}
	return nil
}
