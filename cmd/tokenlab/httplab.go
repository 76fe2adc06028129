package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxBody caps what is read of one answer; the lab's are a few KiB.
const maxBody = 16 << 20

// runHTTPLab is `tokenlab run`: the lab over plain HTTP, so the table
// shows exactly what the gateway answered, headers included.
func runHTTPLab(ctx context.Context, o options, stdout, stderr io.Writer) ([]result, error) {
	body, err := o.api.body(o.model, o.stream)
	if err != nil {
		return nil, err
	}
	endpoint := o.api.endpoint(o.url, o.model, o.stream)
	client := &http.Client{Timeout: o.timeout}
	defer client.CloseIdleConnections()
	fmt.Fprintf(stdout, "tokenlab: %s (%s%s) to %s, %d at a time\n\n",
		plural(o.n, o.api.noun), o.model, streamNote(o.stream), endpoint, o.concurrency)

	results := make([]result, o.n)
	bar := newProgress(o.n, stderr)
	forEachRun(ctx, o.n, o.concurrency, func(ctx context.Context, run int) {
		results[run-1] = send(ctx, client, endpoint, o, body, run)
		_ = bar.Add(1)
	})
	_ = bar.Finish()
	results = finished(results)
	return results, report(ctx, o, results, stdout)
}

func streamNote(stream bool) string {
	if stream {
		return ", streamed"
	}
	return ""
}

// send makes one run's request and reads its whole answer.
func send(ctx context.Context, client *http.Client, endpoint string, o options, body []byte, run int) (r result) {
	r = result{Run: run, Start: time.Now()}
	defer func() { r.Latency = time.Since(r.Start) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		r.Err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range o.api.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set(o.keyHeader, keyValue(o.api, o.keyHeader, o.key))
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err
		return r
	}
	defer resp.Body.Close()
	readHeaders(&r, resp)
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		r.Err = fmt.Errorf("reading the answer: %w", err)
		return r
	}
	if resp.StatusCode/100 != 2 {
		return r // refusals and errors carry no usage, and are charged nothing
	}
	u, err := o.api.usage(resp.Header.Get("Content-Type"), data)
	if err != nil {
		r.Err = err
	}
	r.Prompt, r.Completion, r.Total = u.Prompt, u.Completion, u.Total
	return r
}

func readHeaders(r *result, resp *http.Response) {
	r.Status = resp.StatusCode
	r.Remaining = resp.Header.Get(hdrRemaining)
	r.Limit = resp.Header.Get(hdrLimit)
	r.RetryAfter = resp.Header.Get(hdrRetryAfter)
	r.RetryAfterMs = resp.Header.Get(hdrRetryAfterMs)
}
