package server

import (
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// keylessStatus sends the request headers of a chat completion without a
// key and returns the immediate response's status, 0 for "continue".
func keylessStatus(t *testing.T, addr string) int {
	t.Helper()
	stream := openStream(t, addr)
	hs := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/v1/chat/completions")}}}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hs}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	return int(resp.GetImmediateResponse().GetStatus().GetCode())
}

func scrape(t *testing.T, admin, metric string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, metric+" ") {
			return strings.TrimPrefix(line, metric+" ")
		}
	}
	return ""
}

// waitFor polls cond for up to 5 s: a signal is handled asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSIGHUPReload(t *testing.T) {
	const strict = "store: {backend: memory}\npolicies:\n- {name: p, tokens_per_minute: 10, counter_key: {header: [api-key]}}\n"
	r := startRun(t, strict)
	cfgPath := r.config
	if got := keylessStatus(t, r.grpc); got != 401 {
		t.Fatalf("before reload: %d, want 401", got)
	}

	// A broken file is refused and the running config stays.
	if err := os.WriteFile(cfgPath, []byte("policies:\n- {name: p, tokens_per_minut: 10}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "a failed reload to be counted", func() bool {
		return scrape(t, r.admin, `tokengate_config_reloads_total{result="failure"}`) == "1"
	})
	if got := keylessStatus(t, r.grpc); got != 401 {
		t.Fatalf("after a refused reload: %d, want the old config's 401", got)
	}

	// A valid one applies to new requests.
	anon := strings.Replace(strict, "header: [api-key]", "header: [api-key], missing: anonymous", 1)
	if err := os.WriteFile(cfgPath, []byte(anon), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "a successful reload", func() bool {
		return scrape(t, r.admin, `tokengate_config_reloads_total{result="success"}`) == "1"
	})
	if got := keylessStatus(t, r.grpc); got != 0 {
		t.Fatalf("after reload: %d, want continue (anonymous)", got)
	}
}
