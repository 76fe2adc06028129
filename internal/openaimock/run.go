// Package openaimock is the mock LLM upstream of tokengate's tests and
// demo stack, run by cmd/openai-mock and by tokenlab in its process. It
// answers OpenAI's chat completions, legacy completions, embeddings and
// the Responses API on both OpenAI and Azure paths, and the three other
// wire formats tokengate counts:
//
//	POST …/v1/messages (any prefix)                              Anthropic Messages
//	POST /v1/projects/P/locations/L/publishers/anthropic/models/M:rawPredict|:streamRawPredict
//	POST /model/M/invoke|invoke-with-response-stream              Anthropic on Bedrock (InvokeModel)
//	POST /v1beta/models/M:generateContent|:streamGenerateContent  Gemini (also /v1/models/…)
//	POST /v1/projects/P/locations/L/publishers/google/models/M:…  Gemini on Vertex AI (also /v1beta1/…)
//	POST /model/M/converse|converse-stream                        Bedrock Converse
//
// with usage numbers counted by the same tokenizer tokengate uses, so a
// test can compare tokengate's estimate with what the "provider" reports.
// A Bedrock model ID is read unescaped (%3A or ':'; an ARN may hold %2F).
// An operation an API does not have answers 404 in the API's error shape
// and is not counted as a call.
//
// Each inference request may change its own answer with headers:
//
//	x-mock-status: 500              answer this status (errors get the API's own JSON error)
//	x-mock-completion-tokens: 90    generate this many completion tokens (per choice)
//	x-mock-latency: 250ms           wait before answering (or a bare number of ms)
//	x-mock-encoding: gzip|deflate|br  compress the body; streams are flushed per event
//	x-mock-ignore-include-usage: true  stream without the usage chunk although asked (OpenAI)
//	x-mock-no-usage: true           leave "usage" out of a buffered answer (every API)
//	x-mock-chunk-delay: 10ms        wait before every event but the first
//	x-mock-stall: 1s                wait once, after x-mock-stall-after events (default 1)
//	x-mock-cut-after: 5             drop the connection after 5 events, without [DONE]
//	x-mock-cache-read: 100          report 100 prompt tokens read from the cache (not OpenAI)
//	x-mock-cache-write: 100         report 100 prompt tokens written to the cache (Anthropic, Bedrock)
//	x-mock-reasoning: 200           report 200 thinking tokens (Gemini's thoughtsTokenCount)
//	x-mock-stream-error-after: 2    end a stream with the API's error after 2 text events (not OpenAI)
//
// An event is whatever one write of the stream's framing sends: an SSE
// event, a Bedrock eventstream frame, one element (or the closing bracket)
// of Gemini's JSON-array stream. A text event is one carrying completion
// text; a stream error asked past the last comes after the last.
//
// Errors take each API's shape: OpenAI's, Anthropic's {"type":"error",
// "error":{"type","message"}} (also on Vertex AI), Gemini's {"error":
// {"code","message","status"}}, and on every Bedrock path (InvokeModel
// included) an x-amzn-ErrorType header with {"message"}. Every Bedrock
// answer carries an x-amzn-RequestId; a buffered InvokeModel answer also
// the x-amzn-bedrock-*-token-count and invocation-latency headers.
//
// Chat completions honour n: that many choices, each its own text of the
// asked length (streamed as chunks per choice index), the usage's
// completion_tokens their sum. Legacy completions honour n and best_of:
// best_of candidates are generated and billed, the first n returned. As on
// OpenAI, n below 1 or above 128, best_of above 20 or below n, and a
// stream with best_of above n are answered 400. Gemini's candidateCount
// (1 to 8) works as chat's n.
//
// The completion text is deterministic: words that are one token each in
// o200k_base and cl100k_base, three to a streamed event (after a first event
// with the role and no text). So a test knows the expected completion tokens
// of any prefix of a stream: tokenize.Text(model, concatenated deltas), which
// is also what the usage reports for the whole stream.
//
// The prompt of the Anthropic, Gemini and Converse APIs is counted as
// tokengate estimates it, with chat's count (tokenize.Chat): a system
// message holding the system text (Anthropic's system, a string or its
// text blocks; Gemini's systemInstruction or system_instruction parts;
// Converse's system blocks), when there is one, then each message with
// its role and the text of its text blocks or parts. Images, documents,
// tool calls and results, thinking: anything but text counts nothing.
// The cache overrides are carved out of that count, read first and each
// capped at what is left: Anthropic's input_tokens and Bedrock's
// inputTokens (and the invocation metrics' inputTokenCount) are the rest,
// so that input + cache read + cache write is the counted prompt; Bedrock's
// totalTokens adds all four up, as the service does. Gemini's
// promptTokenCount is the whole count, cachedContentTokenCount a part of
// it, and totalTokenCount = prompt + candidates + thoughts.
//
// The streams, as the APIs send them:
//   - Anthropic: message_start (usage with output_tokens 1),
//     content_block_start, ping, content_block_delta…, content_block_stop,
//     message_delta (stop reason; input, cache and output counts, all
//     cumulative), message_stop; each with its event: line, no [DONE].
//     x-mock-stream-error-after sends an error event (overloaded_error,
//     "Overloaded") instead of the rest. On Bedrock every event goes
//     base64-encoded in a chunk frame, message_stop carrying
//     amazon-bedrock-invocationMetrics, and the error is a
//     modelStreamErrorException frame.
//   - Gemini: with ?alt=sse "data: {…}\r\n\r\n" events, otherwise one JSON
//     array of pretty-printed chunks ("[{…}\n,\r\n{…}\n]") as
//     application/json. Every chunk carries the usage so far (prompt,
//     thoughts, the candidates' tokens sent); the last one the finish
//     reason and the whole counts. x-mock-stream-error-after just ends the
//     body after that many chunks, as Gemini's streams sometimes end.
//   - Converse: eventstream frames messageStart, contentBlockDelta…,
//     contentBlockStop, messageStop, metadata (usage and latency);
//     x-mock-stream-error-after sends a modelStreamErrorException frame.
//
// Any API key (Authorization, x-api-key, x-goog-api-key, ?key=, a SigV4
// signature) is accepted, unchecked and never recorded.
//
// GET /mock/traces/{id}, with the answer's id (chatcmpl-mock…, cmpl-mock…,
// resp_mock…, msg_mock…, Gemini's responseId gemini-mock…, and on Bedrock
// the x-amzn-RequestId header's bedrock-mock…, which InvokeModel's msg_mock…
// also finds), reports what was actually
// sent: events, completion text (per choice too when there are several)
// and its tokens, whether usage and the stream's end went out, whether it
// was cut or ended by x-mock-stream-error-after, and the size and SHA-256
// of the body bytes on the wire (after compression). GET /mock/calls
// counts requests by path.
package openaimock

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

// ErrUsage marks bad command-line flags, so main can exit 2 like other
// command-line tools instead of 1.
var ErrUsage = errors.New("usage")

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
		return c, fmt.Errorf("%w: %w", ErrUsage, err)
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
		return c, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return c, nil
}

// Run serves until ctx is cancelled, then shuts down gracefully. It prints
// the ready line on stdout once the listener is bound, so harnesses that
// pass port 0 learn the real address and never have to sleep.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
