package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"
)

// steadyLoad keeps a few clients sending small chat completions through
// every replica, round-robin, on the real clock, and records each answer's
// status, error code and latency: the traffic a mesh keeps sending while
// its store goes away and comes back. Unlike e2e/load it needs no fake
// clock and never waits for a round, so no request is held back while the
// store is down.
type steadyLoad struct {
	*clientLoad[outcome]
	urls []string
	key  string
}

// outcome is one answered (or failed) request of the steady load.
type outcome struct {
	replica    int
	start, end time.Time
	status     int    // 0: a transport error
	code       string // the OpenAI error code of a non-200, or the transport error
}

func (o outcome) latency() time.Duration { return o.end.Sub(o.start) }

// Bounds of a steady load: it stops at the test's word, or at these.
const (
	steadyClients      = 4
	steadyMaxPerClient = 5000
	steadyMaxWall      = 40 * time.Second
	// steadyTimeout bounds one request: far past the front's 1 s message
	// timeout, so a hang shows as a latency, not as a stuck test.
	steadyTimeout = 5 * time.Second
)

// startSteady starts the load on key; it stops when the test ends at the
// latest.
func startSteady(t *testing.T, urls []string, key string) *steadyLoad {
	t.Helper()
	l := &steadyLoad{urls: urls, key: key}
	b := loadBounds{clients: steadyClients, maxPerClient: steadyMaxPerClient, maxWall: steadyMaxWall, timeout: steadyTimeout}
	// Each client spreads its requests over the replicas.
	l.clientLoad = startClientLoad(t, b, func(_ context.Context, client *http.Client, c, n int) outcome {
		return l.send(client, (c+n)%len(urls))
	})
	return l
}

func (l *steadyLoad) send(client *http.Client, replica int) outcome {
	o := outcome{replica: replica, start: time.Now()}
	body, _ := json.Marshal(map[string]any{
		"model":      "gpt-4o",
		"messages":   []map[string]string{{"role": "user", "content": "Count to three."}},
		"max_tokens": 8,
	})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, l.urls[replica]+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		o.end, o.code = time.Now(), err.Error()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", l.key)
	req.Header.Set("x-mock-completion-tokens", "8")
	resp, err := client.Do(req)
	if err != nil {
		o.end, o.code = time.Now(), err.Error()
		return o
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.end, o.status = time.Now(), resp.StatusCode
	if err != nil {
		o.code = err.Error()
	} else if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(got, &e) == nil {
			o.code = e.Error.Code
		}
	}
	return o
}

// waitSince waits until n requests sent at or after from have been
// answered, and returns them; it fails the test on timeout.
func (l *steadyLoad) waitSince(t *testing.T, step string, from time.Time, n int, timeout time.Duration) []outcome {
	t.Helper()
	got, ok := l.waitFor(func(o outcome) bool { return !o.start.Before(from) }, n, timeout)
	if !ok {
		t.Fatalf("%s: %d of %d requests sent since %v answered after %v", step, len(got), n, from.Format(time.TimeOnly), timeout)
	}
	return got
}

// tally counts outcomes by status ("200", "503 limiter_unavailable", …).
func tally(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		k := strconv.Itoa(o.status)
		if o.code != "" {
			k += " " + o.code
		}
		m[k]++
	}
	return m
}

// latencies returns the slowest answer and the 99th percentile.
func latencies(outs []outcome) (slowest, p99 time.Duration) {
	if len(outs) == 0 {
		return 0, 0
	}
	ds := make([]time.Duration, len(outs))
	for i, o := range outs {
		ds[i] = o.latency()
	}
	slices.Sort(ds)
	return ds[len(ds)-1], ds[(len(ds)-1)*99/100]
}

// wantAll fails unless every outcome has status (and, when not 200, the
// JSON error code).
func wantAll(t *testing.T, step string, outs []outcome, status int, code string) {
	t.Helper()
	for _, o := range outs {
		if o.status != status || o.code != code {
			t.Errorf("%s: %d answers: %v; want every one %d %s (first off: replica %d at %v: %d %q)",
				step, len(outs), tally(outs), status, code, o.replica, o.start.Format("15:04:05.000"), o.status, o.code)
			return
		}
	}
}

func (o outcome) String() string {
	return fmt.Sprintf("replica %d %s+%v: %d %s", o.replica, o.start.Format("15:04:05.000"), o.latency().Round(time.Millisecond), o.status, o.code)
}
