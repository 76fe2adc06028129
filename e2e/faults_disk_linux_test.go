package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tokengate/tokengate/e2e/harness"
)

// The bbolt file on a full disk: a tmpfs of diskSize, which the test fills
// with a file of its own once tokengate runs on it. Mounting needs root
// (CI runs as root); where the mount is refused, the disk is simulated: the
// process's file-size limit (RLIMIT_FSIZE, set with prlimit) is lowered
// to the file's size, so the file cannot grow and writes past its end fail
// with EFBIG as they would with ENOSPC. The test says which it used.
const (
	diskSize          = 1 << 20
	diskFlushInterval = 100 * time.Millisecond
	diskClock         = "2026-05-04T12:00:00Z"
	// Requests, each with its own key, so the file must grow to hold
	// them: before the disk fills, while it is full, after space is freed.
	diskBefore = 20
	diskFull   = 300
	diskAfter  = 50
)

func diskConfig(path string) string {
	return fmt.Sprintf(`store: {backend: bbolt, bbolt: {path: %q, flush_interval: %v}}
policies:
- name: disk
  counter_key: {header: [api-key]}
  tokens_per_minute: 100000000
  token_quota: 1000000000
  token_quota_period: monthly
`, path, diskFlushInterval)
}

// fullDisk is a disk tokengate's file lives on, which the test fills and
// frees.
type fullDisk struct {
	t   *testing.T
	dir string
	// simulated: no tmpfs, a file-size limit on pid instead.
	simulated bool
	pid       int
	filler    string
}

// newFullDisk mounts a diskSize tmpfs in a temporary directory, unmounted
// when the test ends; without the right to mount, it returns a disk to be
// simulated on a temporary directory.
func newFullDisk(t *testing.T) *fullDisk {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", diskSize))
	if err != nil {
		t.Logf("mount -t tmpfs refused (%v): the full disk is SIMULATED with RLIMIT_FSIZE on tokengate (writes past the file's end fail with EFBIG)", err)
		return &fullDisk{t: t, dir: dir, simulated: true}
	}
	// Registered after t.TempDir, so it runs before the directory is
	// removed, and after the stack's processes (started later) are
	// killed.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount the test's tmpfs %s: %v", dir, err)
		}
	})
	t.Logf("bbolt file on a %d KiB tmpfs at %s", diskSize>>10, dir)
	return &fullDisk{t: t, dir: dir, filler: filepath.Join(dir, "filler")}
}

// fill takes the disk's free space away from pid's writes.
func (d *fullDisk) fill(pid int, db string) string {
	d.t.Helper()
	if d.simulated {
		st, err := os.Stat(db)
		if err != nil {
			d.t.Fatal(err)
		}
		d.pid = pid
		setFileSizeLimit(d.t, pid, uint64(st.Size()))
		return fmt.Sprintf("file-size limit of tokengate set to the file's %d bytes", st.Size())
	}
	f, err := os.Create(d.filler)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	// Big writes first, then page-sized ones for the last scraps.
	for _, size := range []int{64 << 10, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					d.t.Fatalf("filling the disk: %v, want ENOSPC", err)
				}
				break
			}
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &fs); err != nil {
		d.t.Fatal(err)
	}
	st, _ := f.Stat()
	return fmt.Sprintf("filler of %d KiB, %d bytes free", st.Size()>>10, fs.Bavail*uint64(fs.Bsize))
}

// free gives the space back.
func (d *fullDisk) free() {
	d.t.Helper()
	if d.simulated {
		lim := syscall.Rlimit{Cur: ^uint64(0), Max: ^uint64(0)}
		// A killed process took its limit with it; the next one starts
		// without.
		if err := prlimitFSIZE(d.pid, &lim); err != nil && !errors.Is(err, syscall.ESRCH) {
			d.t.Fatalf("prlimit(%d, RLIMIT_FSIZE, unlimited): %v", d.pid, err)
		}
		return
	}
	if err := os.Remove(d.filler); err != nil {
		d.t.Fatal(err)
	}
}

// setFileSizeLimit sets pid's soft RLIMIT_FSIZE (the hard one stays
// unlimited, so the soft one can be raised back without privilege).
// Go ignores SIGXFSZ, so a write past it fails with EFBIG instead of
// killing the process.
func setFileSizeLimit(t *testing.T, pid int, limit uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: limit, Max: ^uint64(0)}
	if err := prlimitFSIZE(pid, &lim); err != nil {
		t.Fatalf("prlimit(%d, RLIMIT_FSIZE, %d): %v", pid, limit, err)
	}
}

// TestFaultBboltFullDisk runs tokengate's bbolt file out of space under
// traffic. tokengate must go on answering from memory, say that it cannot
// persist (store_errors_total{op="settle"} and a log line for the quota,
// whose charge is written at settle; a log line or a metric for the
// window flushes), and not crash. Then either space comes back and a
// graceful restart must restore every key's window and quota, or the
// process is killed while the disk is still full and what the file
// restores must be exact for each key it keeps (restored or lost, never
// wrong).
func TestFaultBboltFullDisk(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	t.Run("space freed, graceful restart", func(t *testing.T) { runFullDisk(t, false) })
	t.Run("killed while full", func(t *testing.T) { runFullDisk(t, true) })
}

func runFullDisk(t *testing.T, crash bool) {
	disk := newFullDisk(t)
	db := filepath.Join(disk.dir, "tokengate.db")
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: diskConfig(db), FakeClock: diskClock})
	admin := s.Tokengate.Field("admin")
	body := faultChatBody(t, "Write this down somewhere.", 20, false)
	charged := map[string]int64{}
	answeredAt := map[string]time.Time{}
	send := func(phase string, n int) {
		t.Helper()
		for i := range n {
			key := fmt.Sprintf("disk-%s-%d", phase, i)
			r := faultSend(context.Background(), directClient, s.URL, key, body, "x-mock-completion-tokens", "20")
			if r.status != http.StatusOK || r.total <= 0 {
				t.Fatalf("%s: request %d: %d %s: want 200, tokengate answers from memory whatever the disk", phase, i, r.status, r.err)
			}
			charged[key], answeredAt[key] = r.total, r.end
		}
	}
	settleErrors := func() float64 { return faultMetric(t, admin, "tokengate_store_errors_total", "op", "settle") }

	send("before", diskBefore)
	how := disk.fill(s.Tokengate.Pid(), db)
	logMark := len(s.Tokengate.Stderr())
	send("full", diskFull)
	whileFull := settleErrors()
	fullLog := s.Tokengate.Stderr()[logMark:]
	if s.Tokengate.Exited() {
		t.Fatalf("tokengate exited on a full disk")
	}
	if whileFull == 0 {
		t.Fatalf("%d settles with quotas on a full disk (%s) and no store error: the disk never refused a write, the test proves nothing", diskFull, how)
	}
	warned := strings.Count(fullLog, "limiter store failed to settle")
	if warned == 0 {
		t.Errorf("%v settle errors counted but no \"limiter store failed to settle\" log line", whileFull)
	}
	flushLogged := countFlushFailures(fullLog)
	flushCounted := faultMetric(t, admin, "tokengate_store_errors_total", "op", "flush")
	t.Logf("full disk (%s): %d requests, all answered 200; %v settle errors counted, %d warn lines; window flush failures: %d log lines, %v counted",
		how, diskFull, whileFull, warned, flushLogged, flushCounted)

	var killAt time.Time
	if crash {
		killAt = s.KillTokengate()
		disk.free()
	} else {
		disk.free()
		send("after", diskAfter)
		afterFree := settleErrors() - whileFull
		if afterFree != 0 {
			t.Errorf("%v settle errors after the space was freed, want 0", afterFree)
		}
		stopLog := s.Tokengate.Stderr()
		if code := s.StopTokengate(); code != 0 {
			t.Errorf("graceful stop after the space was freed exited %d, want 0 (its last flush failed?): %s", code, faultTail(stopLog, 1024))
		}
		t.Logf("space freed: %d more requests, %v settle errors; graceful stop", diskAfter, afterFree)
	}
	s.StartTokengate() // the file opens again: a failed write left it usable
	admin = s.Tokengate.Field("admin")

	var windowLost, quotaLost, wrong, flushedLost []string
	for key, want := range charged {
		u := faultUsage(t, admin, "disk", key)
		w, q := u.GetUsedTokens(), u.GetQuotaUsedTokens()
		if w != want {
			windowLost = append(windowLost, fmt.Sprintf("%s %d/%d", key, w, want))
			// Flushed at least once since it was answered, had the
			// flushes worked (one interval, plus one for the flush's own
			// time, as crash_test.go allows).
			if crash && answeredAt[key].Before(killAt.Add(-2*diskFlushInterval)) {
				flushedLost = append(flushedLost, key)
			}
		}
		if q != want {
			quotaLost = append(quotaLost, fmt.Sprintf("%s %d/%d", key, q, want))
		}
		if (w != 0 && w != want) || (q != 0 && q != want) {
			wrong = append(wrong, fmt.Sprintf("%s window %d quota %d, charged %d", key, w, q, want))
		}
	}
	t.Logf("after the restart: of %d keys, %d lost window charges (%d of them answered over 2 flush intervals before the kill), %d lost quota charges; first: %v",
		len(charged), len(windowLost), len(flushedLost), len(quotaLost), firstFew(append(windowLost, quotaLost...), 3))
	if len(wrong) > 0 {
		t.Errorf("%d keys restored with a count that is neither their charge nor 0: %v", len(wrong), firstFew(wrong, 5))
	}
	if crash {
		// A crash on a full disk loses what could not be written: that is
		// the disk's doing. Not saying so is tokengate's.
		if len(flushedLost) > 0 && flushLogged == 0 && flushCounted == 0 {
			t.Errorf("regression (limiter/boltstore/boltstore.go Store.run): the window flushes failed on the full disk — %d keys answered over 2 flush intervals before the kill were not in the file — and nothing said so: no log line, no store_errors_total{op=\"flush\"}. "+
				"Bolt.run calls Flush every flush_interval and drops its error (`_ = b.Flush()`), so a full disk silently turns \"a crash loses at most one flush interval\" into \"a crash loses everything since the disk filled\". "+
				"Want: a failed flush logged (at least on the change from working to failing) and counted.",
				len(flushedLost))
		}
		return
	}
	if len(windowLost) > 0 {
		t.Errorf("%d keys lost window charges across a graceful restart after the disk was freed: %v", len(windowLost), firstFew(windowLost, 5))
	}
	if len(quotaLost) > 0 {
		t.Errorf("regression (limiter/boltstore/boltstore.go Store.Settle): %d keys settled while the disk was full lost their quota charge across a graceful restart once space was back (%v). "+
			"Bolt.Settle writes a key's quota only in that settle's own transaction; when it fails, nothing marks the quota for a later write (Flush, and the last flush at Close, write windows only), so the charge lives in memory alone and the restart refunds it. "+
			"Want: a quota whose write failed is written again by a later flush, as a window is (Memory.undrain).",
			len(quotaLost), firstFew(quotaLost, 5))
	}
}

// countFlushFailures counts log lines that report a failed window flush.
func countFlushFailures(log string) int {
	n := 0
	for line := range strings.Lines(log) {
		if strings.Contains(line, "flush") && (strings.Contains(line, "WARN") || strings.Contains(line, "ERROR")) {
			n++
		}
	}
	return n
}

func firstFew(s []string, n int) []string { return s[:min(n, len(s))] }

// prlimitFSIZE is prlimit(2) on RLIMIT_FSIZE: the syscall package has no
// wrapper for another process's limits.
func prlimitFSIZE(pid int, lim *syscall.Rlimit) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(syscall.RLIMIT_FSIZE),
		uintptr(unsafe.Pointer(lim)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
