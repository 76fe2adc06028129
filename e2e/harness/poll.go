package harness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// pollEvery is how often Eventually and PollAll look again: state changes
// here (a probe, a gauge, a settlement) take tens to hundreds of
// milliseconds.
const pollEvery = 20 * time.Millisecond

// Eventually calls cond every pollEvery until it returns nil, and fails
// the test with cond's last error once timeout has passed: the one way a
// test waits for a condition instead of sleeping. cond may fail the test
// itself for what must never happen on the way (a count past its goal).
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := proc.Poll(context.Background(), timeout, pollEvery, cond); err != nil {
		t.Fatal(err)
	}
}

// PollAll calls check(i) for i in [0, n) every pollEvery until all hold at
// once or timeout passes. On timeout the error names the indices that did
// not hold, and the returned notes are check's last words for each.
func PollAll(n int, timeout time.Duration, check func(i int) (ok bool, note string)) ([]string, error) {
	notes := make([]string, n)
	err := proc.Poll(context.Background(), timeout, pollEvery, func() error {
		var failing []int
		for i := range n {
			ok, note := check(i)
			notes[i] = note
			if !ok {
				failing = append(failing, i)
			}
		}
		if len(failing) > 0 {
			return fmt.Errorf("not reached by %v", failing)
		}
		return nil
	})
	return notes, err
}
