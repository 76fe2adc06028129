package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/e2e/harness"
)

// TestRawKeysAppearNowhere sends traffic with distinctive keys through the
// real binaries, with the bbolt store and then the Redis store, and looks
// for the raw values everywhere tokengate writes: its logs at debug level,
// /metrics, the bbolt file, Redis's keys and values, the admin API's
// answers and its errors.
func TestRawKeysAppearNowhere(t *testing.T) {
	needBinaries(t)
	secrets := []string{"sk-secret-bbolt-4242", "sk-secret-bearer-1717"}
	cfg := `store: {backend: bbolt, bbolt: {path: "{{DB}}", flush_interval: 50ms}}
policies:
- name: lab
  counter_key: {header: [api-key, authorization]}
  tokens_per_minute: 200
  token_quota: 100000
  token_quota_period: monthly
`
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: labClock})
	traffic(t, s, secrets)
	admin := s.Tokengate.Field("admin")
	var seen bytes.Buffer
	seen.WriteString(scrapeAll(t, admin))
	usage := adminCLI(t, admin, "usage", "--key", secrets[0])
	if !strings.Contains(usage, "keySha256") {
		t.Fatalf("tokengate admin usage printed %q: the scan would prove nothing", usage)
	}
	seen.WriteString(usage)
	seen.WriteString(adminCLI(t, admin, "list"))
	seen.WriteString(adminCLI(t, admin, "usage", "--key", secrets[1], "--policy", "nope")) // an error path
	if code := s.StopTokengate(); code != 0 {
		t.Fatalf("tokengate exited %d", code)
	}
	file, err := os.ReadFile(s.DBPath)
	if err != nil || len(file) == 0 {
		t.Fatalf("bbolt file: %d bytes, %v", len(file), err)
	}
	seen.Write(file)
	seen.WriteString(s.Tokengate.Stderr())
	if !strings.Contains(s.Tokengate.Stderr(), `decision`) {
		t.Fatal("no decision lines in the debug log: the scan would prove nothing")
	}
	for _, sec := range secrets {
		if bytes.Contains(seen.Bytes(), []byte(sec)) {
			t.Errorf("raw key %q found in what tokengate wrote (bbolt store)", sec)
		}
	}

	// The Redis store: keys and values.
	rs := harness.StartRedis(t)
	rcfg := fmt.Sprintf(`store: {backend: redis, redis: {addrs: [%s], clock: client, dial_timeout: 2s, read_timeout: 2s, write_timeout: 2s}}
policies:
- {name: lab, counter_key: {header: [api-key, authorization]}, tokens_per_minute: 200, token_quota: 100000, token_quota_period: monthly}
`, rs.Addr())
	s2 := harness.StartStack(t, harness.StackOptions{ConfigYAML: rcfg, FakeClock: labClock})
	traffic(t, s2, secrets)
	waitSettled(t, s2.Tokengate.Field("admin")) // the charges behind the answers have landed
	c := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("redis keys: %v %v", keys, err)
	}
	var dump bytes.Buffer
	for _, k := range keys {
		dump.WriteString(k + "\n")
		v, _ := c.Dump(ctx, k).Result()
		dump.WriteString(v)
	}
	dump.WriteString(s2.Tokengate.Stderr())
	for _, sec := range secrets {
		if bytes.Contains(dump.Bytes(), []byte(sec)) {
			t.Errorf("raw key %q found in Redis or the log (redis store)", sec)
		}
	}
}

// traffic charges both keys (one by api-key, one by Bearer token), spends
// the first key's window and sends one request without a key.
func traffic(t *testing.T, s *harness.Stack, secrets []string) {
	t.Helper()
	for i := 0; i < 4; i++ {
		resp, _ := s.Chat(secrets[0], labMessages...)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("api-key request: %d", resp.StatusCode)
		}
	}
	req := s.Request("POST", "/v1/chat/completions", []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("authorization", "Bearer "+secrets[1])
	if resp, body := s.Do(req); resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer request: %d %s", resp.StatusCode, body)
	}
	if resp, _ := s.Chat("", labMessages...); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("keyless request: %d", resp.StatusCode)
	}
}

func scrapeAll(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// adminCLI runs `tokengate admin …` as an operator would; its output and
// errors are part of what is scanned.
func adminCLI(t *testing.T, admin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bins["tokengate"], append(append([]string{"admin"}, args[:1]...), append([]string{"--addr", admin}, args[1:]...)...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		t.Fatal("tokengate admin hung")
	}
	return out.String()
}
