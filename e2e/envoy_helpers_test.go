package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/harness"
)

// Helpers of the Envoy-fidelity tests (issue 20): local replies per Envoy
// version, HTTP/2 requests ending in trailers, pipelined STREAMED chunks.

// evGateHeader names a request for evBodyGates.
const evGateHeader = "x-test-gate"

// evBodyGates holds a request's body back until the front has the reply to
// its request headers, so the body (and its trailers) arrive after that
// reply, as they do when a client's body follows its headers later: Envoy
// then sends the buffered body without end_of_stream (onTrailers), the
// case a processor must not mistake for an unfinished body.
type evBodyGates struct {
	mu    sync.Mutex
	next  atomic.Int64
	gates map[string]chan struct{}
}

func evNewBodyGates() *evBodyGates { return &evBodyGates{gates: map[string]chan struct{}{}} }

// open registers a gate and returns its name and channel.
func (g *evBodyGates) open() (string, <-chan struct{}) {
	id := strconv.FormatInt(g.next.Add(1), 10)
	ch := make(chan struct{})
	g.mu.Lock()
	g.gates[id] = ch
	g.mu.Unlock()
	return id, ch
}

// onReply is the front's Config.OnReply.
func (g *evBodyGates) onReply(e front.ReplyEvent) {
	if e.Phase != "request_headers" {
		return
	}
	id := e.Header.Get(evGateHeader)
	g.mu.Lock()
	ch := g.gates[id]
	delete(g.gates, id)
	g.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// evTrailerTransport sends every request over HTTP/2 (h2c) with its body
// ending in an x-body-sha256 trailer. With gates, the body is written only
// once the front has answered the request's headers.
type evTrailerTransport struct {
	h2    http.RoundTripper
	gates *evBodyGates
	wait  time.Duration // without gates: how long to hold the body back
}

func evNewTrailerClient(gates *evBodyGates, timeout time.Duration) *http.Client {
	return &http.Client{Transport: &evTrailerTransport{h2: harness.H2CClient(0).Transport, gates: gates}, Timeout: timeout}
}

func (tt *evTrailerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	sum := sha256.Sum256(body)
	pr, pw := io.Pipe()
	out := req.Clone(req.Context())
	out.Body, out.ContentLength, out.GetBody = pr, -1, nil
	out.Header.Del("Content-Length")
	out.Trailer = http.Header{"X-Body-Sha256": nil}
	var gate <-chan struct{}
	if tt.gates != nil {
		var id string
		id, gate = tt.gates.open()
		out.Header.Set(evGateHeader, id)
	}
	go func() {
		switch {
		case gate != nil:
			select {
			case <-gate:
			case <-req.Context().Done():
			case <-time.After(30 * time.Second):
			}
		case tt.wait > 0:
			time.Sleep(tt.wait)
		}
		pw.Write(body)
		out.Trailer.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
		pw.Close()
	}()
	return tt.h2.RoundTrip(out)
}

// evScrape reads one of tokengate's series (labels as name/value pairs) and
// whether it exists at all: a counter that was never touched is absent,
// one added 0 is present.
func evScrape(t *testing.T, s *harness.Stack, name string, labels ...string) (float64, bool) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", "http://"+s.Tokengate.Field("admin")+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for line := range strings.Lines(string(body)) {
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(series, "#") || series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, fmt.Sprintf("%s=%q", labels[i], labels[i+1])) {
				match = false
			}
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil && match {
			sum += v
			found = true
		}
	}
	return sum, found
}

// evCharges is what tokengate_tokens_total says a policy was charged, by
// source.
type evCharges map[string]float64

func evReadCharges(t *testing.T, s *harness.Stack, policy string) evCharges {
	t.Helper()
	out := evCharges{}
	for _, src := range []string{"reported", "counted", "estimated", "background", "unreadable", "unanswered", "none"} {
		if v, ok := evScrape(t, s, "tokengate_tokens_total", "policy", policy, "source", src); ok {
			out[src] = v
		}
	}
	return out
}

// evSettled is how many requests of policy tokengate has settled (each
// allowed request is counted once, when it settles).
func evSettled(t *testing.T, s *harness.Stack, policy string) int {
	t.Helper()
	v, _ := evScrape(t, s, "tokengate_requests_total", "policy", policy, "decision", "allowed")
	return int(v)
}

// evWaitSettled waits until policy has n settlements; a request Envoy kept
// the response of is settled when its stream is closed, after the client
// has its answer.
func evWaitSettled(t *testing.T, s *harness.Stack, policy string, n int) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		got := evSettled(t, s, policy)
		if got > n {
			t.Fatalf("policy %s: %d settlements, want %d: a request was evSettled twice", policy, got, n)
		}
		if got < n {
			return fmt.Errorf("policy %s: %d settlements, want %d", policy, got, n)
		}
		return nil
	})
}

// delta is what changed between two readings of evCharges (by source): a source whose
// tokens moved, or whose series appeared (a charge of 0 creates it).
func (c evCharges) delta(before evCharges) evCharges {
	out := evCharges{}
	for k, v := range c {
		if b, was := before[k]; !was || v != b {
			out[k] = v - b
		}
	}
	return out
}

func (c evCharges) String() string {
	var parts []string
	for _, k := range []string{"reported", "counted", "estimated", "background", "unreadable", "unanswered", "none"} {
		if v, ok := c[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%g", k, v))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// evStartFront puts one more front, configured like the stack's but with
// change applied, before upstream and the stack's tokengate.
func evStartFront(t *testing.T, s *harness.Stack, upstream string, change func(*front.Config)) (*front.Front, string) {
	t.Helper()
	cfg := s.FrontConfig(upstream)
	if change != nil {
		change(&cfg)
	}
	return harness.StartFront(t, cfg)
}

// evPost sends a JSON POST of body to base+path with the headers given as
// pairs and returns the response with its whole body.
func evPost(t *testing.T, client *http.Client, base, path string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "POST", base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the answer: %v", path, err)
	}
	return resp, got
}

// evPlainClient speaks HTTP/1.1 and keeps no connection.
var evPlainClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}, Timeout: 30 * time.Second}

// evOneTokenWords is a prompt of n words of one token each (see e2e/load):
// a single user message of it is n+7 prompt tokens for gpt-4o.
func evOneTokenWords(n int) string { return strings.Repeat(" the", n) }
