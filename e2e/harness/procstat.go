package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ReadVmRSS returns the resident set size of process pid, in bytes, as
// the kernel reports it in /proc/PID/status (VmRSS).
func ReadVmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("harness: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		// "VmRSS:	   123456 kB"
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("harness: /proc/%d/status: unexpected VmRSS line %q", pid, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("harness: /proc/%d/status: %w", pid, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("harness: /proc/%d/status: %w", pid, err)
	}
	return 0, fmt.Errorf("harness: /proc/%d/status has no VmRSS line (a zombie?)", pid)
}
