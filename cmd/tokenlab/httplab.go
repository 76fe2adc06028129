package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBody caps what is read of one answer; the lab's are a few KiB.
const maxBody = 16 << 20

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []chatMessage  `json:"messages"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type usage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Total      int `json:"total_tokens"`
}

// labBody is the request every run sends. A streamed request asks for
// usage itself, as a careful client does, rather than relying on the
// gateway to add it.
func labBody(o options) ([]byte, error) {
	req := chatRequest{
		Model: o.model,
		Messages: []chatMessage{
			{Role: "system", Content: systemPrompt},
			{Role: "user", Content: userPrompt},
		},
	}
	if o.stream {
		req.Stream = true
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	return json.Marshal(req)
}

// runHTTPLab is `tokenlab run`: the lab over plain HTTP, so the table
// shows exactly what the gateway answered, headers included.
func runHTTPLab(ctx context.Context, o options, stdout, stderr io.Writer) ([]result, error) {
	body, err := labBody(o)
	if err != nil {
		return nil, err
	}
	endpoint := apiBase(o.url) + "/chat/completions"
	client := &http.Client{Timeout: o.timeout}
	defer client.CloseIdleConnections()
	fmt.Fprintf(stdout, "tokenlab: %s (%s%s) to %s, %d at a time\n\n",
		plural(o.n, "chat completion"), o.model, streamNote(o.stream), endpoint, o.concurrency)

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
	req.Header.Set(o.keyHeader, o.key)
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
	var u usage
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		u, err = streamUsage(data)
	} else {
		u, err = bodyUsage(data)
	}
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

// bodyUsage reads usage from a buffered chat completion.
func bodyUsage(data []byte) (usage, error) {
	var body struct {
		Usage *usage `json:"usage"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return usage{}, fmt.Errorf("reading usage: %w", err)
	}
	if body.Usage == nil {
		return usage{}, fmt.Errorf("the answer reports no usage")
	}
	return *body.Usage, nil
}

// streamUsage reads usage from a chat completion stream: the last event
// that carries one (OpenAI sends it in a final chunk with no choices).
func streamUsage(data []byte) (usage, error) {
	var last *usage
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxBody)
	for sc.Scan() {
		payload, ok := strings.CutPrefix(sc.Text(), "data:")
		payload = strings.TrimSpace(payload)
		if !ok || payload == "[DONE]" {
			continue
		}
		var chunk struct {
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(payload), &chunk); err != nil {
			return usage{}, fmt.Errorf("reading the stream: %w", err)
		}
		if chunk.Usage != nil {
			last = chunk.Usage
		}
	}
	if err := sc.Err(); err != nil {
		return usage{}, fmt.Errorf("reading the stream: %w", err)
	}
	if last == nil {
		return usage{}, fmt.Errorf("the stream reports no usage")
	}
	return *last, nil
}
