package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/e2e/harness"
)

// chatTimeout bounds one direct request; the front's message timeout (1 s
// per ext_proc message) answers long before.
const chatTimeout = 10 * time.Second

var directClient = &http.Client{Timeout: chatTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// postChat sends a short gpt-4o chat completion to the gateway at base
// with key in api-key, asking the mock for completion tokens, and returns
// the response with its whole body.
func postChat(t *testing.T, base, key string, completion int) (*http.Response, []byte) {
	t.Helper()
	return postChatSaying(t, base, key, "Say hello to the replicas.", completion)
}

// postChatSaying is postChat with the user's message.
func postChatSaying(t *testing.T, base, key, content string, completion int) (*http.Response, []byte) {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"model":      "gpt-4o",
		"messages":   []map[string]string{{"role": "user", "content": content}},
		"max_tokens": completion,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", key)
	req.Header.Set("x-mock-completion-tokens", strconv.Itoa(completion))
	resp, err := directClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, got
}

// keySHA256 names a key the way overrides do.
func keySHA256(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// healthProbe checks grpc.health.v1 on every replica's ext_proc port, as
// Envoy's health check and Kubernetes' gRPC probe do.
type healthProbe struct {
	conns   []*grpc.ClientConn
	clients []healthpb.HealthClient
}

// dialHealth opens one health client per replica, closed when the test
// ends. Connections are lazy: the first Check dials.
func dialHealth(t *testing.T, r *harness.Replicas) *healthProbe {
	t.Helper()
	h := &healthProbe{}
	for _, p := range r.Tokengates {
		conn, err := grpc.NewClient(p.Field("grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		h.conns = append(h.conns, conn)
		h.clients = append(h.clients, healthpb.NewHealthClient(conn))
	}
	return h
}

// status returns replica i's overall serving status.
func (h *healthProbe) status(t *testing.T, i int) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := h.clients[i].Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("replica %d: grpc health check: %v", i, err)
	}
	return resp.GetStatus()
}

// wantHealth checks every replica's gRPC health and /readyz agree with
// serving.
func wantHealth(t *testing.T, step string, r *harness.Replicas, h *healthProbe, serving bool) {
	t.Helper()
	wantStatus, wantReady := healthpb.HealthCheckResponse_SERVING, http.StatusOK
	if !serving {
		wantStatus, wantReady = healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable
	}
	for i := range r.Tokengates {
		if got := h.status(t, i); got != wantStatus {
			t.Errorf("%s: replica %d: grpc health %v, want %v", step, i, got, wantStatus)
		}
		if got := r.Readyz(i); got != wantReady {
			t.Errorf("%s: replica %d: /readyz %d, want %d", step, i, got, wantReady)
		}
	}
}

// goroutines reads go_goroutines of every replica.
func goroutines(r *harness.Replicas) []float64 {
	out := make([]float64, len(r.Tokengates))
	for i := range r.Tokengates {
		out[i] = r.Metric(i, "go_goroutines")
	}
	return out
}

// waitGoroutines waits until every replica runs at most margin goroutines
// more than base, and returns the last counts read; it fails the test on
// timeout. Goroutines of a finished request or a closed connection end
// soon after, not at once, hence a wait rather than one reading.
func waitGoroutines(t *testing.T, r *harness.Replicas, base []float64, margin float64, timeout time.Duration) []float64 {
	t.Helper()
	last := make([]float64, len(base))
	_, err := harness.PollAll(len(base), timeout, func(i int) (bool, string) {
		v, err := harness.ScrapeMetric(directClient, r.Tokengates[i].Field("admin"), "go_goroutines")
		if err != nil {
			return false, err.Error()
		}
		last[i] = v
		return v <= base[i]+margin, ""
	})
	if err != nil {
		t.Errorf("tokengate goroutines %v, baseline %v (+%v allowed): %v: a goroutine leak in tokengate", last, base, margin, err)
	}
	return last
}
