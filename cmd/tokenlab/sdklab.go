package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// attempt is one HTTP try the SDK made for a run, seen from a middleware:
// the SDK retries below the call tokenlab makes, so this is the only place
// each try and the wait before it can be observed.
type attempt struct {
	N                        int
	Status                   int // 0: no answer
	Err                      error
	RetryAfter, RetryAfterMs string
	Start, End               time.Time
	Waited                   time.Duration // since the previous try's answer: the SDK's own wait
}

// retryAfterMs is the wait the server asked for, in ms; -1 when none.
func (a attempt) retryAfterMs() int {
	return result{RetryAfter: a.RetryAfter, RetryAfterMs: a.RetryAfterMs}.retryAfterMs()
}

// runSDKLab is `tokenlab sdk`: the lab's requests through openai-go with
// its retries on, printing every try as it is answered, to show that a
// client honouring retry-after recovers from 429 on its own.
func runSDKLab(ctx context.Context, o options, stdout io.Writer) ([]result, error) {
	client := openai.NewClient(
		option.WithBaseURL(apiBase(o.url)+"/"),
		option.WithAPIKey(o.key),
		option.WithHeader(o.keyHeader, keyValue(o.api, o.keyHeader, o.key)),
		option.WithMaxRetries(o.maxRetries),
		option.WithRequestTimeout(o.timeout),
	)
	params := openai.ChatCompletionNewParams{
		Model: o.model,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage(systemPrompt),
			openai.UserMessage(userPrompt),
		},
	}
	if o.stream {
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	}
	fmt.Fprintf(stdout, "tokenlab sdk: %s (%s%s) to %s through openai-go, %d at a time, up to %s each\n\n",
		plural(o.n, "chat completion"), o.model, streamNote(o.stream), apiBase(o.url), o.concurrency, plural(o.maxRetries, "retry"))

	out := &lockedWriter{w: stdout}
	results := make([]result, o.n)
	forEachRun(ctx, o.n, o.concurrency, func(ctx context.Context, run int) {
		results[run-1] = sdkRun(ctx, client, params, o.stream, run, out)
	})
	results = finished(results)
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, retrySummary(results))
	fmt.Fprintln(stdout)
	return results, report(ctx, o, results, stdout)
}

// sdkRun makes one chat completion; the result is the last try's.
func sdkRun(ctx context.Context, client openai.Client, params openai.ChatCompletionNewParams, stream bool, run int, out io.Writer) result {
	rec := &recorder{run: run, out: out}
	mw := option.WithMiddleware(rec.middleware)
	r := result{Run: run, Start: time.Now()}
	var u openai.CompletionUsage
	var err error
	if stream {
		s := client.Chat.Completions.NewStreaming(ctx, params, mw)
		for s.Next() {
			if c := s.Current(); c.Usage.TotalTokens > 0 {
				u = c.Usage
			}
		}
		err = s.Err()
		_ = s.Close()
	} else {
		var c *openai.ChatCompletion
		if c, err = client.Chat.Completions.New(ctx, params, mw); err == nil {
			u = c.Usage
		}
	}
	r.Latency = time.Since(r.Start)
	r.Attempts = rec.attempts
	if n := len(rec.attempts); n > 0 {
		last := rec.attempts[n-1]
		r.Status, r.RetryAfter, r.RetryAfterMs = last.Status, last.RetryAfter, last.RetryAfterMs
		r.Remaining, r.Limit = rec.remaining, rec.limit
	}
	if r.Status/100 == 2 {
		r.Prompt, r.Completion, r.Total = int(u.PromptTokens), int(u.CompletionTokens), int(u.TotalTokens)
	}
	if err != nil && (r.Status == 0 || r.Status/100 == 2) {
		r.Err = err // no answer, or a broken one; a refusal speaks for itself
	}
	if err != nil && r.Status != 0 && r.Status/100 != 2 {
		fmt.Fprintf(out, "run %d: the SDK gave up after %d attempts: %d\n", run, len(rec.attempts), r.Status)
	}
	return r
}

// recorder keeps one run's tries and prints each as it is answered.
type recorder struct {
	run              int
	out              io.Writer
	attempts         []attempt
	remaining, limit string
}

func (rec *recorder) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	a := attempt{N: len(rec.attempts) + 1, Start: time.Now()}
	if a.N > 1 {
		a.Waited = a.Start.Sub(rec.attempts[a.N-2].End)
	}
	resp, err := next(req)
	a.End, a.Err = time.Now(), err
	if resp != nil {
		a.Status = resp.StatusCode
		a.RetryAfter = resp.Header.Get(hdrRetryAfter)
		a.RetryAfterMs = resp.Header.Get(hdrRetryAfterMs)
		rec.remaining = resp.Header.Get(hdrRemaining)
		rec.limit = resp.Header.Get(hdrLimit)
	}
	rec.attempts = append(rec.attempts, a)
	fmt.Fprintln(rec.out, rec.describe(a))
	return resp, err
}

func (rec *recorder) describe(a attempt) string {
	s := fmt.Sprintf("run %d, attempt %d: ", rec.run, a.N)
	if a.Status == 0 {
		s += fmt.Sprintf("no answer (%v)", a.Err)
	} else {
		s += statusText(a.Status)
	}
	if a.N > 1 {
		s += fmt.Sprintf(", sent after the SDK waited %v", a.Waited.Round(time.Millisecond))
	}
	if ms := a.retryAfterMs(); ms >= 0 {
		s += fmt.Sprintf(", asks to retry after %v (retry-after %s, retry-after-ms %s)",
			(time.Duration(ms) * time.Millisecond).Round(time.Millisecond), orDash(a.RetryAfter), orDash(a.RetryAfterMs))
	}
	if a.Status/100 == 2 && rec.remaining != "" {
		s += fmt.Sprintf(", %s tokens remaining", rec.remaining)
	}
	return s
}

// retrySummary says how many runs recovered through the SDK's retries.
func retrySummary(results []result) string {
	retried, recovered := 0, 0
	var waited time.Duration
	for _, r := range results {
		if len(r.Attempts) > 1 {
			retried++
			if r.Status/100 == 2 {
				recovered++
			}
		}
		for _, a := range r.Attempts {
			waited += a.Waited
		}
	}
	if retried == 0 {
		return "no run needed a retry"
	}
	return fmt.Sprintf("%s retried by the SDK, %d of them succeeded; the SDK waited %v in all",
		plural(retried, "run"), recovered, waited.Round(time.Millisecond))
}

// lockedWriter keeps concurrent runs' lines whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
