package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/tokengate/tokengate/extproc/tokenize"
)

// TestConcurrentStreamsSettleOnce runs streams that end every way at once
// on one key: whatever the interleaving, each is settled exactly once and
// the window holds the sum of what each should cost.
func TestConcurrentStreamsSettleOnce(t *testing.T) {
	r := startRig(t)
	const key = "concurrent-key"
	kinds := []struct {
		name    string
		headers []string
		// cost is what the stream should be charged, from what its client
		// read: the reported usage, or the prompt and the text let through.
		cost func(s streamed) int
	}{
		{"complete", nil, func(s streamed) int { return s.usage.TotalTokens }},
		{"gzip", []string{"x-mock-encoding", "gzip"}, func(s streamed) int { return s.usage.TotalTokens }},
		{"no usage", []string{"x-mock-ignore-include-usage", "true"},
			func(s streamed) int { return chatPrompt() + tokenize.Text("gpt-4o", s.text) }},
		{"cut", []string{"x-mock-cut-after", "5", "x-mock-encoding", "br"},
			func(s streamed) int { return chatPrompt() + tokenize.Text("gpt-4o", s.text) }},
		{"upstream 500", []string{"x-mock-status", "500"}, func(streamed) int { return 0 }},
	}
	const rounds = 4
	n := rounds * len(kinds)
	// The goroutines only fetch; the test's goroutine parses, so that
	// helpers may fail the test.
	type answer struct {
		status   int
		encoding string
		body     []byte
		err      error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	before := r.settlements("stream")
	for i := range answers {
		k := kinds[i%len(kinds)]
		headers := append([]string{"x-mock-completion-tokens", "45", "x-mock-chunk-delay", "2ms"}, k.headers...)
		req := r.post("/v1/chat/completions", chatBody(t, true))
		req.Header.Set("api-key", key)
		for j := 0; j+1 < len(headers); j += 2 {
			req.Header.Set(headers[j], headers[j+1])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := rawClient.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			// A cut stream ends in an error after its events: keep what came.
			body, _ := io.ReadAll(resp.Body)
			answers[i] = answer{status: resp.StatusCode, encoding: resp.Header.Get("Content-Encoding"), body: body}
		}()
	}
	wg.Wait()
	r.sent += n
	want := 0
	for i, a := range answers {
		k := kinds[i%len(kinds)]
		if a.err != nil {
			t.Fatalf("%s #%d: %v", k.name, i, a.err)
		}
		if a.status != http.StatusOK {
			continue // the 500s: nothing to pay
		}
		events, _ := readEvents(bufio.NewReader(decoding(t, a.encoding, bytes.NewReader(a.body))), -1)
		s := parseStream(t, events)
		if s.usage == nil && k.name != "no usage" && k.name != "cut" {
			t.Fatalf("%s #%d: no usage in the stream", k.name, i)
		}
		want += k.cost(s)
	}
	r.waitSettlements("stream", before+n)
	if got := r.charged(key, "stream"); got != want {
		t.Errorf("the window holds %d after %d concurrent streams, want %d", got, n, want)
	}
	if got := r.settlements("stream"); got != before+n+1 {
		t.Errorf("%d settlements for %d streams and the follow-up", got-before, n)
	}
}
