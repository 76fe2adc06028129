package openaimock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// live serves the mock on a real loopback connection, for what a recorder
// cannot show: flushes reaching the client, pauses, dropped connections.
func live(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(newServer(testConfig()).routes())
	t.Cleanup(ts.Close)
	return ts.URL
}

// rawClient leaves content-encoding alone, so tests see the bytes the mock
// sent.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}

// openStream posts body and returns the response unread; the body is
// closed when the test ends.
func openStream(t *testing.T, url, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want 200; body %s", resp.StatusCode, b)
	}
	return resp
}

// nextEvent reads one event; a stream that ends between events gives
// io.EOF, one cut inside an event io.ErrUnexpectedEOF or the read error.
func nextEvent(rd *bufio.Reader) (sseEvent, error) {
	var e sseEvent
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" && e == (sseEvent{}) {
				return e, io.EOF
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return e, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return e, nil
		case strings.HasPrefix(line, "event: "):
			e.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// readAll reads events until the stream ends and returns them with the
// error that ended it (nil for a clean end).
func readAll(rd *bufio.Reader) ([]sseEvent, error) {
	var events []sseEvent
	for {
		e, err := nextEvent(rd)
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, e)
	}
}

// idOf reads the id of a chunk, a buffered answer or a Responses event.
func idOf(t *testing.T, data string) string {
	t.Helper()
	var v struct {
		ID       string `json:"id"`
		Response struct {
			ID string `json:"id"`
		} `json:"response"`
	}
	mustUnmarshal(t, data, &v)
	if v.ID == "" {
		v.ID = v.Response.ID
	}
	if v.ID == "" {
		t.Fatalf("no id in %s", data)
	}
	return v.ID
}

// getTrace fetches the trace of answer id from the mock at url.
func getTrace(t *testing.T, url, id string) traceRecord {
	t.Helper()
	resp, err := rawClient.Get(url + "/mock/traces/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r traceRecord
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("trace %s: status %d, %v", id, resp.StatusCode, err)
	}
	return r
}

// finishedTrace waits until the handler of answer id is done and returns
// its trace: a client that hangs up does not wait for the mock to notice.
func finishedTrace(t *testing.T, url, id string) traceRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := getTrace(t, url, id)
		if r.Finished {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s still not finished after 5s: %+v", id, r)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}
