package e2e

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokengate/tokengate/e2e/harness"
)

// bins are the built binaries by name. buildErr is why they could not be
// built; every test that needs them fails with it, rather than the whole
// run stopping in TestMain.
var (
	bins     map[string]string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokengate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, buildErr = harness.BuildBinaries(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("the binaries did not build: %v", buildErr)
	}
}

// loadMessageTimeout is the front's message_timeout in the load runs
// (accuracy, replicas, crash, soak), in place of envoy.yaml's 1 s. Those
// runs are about what is charged, kept or leaked, and dozens of clients
// on two loaded cores can hold a healthy reply past 1 s; a 504 then fails
// the run for the machine's sake. What tokengate does when Envoy gives up
// on a message is the fault tests' subject, on envoy.yaml's own timeout.
const loadMessageTimeout = 10 * time.Second

// patientFront is StackOptions.Filter and ReplicaOptions.Filter for the
// load runs: the front waits loadMessageTimeout for each ext_proc reply.
func patientFront(f *extprocv3.ExternalProcessor) {
	f.MessageTimeout = durationpb.New(loadMessageTimeout)
}

// skipLongUnderShort skips a long load, soak or fault-under-load test with
// -short, the developer's fast loop; go test ./... (README, CI) runs it.
func skipLongUnderShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a long load test: skipped with -short; go test ./... runs it")
	}
}

// only returns the single value of header key, failing when it is absent
// or repeated: the contract says "exactly one" for every header checked.
func only(t *testing.T, step string, h http.Header, key string) string {
	t.Helper()
	v := h.Values(key)
	if len(v) != 1 {
		t.Fatalf("%s: header %s = %q, want exactly one value", step, key, v)
	}
	return v[0]
}

// wantJSONError checks an OpenAI-style error answer and returns its code.
func wantJSONError(t *testing.T, step string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d, want %d (body %s)", step, resp.StatusCode, status, body)
	}
	if mt, _, err := mime.ParseMediaType(only(t, step, resp.Header, "Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("%s: content-type %q, want application/json", step, resp.Header.Get("Content-Type"))
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%s: body %q is not an OpenAI error: %v", step, body, err)
	}
	if e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("%s: error %+v, want code %q and a message", step, e.Error, code)
	}
}

// wantRetryAfter checks a 429's retry-after (whole seconds) and
// retry-after-ms, each present exactly once.
func wantRetryAfter(t *testing.T, step string, h http.Header, secs, ms int) {
	t.Helper()
	if got := only(t, step, h, "Retry-After"); got != strconv.Itoa(secs) {
		t.Errorf("%s: retry-after %q, want %d", step, got, secs)
	}
	if got := only(t, step, h, "Retry-After-Ms"); got != strconv.Itoa(ms) {
		t.Errorf("%s: retry-after-ms %q, want %d", step, got, ms)
	}
}

// usageTotal reads usage.total_tokens of a chat completion.
func usageTotal(t *testing.T, step string, body []byte) int {
	t.Helper()
	var c struct {
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Usage.TotalTokens <= 0 {
		t.Fatalf("%s: no usage.total_tokens in %q (%v)", step, body, err)
	}
	return c.Usage.TotalTokens
}

// remaining reads x-ratelimit-remaining-tokens.
func remaining(t *testing.T, step string, h http.Header) int {
	t.Helper()
	n, err := strconv.Atoi(only(t, step, h, "X-Ratelimit-Remaining-Tokens"))
	if err != nil {
		t.Fatalf("%s: x-ratelimit-remaining-tokens: %v", step, err)
	}
	return n
}

// wantRemaining checks remaining tokens after a request that brought the
// window's charges to charged: the limit minus them, never below 0. The
// request's own usage is included, read from its buffered body before the
// response headers go out.
func wantRemaining(t *testing.T, step string, h http.Header, limit, charged int) {
	t.Helper()
	if got, want := remaining(t, step, h), max(0, limit-charged); got != want {
		t.Errorf("%s: remaining %d, want %d (limit %d − %d charged)", step, got, want, limit, charged)
	}
}

// wantRateHeaders checks the headers every counted 2xx carries.
func wantRateHeaders(t *testing.T, step string, h http.Header, limit, charged int) {
	t.Helper()
	if got := only(t, step, h, "X-Ratelimit-Limit-Tokens"); got != strconv.Itoa(limit) {
		t.Errorf("%s: x-ratelimit-limit-tokens %q, want %d", step, got, limit)
	}
	wantRemaining(t, step, h, limit, charged)
	if _, err := time.ParseDuration(only(t, step, h, "X-Ratelimit-Reset-Tokens")); err != nil {
		t.Errorf("%s: x-ratelimit-reset-tokens is not a Go duration: %v", step, err)
	}
}
