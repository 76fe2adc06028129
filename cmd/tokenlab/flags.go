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
	command      string
	api          *labAPI // the API driven (--api; sdk: OpenAI)
	url          string  // the gateway's base URL
	key          string
	keyHeader    string // --key-header, else the API's own
	keyHeaderSet bool   // --key-header was given
	model        string // --model, else the API's default
	n            int
	concurrency  int
	stream       bool
	out          string // chart file, .png or .svg; "" for none
	limit        int    // the chart's limit line; 0 reads x-ratelimit-limit-tokens
	timeout      time.Duration
	maxRetries   int // sdk: the SDK's own retry budget

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
	apiName := labAPIs[0].name
	if command != "sdk" {
		fs.StringVar(&apiName, "api", apiName, "the API to drive: "+apiNames()+
			" (OpenAI chat completions, Anthropic Messages, Gemini generateContent, Bedrock Converse)")
	}
	if command != "local" {
		fs.StringVar(&o.url, "url", "", "the gateway's base URL, e.g. http://localhost:10000; the API's path is added: /v1/chat/completions (openai; /v1 is added unless URL ends with it), /v1/messages (anthropic, likewise), /v1beta/models/MODEL:generateContent (gemini), /model/MODEL/converse (bedrock)")
		// The environment variable keeps the key out of shell history and ps.
		fs.StringVar(&o.key, "key", os.Getenv("TOKENLAB_KEY"), "subscription key (default $TOKENLAB_KEY)")
	}
	keyHelp := "header the key is sent in, as the gateway's counter_key expects (default: the API's own: api-key, x-api-key, x-goog-api-key; bedrock: authorization). In authorization the key goes as a Bearer token, for bedrock as the access key ID of a SigV4-shaped header"
	if command == "sdk" {
		keyHelp = "header the key is sent in besides the SDK's authorization: Bearer (default api-key)"
	}
	if command == "local" {
		keyHelp += "; the lab policy is keyed by it (default: each API's own key headers)"
	}
	fs.StringVar(&o.keyHeader, "key-header", "", keyHelp)
	fs.StringVar(&o.model, "model", "", "model to ask for (default: "+defaultModels()+")")
	fs.IntVar(&o.n, "n", 10, "number of requests")
	fs.IntVar(&o.concurrency, "concurrency", 1, "requests in flight at once")
	fs.BoolVar(&o.stream, "stream", false, "ask for streamed answers (usage read from the stream's events)")
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
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.api, o.keyHeaderSet = lookupAPI(apiName), set["key-header"]
	if err := o.check(fs.Args(), apiName, set["model"]); err != nil {
		fmt.Fprintf(stderr, "tokenlab %s: %v\n", command, err)
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if o.concurrency > o.n {
		o.concurrency = o.n
	}
	if !o.keyHeaderSet {
		o.keyHeader = o.api.keyHeader
	}
	if o.model == "" {
		o.model = o.api.defaultModel
	}
	return o, nil
}

// defaultModels reads "gpt-4o (openai), claude-sonnet-4-5 (anthropic), …".
func defaultModels() string {
	models := make([]string, len(labAPIs))
	for i, a := range labAPIs {
		models[i] = fmt.Sprintf("%s (%s)", a.defaultModel, a.name)
	}
	return strings.Join(models, ", ")
}

// check reports every problem of the flags; apiName is --api as given,
// modelSet whether --model was.
func (o options) check(rest []string, apiName string, modelSet bool) error {
	var errs []error
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", rest))
	}
	if o.api == nil {
		errs = append(errs, fmt.Errorf("--api: %q: want %s", apiName, apiNames()))
	} else if o.sdk && o.api != labAPIs[0] {
		errs = append(errs, fmt.Errorf("--sdk: the SDK lab drives the OpenAI API only, not --api %s", o.api.name))
	}
	if o.command != "local" {
		if u, err := url.Parse(o.url); o.url == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--url: %q is not an http(s) URL", o.url))
		}
		if o.key == "" {
			errs = append(errs, errors.New("--key: missing (or set TOKENLAB_KEY)"))
		}
	}
	if o.keyHeaderSet && o.keyHeader == "" {
		errs = append(errs, errors.New("--key-header: empty"))
	}
	if modelSet && o.model == "" {
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
