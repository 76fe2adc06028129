package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// errHelp is -h: flag has printed the flags, nothing else to do.
var errHelp = flag.ErrHelp

// options are one command's flags, checked.
type options struct {
	command     string
	url         string // the gateway's base URL
	key         string
	keyHeader   string
	model       string
	n           int
	concurrency int
	stream      bool
	out         string // chart file, .png or .svg; "" for none
	limit       int    // the chart's limit line; 0 reads x-ratelimit-limit-tokens
	timeout     time.Duration
	maxRetries  int // sdk: the SDK's own retry budget

	// local only
	envoyConfig     string
	tokensPerMinute int
	sdk             bool
}

// parseFlags reads the flags of command (run, sdk or local). Every
// problem is reported, not just the first, and named by its flag.
func parseFlags(command string, args []string, stderr io.Writer) (options, error) {
	o := options{command: command}
	fs := flag.NewFlagSet("tokenlab "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if command != "local" {
		fs.StringVar(&o.url, "url", "", "the gateway's base URL, e.g. http://localhost:10000; requests go to URL/v1/chat/completions (/v1 is added unless URL ends with it)")
		// The environment variable keeps the key out of shell history and ps.
		fs.StringVar(&o.key, "key", os.Getenv("TOKENLAB_KEY"), "subscription key (default $TOKENLAB_KEY)")
	}
	fs.StringVar(&o.keyHeader, "key-header", "api-key", "header the key is sent in, as the gateway's counter_key expects")
	fs.StringVar(&o.model, "model", "gpt-4o", "model to ask for")
	fs.IntVar(&o.n, "n", 10, "number of chat completions")
	fs.IntVar(&o.concurrency, "concurrency", 1, "requests in flight at once")
	fs.BoolVar(&o.stream, "stream", false, "ask for streamed answers (usage read from the last event)")
	defOut := ""
	if command == "local" {
		defOut = "lab-result.png"
	}
	fs.StringVar(&o.out, "out", defOut, "write the chart to this .png or .svg file")
	fs.IntVar(&o.limit, "limit", 0, "the policy's tokens per minute, for the chart's limit line (default: the x-ratelimit-limit-tokens header)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on one request (one attempt, for sdk) after this long")
	if command != "run" {
		fs.IntVar(&o.maxRetries, "max-retries", 2, "retries the SDK makes on 429 and 5xx (the SDK's default is 2)")
	}
	if command == "local" {
		fs.StringVar(&o.envoyConfig, "envoy-config", "", "Envoy bootstrap whose ext_proc filter the stand-in follows (default: the envoy/envoy.yaml built into tokenlab)")
		fs.IntVar(&o.tokensPerMinute, "tokens-per-minute", 500, "the lab policy's budget")
		fs.BoolVar(&o.sdk, "sdk", false, "send through the OpenAI SDK (as tokenlab sdk) instead of plain HTTP; waits out the retry-after for real")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := o.check(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "tokenlab %s: %v\n", command, err)
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if o.concurrency > o.n {
		o.concurrency = o.n
	}
	return o, nil
}

func (o options) check(rest []string) error {
	var errs []error
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", rest))
	}
	if o.command != "local" {
		if u, err := url.Parse(o.url); o.url == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--url: %q is not an http(s) URL", o.url))
		}
		if o.key == "" {
			errs = append(errs, errors.New("--key: missing (or set TOKENLAB_KEY)"))
		}
	}
	if o.keyHeader == "" {
		errs = append(errs, errors.New("--key-header: empty"))
	}
	if o.model == "" {
		errs = append(errs, errors.New("--model: empty"))
	}
	if o.n < 1 {
		errs = append(errs, fmt.Errorf("-n: %d, want at least 1", o.n))
	}
	if o.concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency: %d, want at least 1", o.concurrency))
	}
	if o.out != "" {
		if ext := strings.ToLower(filepath.Ext(o.out)); ext != ".png" && ext != ".svg" {
			errs = append(errs, fmt.Errorf("--out: %q: the chart is written as .png or .svg", o.out))
		}
	}
	if o.limit < 0 {
		errs = append(errs, fmt.Errorf("--limit: %d is negative", o.limit))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout: %v, want a positive duration", o.timeout))
	}
	if o.maxRetries < 0 {
		errs = append(errs, fmt.Errorf("--max-retries: %d is negative", o.maxRetries))
	}
	if o.command == "local" && o.tokensPerMinute < 1 {
		errs = append(errs, fmt.Errorf("--tokens-per-minute: %d, want at least 1", o.tokensPerMinute))
	}
	return errors.Join(errs...)
}

// apiBase is the base of the OpenAI paths on the gateway, ".../v1".
// Gateways route /v1/... to OpenAI-compatible upstreams; a URL already
// ending in /v1 (as OPENAI_BASE_URL does) is taken as it is.
func apiBase(gateway string) string {
	base := strings.TrimRight(gateway, "/")
	if strings.HasSuffix(base, "/v1") {
		return base
	}
	return base + "/v1"
}
