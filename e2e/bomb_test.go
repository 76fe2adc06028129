package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/extproc/decode/decodetest"
)

// TestCompressionBombMemory: request bodies of 8 KB of zstd that inflate
// to 250 MiB each, six at once, through the real binary. Inflated as they
// came they took tokengate past 3.5 GiB; within the bound that every
// body read at once shares (max_receive_bytes, 64 MiB) its peak resident
// memory stays a fraction of that.
func TestCompressionBombMemory(t *testing.T) {
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: `store: {backend: memory}
policies:
- name: lab
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000
`, FakeClock: labClock, Filter: patientFront})
	pid := s.Tokengate.Pid()

	bomb := decodetest.Bomb(250)

	const concurrent = 6
	var wg sync.WaitGroup
	for i := range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := s.Request(http.MethodPost, "/v1/chat/completions", bomb)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Content-Encoding", "zstd")
			req.Header.Set("api-key", fmt.Sprintf("bomb-%d", i))
			resp, err := rawClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	peak := vmHWM(t, pid) // the high-water mark: no need to catch the moment
	t.Logf("%d requests of %d bytes each: tokengate's peak RSS %d MiB", concurrent, len(bomb), peak>>20)
	if peak > 256<<20 {
		t.Errorf("%d requests of %d bytes (%d KiB on the wire in all) took tokengate's RSS to %d MiB",
			concurrent, len(bomb), concurrent*len(bomb)>>10, peak>>20)
	}
}

// vmHWM is the process's peak resident set, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			fields := strings.Fields(rest)
			n, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
