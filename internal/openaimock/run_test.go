package openaimock

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var readyLine = regexp.MustCompile(`^openai-mock ready http=(127\.0\.0\.1:\d+)\n$`)

func TestRunReadyAndShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--listen", "127.0.0.1:0", "--completion-tokens", "12"}, outW, &stderr)
		outW.Close()
	}()

	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("read ready line: %v (stderr %q)", err, stderr.String())
	}
	m := readyLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line %q does not match %s", line, readyLine)
	}
	base := "http://" + m[1]
	go io.Copy(io.Discard, outR) // nothing more is expected, but never block run

	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// A stream over a real connection proves the events are flushed.
	resp, err = http.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"completion_tokens":12`) || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("stream body lacks usage or [DONE]:\n%s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    config
		wantErr string
	}{
		{nil, config{listen: "127.0.0.1:8080", completionTokens: 64}, ""},
		{[]string{"--listen", ":9000", "--completion-tokens", "5", "--latency", "20ms", "--status", "429"},
			config{listen: ":9000", completionTokens: 5, latency: 20 * time.Millisecond, status: 429}, ""},
		{[]string{"--completion-tokens", "-1"}, config{}, "--completion-tokens"},
		{[]string{"--latency", "-1s"}, config{}, "--latency"},
		{[]string{"--status", "99"}, config{}, "--status"},
		{[]string{"--status", "600", "--latency", "-1s"}, config{}, "--latency"},
		{[]string{"extra"}, config{}, "unexpected arguments"},
		{[]string{"--nope"}, config{}, "nope"},
	}
	for i, tt := range tests {
		got, err := parseFlags(tt.args, io.Discard)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("step %d: got %+v, %v; want %+v", i, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("step %d: error %v, want a usage error naming %q", i, err, tt.wantErr)
		}
	}
}

func TestRunRefusesBadAddress(t *testing.T) {
	err := Run(context.Background(), []string{"--listen", "256.0.0.1:0"}, io.Discard, io.Discard)
	if err == nil || errors.Is(err, ErrUsage) {
		t.Fatalf("got %v, want a listen error", err)
	}
}
