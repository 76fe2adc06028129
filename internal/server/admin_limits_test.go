package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tokengate/tokengate/extproc"
	"github.com/tokengate/tokengate/internal/proc"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// limitsClock is the fake clock the tests of several limits start at:
// noon, so a daily limit resets in 12 hours.
const limitsClock = "2026-03-10T12:00:00Z"

// multiLimits is a policy with only explicit limits (no tokens_per_minute,
// no token_quota): requests, input and output tokens per minute, and cost
// per day. A token of input costs 0.001, one of output 0.002.
func multiLimits(store string) string {
	return store + `
prices: {default: {input: 1000, output: 2000}}
policies:
- name: multi
  counter_key: {header: [api-key]}
  limits:
  - {unit: requests, max: 10, window: 1m}
  - {unit: tokens, kind: input, max: 1000, window: 1m}
  - {unit: tokens, kind: output, max: 500, window: 1m}
  - {unit: cost, max: 5, period: daily}
`
}

// chargeUsage plays one counted chat request whose upstream reports
// prompt and completion tokens.
func chargeUsage(t *testing.T, addr, key string, prompt, completion int) {
	t.Helper()
	chargeUsageAt(t, addr, "/v1/chat/completions", key, prompt, completion)
}

// chargeUsageAt is chargeUsage on path: chat completions, or completions.
func chargeUsageAt(t *testing.T, addr, path, key string, prompt, completion int) {
	t.Helper()
	body := `{"model":"gpt-4o","messages":[]}`
	if path == "/v1/completions" {
		body = `{"model":"gpt-4o","prompt":"hi"}`
	}
	stream := openStream(t, addr)
	hv := func(kv ...string) *corev3.HeaderMap {
		m := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return m
	}
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: hv(":method", "POST", ":path", path, "api-key", key)}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
			Body: []byte(body), EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hv(":status", "200")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: fmt.Appendf(nil, `{"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
				prompt, completion, prompt+completion), EndOfStream: true}}},
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			t.Fatalf("request of key %q refused: %v", key, ir)
		}
	}
	stream.CloseSend()
}

// limitRow is a LimitUsage as the tests compare it.
type limitRow struct {
	name, unit, kind, span string
	max, used, remaining   int64
	reset                  time.Duration
}

func rowsOf(u *adminv1.Usage) []limitRow {
	var out []limitRow
	for _, l := range u.GetLimits() {
		span := l.GetPeriod()
		if w := l.GetWindow(); w != nil {
			span = w.AsDuration().String()
		}
		out = append(out, limitRow{l.GetName(), l.GetUnit(), l.GetKind(), span, l.GetMax(), l.GetUsed(), l.GetRemaining(), l.GetResetIn().AsDuration()})
	}
	return out
}

func checkRows(t *testing.T, what string, u *adminv1.Usage, want []limitRow) {
	t.Helper()
	got := rowsOf(u)
	if len(got) != len(want) {
		t.Fatalf("%s: %d limits, want %d:\n%v", what, len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: limit %d = %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// idleRows are multiLimits' limits with nothing used.
func idleRows() []limitRow {
	return []limitRow{
		{"requests_per_1m", "requests", "", "1m0s", 10, 0, 10, 0},
		{"input_tokens_per_1m", "tokens", "input", "1m0s", 1000, 0, 1000, 0},
		{"output_tokens_per_1m", "tokens", "output", "1m0s", 500, 0, 500, 0},
		{"cost_daily", "cost", "total", "daily", 5_000_000, 0, 5_000_000, 12 * time.Hour},
	}
}

// TestAdminEveryLimit: GetUsage shows each limit of a policy that has
// only explicit ones, ListUsage lists and ranks its keys, the CLI prints
// a line per limit, and a reset forgets them all; on each store.
func TestAdminEveryLimit(t *testing.T) {
	t.Run("memory", func(t *testing.T) { adminEveryLimit(t, "store: {backend: memory}") })
	t.Run("bbolt", func(t *testing.T) {
		adminEveryLimit(t, "store: {backend: bbolt, bbolt: {path: "+filepath.Join(t.TempDir(), "db")+"}}")
	})
	t.Run("redis", func(t *testing.T) {
		// The injected clock decides (clock: client); fail_closed, so that
		// every answer is Redis's own.
		adminEveryLimit(t, "store: {backend: redis, redis: {addrs: ["+startRedis(t)+
			"], clock: client, on_error: fail_closed, read_timeout: 2s, write_timeout: 2s, dial_timeout: 2s}}")
	})
}

// startRedis runs a real redis-server on a free loopback port until the
// test ends, and returns its address; without one installed the test is
// skipped, as the limiter's Redis tests are.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found")
		}
		t.Skip("redis-server not installed")
	}
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := proc.Start(context.Background(), bin,
		[]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()},
		proc.Options{
			ReadyLine:    func(line string) bool { return strings.Contains(line, "Ready to accept connections") },
			ReadyTimeout: 10 * time.Second,
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func adminEveryLimit(t *testing.T, store string) {
	r := startRun(t, multiLimits(store), "--fake-clock", limitsClock)
	const a, b = "key-a", "key-b"
	chargeUsage(t, r.grpc, a, 100, 50)
	chargeUsage(t, r.grpc, a, 200, 25)
	chargeUsage(t, r.grpc, b, 10, 400)
	if strings.Contains(store, "redis") {
		// Redis settles behind the responses: read once all three landed.
		waitFor(t, "the three settles to reach redis", func() bool {
			return scrape(t, r.admin, "tokengate_settle_batch_size_sum") == "3"
		})
	}
	c := adminClient(t, r.admin)
	ctx := context.Background()
	rawA := &adminv1.Key{Key: &adminv1.Key_Raw{Raw: a}}

	got, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawA})
	if err != nil {
		t.Fatal(err)
	}
	u := got.GetUsage()[0]
	// 300 input tokens at 0.001 and 75 output at 0.002: 0.45.
	checkRows(t, "key a", u, []limitRow{
		{"requests_per_1m", "requests", "", "1m0s", 10, 2, 8, time.Minute},
		{"input_tokens_per_1m", "tokens", "input", "1m0s", 1000, 300, 700, time.Minute},
		{"output_tokens_per_1m", "tokens", "output", "1m0s", 500, 75, 425, time.Minute},
		{"cost_daily", "cost", "total", "daily", 5_000_000, 450_000, 4_550_000, 12 * time.Hour},
	})
	if u.GetLimitTokens() != 0 || u.GetUsedTokens() != 0 || u.GetQuotaLimitTokens() != 0 {
		t.Errorf("the shorthand fields of a policy without them: %v", u)
	}

	// Neither key has a tokens_per_minute window: they rank by their
	// fullest limit, b's output (400/500) before a's input (300/1000).
	list, err := c.ListUsage(ctx, &adminv1.ListUsageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, u := range list.GetUsage() {
		order = append(order, u.GetKeySha256())
	}
	hashA, hashB := extproc.HashKey(nil, a), extproc.HashKey(nil, b)
	if strings.Join(order, ",") != hashB+","+hashA {
		t.Errorf("ListUsage = %v, want b then a", order)
	}
	if len(list.GetUsage()) == 2 && len(list.GetUsage()[1].GetLimits()) != 4 {
		t.Errorf("ListUsage rows want every limit: %v", list.GetUsage()[1])
	}
	top, err := c.ListUsage(ctx, &adminv1.ListUsageRequest{Policy: "multi", Limit: 1})
	if err != nil || len(top.GetUsage()) != 1 || top.GetUsage()[0].GetKeySha256() != hashB {
		t.Errorf("ListUsage limit 1 = %v %v, want b", top, err)
	}

	// The CLI: the JSON answer carries the limits; text, a line per limit.
	var out, errOut bytes.Buffer
	if err := Run(ctx, []string{"admin", "usage", "--addr", r.admin, "--key", a}, &out, &errOut); err != nil {
		t.Fatalf("admin usage: %v (%s)", err, errOut.String())
	}
	var printed adminv1.GetUsageResponse
	if err := protojson.Unmarshal(out.Bytes(), &printed); err != nil || len(printed.GetUsage()) != 1 {
		t.Fatalf("admin usage printed (%v):\n%s", err, out.String())
	}
	checkRows(t, "printed", printed.GetUsage()[0], rowsOf(u))
	out.Reset()
	if err := Run(ctx, []string{"admin", "usage", "--addr", r.admin, "--key", a, "--format", "text"}, &out, &errOut); err != nil {
		t.Fatalf("admin usage --format text: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	want := [][]string{
		{"policy multi", "key " + hashA},
		{"requests_per_1m", "requests", "per 1m", "used 2 / 10", "remaining 8", "reset in 1m0s"},
		{"input_tokens_per_1m", "input tokens", "per 1m", "used 300 / 1000", "remaining 700", "reset in 1m0s"},
		{"output_tokens_per_1m", "output tokens", "per 1m", "used 75 / 500", "remaining 425", "reset in 1m0s"},
		{"cost_daily", "cost", "daily", "used 0.450000 / 5.000000", "remaining 4.550000", "reset in 12h0m0s"},
	}
	if len(lines) != len(want) {
		t.Fatalf("admin usage --format text: %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		for _, part := range w {
			if !strings.Contains(lines[i], part) {
				t.Errorf("admin usage --format text, line %d lacks %q:\n%s", i, part, out.String())
			}
		}
	}
	if strings.Contains(out.String(), a) {
		t.Errorf("admin usage printed the raw key:\n%s", out.String())
	}
	out.Reset()
	if err := Run(ctx, []string{"admin", "list", "--addr", r.admin, "--format", "text", "--limit", "1"}, &out, &errOut); err != nil ||
		!strings.Contains(out.String(), "key "+hashB) || strings.Contains(out.String(), hashA) ||
		!strings.Contains(out.String(), "used 0.810000 / 5.000000") {
		t.Errorf("admin list --format text --limit 1 (%v):\n%s", err, out.String())
	}

	// A reset forgets every limit of the key, and only its.
	out.Reset()
	if err := Run(ctx, []string{"admin", "reset", "--addr", r.admin, "--key", a, "--format", "text"}, &out, &errOut); err != nil ||
		out.String() != "counters reset: 1\n" {
		t.Fatalf("admin reset --format text: %v %q", err, out.String())
	}
	after, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawA})
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, "key a after reset", after.GetUsage()[0], idleRows())
	if list, err := c.ListUsage(ctx, &adminv1.ListUsageRequest{}); err != nil || len(list.GetUsage()) != 1 || list.GetUsage()[0].GetKeySha256() != hashB {
		t.Errorf("ListUsage after a's reset = %v %v, want b alone", list, err)
	}
}

// TestAdminResetEveryLimitBbolt: with the bbolt store, a reset forgets
// every limit of the key, the daily cost (kept on disk) included, and it
// stays forgotten across a restart.
func TestAdminResetEveryLimitBbolt(t *testing.T) {
	cfg := multiLimits("store: {backend: bbolt, bbolt: {path: " + filepath.Join(t.TempDir(), "db") + "}}")
	const a, b = "key-a", "key-b"
	rawA := &adminv1.Key{Key: &adminv1.Key_Raw{Raw: a}}
	rawB := &adminv1.Key{Key: &adminv1.Key_Raw{Raw: b}}
	ctx := context.Background()
	t.Run("reset", func(t *testing.T) {
		r := startRun(t, cfg, "--fake-clock", limitsClock)
		chargeUsage(t, r.grpc, a, 100, 50)
		chargeUsage(t, r.grpc, b, 10, 400)
		c := adminClient(t, r.admin)
		before, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawA})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range before.GetUsage()[0].GetLimits() {
			if l.GetUsed() == 0 {
				t.Errorf("before reset, %s used nothing", l.GetName())
			}
		}
		if res, err := c.ResetUsage(ctx, &adminv1.ResetUsageRequest{Key: rawA}); err != nil || res.GetCountersReset() != 1 {
			t.Fatalf("ResetUsage: %v %v", res, err)
		}
		after, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawA})
		if err != nil {
			t.Fatal(err)
		}
		checkRows(t, "after reset", after.GetUsage()[0], idleRows())
	})
	t.Run("restarted", func(t *testing.T) {
		// A minute on, the windows are empty anyway: the daily cost is
		// what the disk kept.
		r := startRun(t, cfg, "--fake-clock", "2026-03-10T12:01:00Z")
		c := adminClient(t, r.admin)
		got, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawA})
		if err != nil {
			t.Fatal(err)
		}
		rows := idleRows()
		rows[3].reset = 11*time.Hour + 59*time.Minute
		checkRows(t, "a after a restart", got.GetUsage()[0], rows)
		got, err = c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: rawB})
		if err != nil {
			t.Fatal(err)
		}
		// b was not reset: 10 input tokens and 400 output, 0.81.
		if l := got.GetUsage()[0].GetLimits()[3]; l.GetUsed() != 810_000 {
			t.Errorf("b's cost after a restart = %v, want 810000 (kept)", l)
		}
	})
}

// TestAdminShorthandLimits: the shorthands are limits like the others,
// beside the old fields; a quota-only policy's unlimited window is not
// shown.
func TestAdminShorthandLimits(t *testing.T) {
	r := startRun(t, `store: {backend: memory}
policies:
- {name: both, match: {path_prefix: /v1/chat}, tokens_per_minute: 1000, token_quota: 5000, token_quota_period: monthly, counter_key: {header: [api-key]}}
- {name: quota, match: {path_prefix: /v1/completions}, token_quota: 800, token_quota_period: daily, counter_key: {header: [api-key]}}
`, "--fake-clock", limitsClock)
	chargeUsage(t, r.grpc, "k", 100, 20)
	chargeUsageAt(t, r.grpc, "/v1/completions", "k", 100, 20)
	c := adminClient(t, r.admin)
	got, err := c.GetUsage(context.Background(), &adminv1.GetUsageRequest{Key: &adminv1.Key{Key: &adminv1.Key_Raw{Raw: "k"}}})
	if err != nil || len(got.GetUsage()) != 2 {
		t.Fatalf("GetUsage: %v %v", got, err)
	}
	both, quota := got.GetUsage()[0], got.GetUsage()[1]
	checkRows(t, "both", both, []limitRow{
		{"token_quota", "tokens", "total", "monthly", 5000, 120, 4880, 21*24*time.Hour + 12*time.Hour},
		{"tokens_per_minute", "tokens", "total", "1m0s", 1000, 120, 880, time.Minute},
	})
	if both.GetUsedTokens() != 120 || both.GetLimitTokens() != 1000 || both.GetQuotaUsedTokens() != 120 || both.GetQuotaLimitTokens() != 5000 {
		t.Errorf("both's old fields: %v", both)
	}
	checkRows(t, "quota", quota, []limitRow{
		{"token_quota", "tokens", "total", "daily", 800, 120, 680, 12 * time.Hour},
	})
	if quota.GetLimitTokens() != 0 || quota.GetQuotaUsedTokens() != 120 {
		t.Errorf("quota's old fields: %v", quota)
	}
}
