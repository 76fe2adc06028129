package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// errUsage marks a bad command line, so main exits 2 like other
// command-line tools; the message is already on stderr.
var errUsage = errors.New("usage")

const usageText = `tokenlab sends chat completions (or, with --api, Anthropic Messages, Gemini
generateContent or Bedrock Converse calls) through a token-limiting gateway
and shows what each one was answered and charged.

Usage:
  tokenlab run   --url URL --key KEY [flags]  plain HTTP; a table, and a chart with --out
  tokenlab sdk   --url URL --key KEY [flags]  the official OpenAI Go SDK, retries on: every attempt printed
  tokenlab local [flags]                      start openai-mock, tokengate and the Envoy stand-in on
                                              loopback ports, run the lab, write the chart, stop them

"tokenlab COMMAND -h" lists a command's flags.
`

// run is the whole command; main only turns signals into ctx.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	case "run", "sdk", "local":
	default:
		fmt.Fprintf(stderr, "tokenlab: unknown command %q\n\n%s", cmd, usageText)
		return errUsage
	}
	o, err := parseFlags(cmd, rest, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	switch cmd {
	case "run":
		_, err = runHTTPLab(ctx, o, stdout, stderr)
	case "sdk":
		_, err = runSDKLab(ctx, o, stdout)
	default:
		_, err = runLocal(ctx, o, stdout, stderr)
	}
	return err
}
