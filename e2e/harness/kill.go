package harness

import (
	"syscall"
	"time"
)

// KillTokengate sends SIGKILL to tokengate, as a crash or an OOM kill
// would end it: no drain, no last flush. It returns once the process is
// reaped, so its file lock is gone; the time returned is just before the
// signal was sent, the last instant tokengate certainly lived.
func (s *Stack) KillTokengate() time.Time {
	s.t.Helper()
	at := time.Now()
	if err := s.Tokengate.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	code, err := s.Tokengate.Wait(StopTimeout)
	if err != nil {
		s.t.Fatal(err)
	}
	if code != -1 {
		s.t.Fatalf("tokengate exited %d after SIGKILL, want -1 (killed by the signal)", code)
	}
	return at
}

// StartTokengateAt starts tokengate again with its fake clock at fakeClock
// (RFC 3339) instead of the stack's first one: a restarted process reads
// the time of its restart, not of the stack's start, and what it restores
// depends on it. Later restarts use it too.
func (s *Stack) StartTokengateAt(fakeClock string) {
	s.t.Helper()
	s.opts.FakeClock = fakeClock
	s.StartTokengate()
}
