package load

import (
	"fmt"
	"strconv"
	"time"
)

// Record is one admitted request (status 200).
type Record struct {
	Client int
	Tick   int
	// At is the fake time the request was sent and answered in: the clock
	// does not move while a request is in flight.
	At time.Time
	// Received is the wall time its answer was read, for tests that
	// compare with real-time events such as a store's flush.
	Received time.Time
	// Tokens are the answer's usage.
	Prompt, Completion, Total int64
}

// Failure is an answer that was neither admitted nor refused by the
// limiter (another status, no usage, a transport error).
type Failure struct {
	Client   int
	Tick     int
	Received time.Time
	Status   int // 0 for a transport error
	Err      string
}

// maxFailures caps Result.Failures: a dead gateway fails every request,
// and the first few say why.
const maxFailures = 100

// Result is what a run saw.
type Result struct {
	// Requests counts requests sent; Admitted those answered 200, with
	// AdmittedTokens their usage.total_tokens summed.
	Requests       int
	Admitted       int
	AdmittedTokens int64
	// RateLimited and QuotaExceeded count 429 and 403 answers.
	RateLimited   int
	QuotaExceeded int
	// Failed counts every other outcome; Failures keeps the first ones.
	Failed   int
	Failures []Failure
	// Cancelled counts requests cut by the caller's context; they may
	// have been charged unseen.
	Cancelled int

	// Ticks is the number of rounds run, of Rounds planned; Now is the
	// fake time the clock was last moved to.
	Ticks, Rounds int
	Now           time.Time
	// Stopped says why the run ended before its last round; "" when it
	// did not.
	Stopped string
	Wall    time.Duration

	// Records are the admitted requests, in no particular order.
	Records []Record
	// Worst is the 60-second window that charged the most tokens.
	Worst Window
}

// Refused counts the limiter's refusals.
func (r *Result) Refused() int { return r.RateLimited + r.QuotaExceeded }

// Report is the accuracy figure against limit, one line.
func (r *Result) Report(limit int64) string { return r.report(r.Worst, limit, "tokens") }

// report is worst against limit, both in unit, and the run's outcomes.
func (r *Result) report(worst Window, limit int64, unit string) string {
	pct := 0.0
	if limit > 0 {
		pct = 100 * float64(worst.Tokens) / float64(limit)
	}
	return fmt.Sprintf("worst 60s window %s / %s %s (%.1f %%), admitted %s, refused %s",
		group(worst.Tokens), group(limit), unit, pct, group(int64(r.Admitted)), group(int64(r.Refused())))
}

// String tells everything a run saw, one line.
func (r *Result) String() string {
	s := fmt.Sprintf("%s requests in %v, %d/%d ticks: admitted %s (%s tokens), 429 %s, 403 %s, failed %d, cancelled %d; worst 60s window %s tokens from %s",
		group(int64(r.Requests)), r.Wall.Round(time.Millisecond), r.Ticks, r.Rounds,
		group(int64(r.Admitted)), group(r.AdmittedTokens), group(int64(r.RateLimited)), group(int64(r.QuotaExceeded)),
		r.Failed, r.Cancelled, group(r.Worst.Tokens), r.Worst.From.UTC().Format(time.TimeOnly))
	if r.Stopped != "" {
		s += "; stopped early: " + r.Stopped
	}
	return s
}

// group writes n with thousands separators, as the reports read.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if n < 0 {
		sign, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return sign + s
}
