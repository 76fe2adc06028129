package storetest

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/limiter"
)

// testScenario plays a whole key's life, window and hourly quota together,
// across the hour: holds overlapping, settles charging more or less than
// held, refusals by the window while the quota has room, the window
// sliding, the quota starting afresh at the hour. It was Redis's check
// against the memory store; its answers are now written down.
func testScenario(t *testing.T, su *suite) {
	lim := limiter.Limits{TokensPerMinute: 1000, Quota: 2500, Period: limiter.Hourly}
	// d is a decision with window used, remaining, retry-after and reset,
	// and quota used, remaining and reset; allowed unless retry > 0.
	d := func(used, remaining int64, retry, reset time.Duration, qused, qremaining int64, qreset time.Duration) limiter.Decision {
		out := limiter.Decision{Allowed: retry == 0, Used: used, Remaining: remaining, RetryAfter: retry, Reset: reset,
			Quota: limiter.QuotaState{Limit: 2500, Used: qused, Remaining: qremaining, Reset: qreset}}
		if !out.Allowed {
			out.Reason = limiter.RateLimited
		}
		return out
	}
	const min = time.Minute
	su.play(t, utc(2026, 5, 5, 10, 58, 0).Add(250*ms), lim, []step{
		reserve(0, 300, d(300, 700, 0, 0, 300, 2200, 1*min+59*s+750*ms)), // 0
		reserve(0, 300, d(600, 400, 0, 0, 600, 1900, 1*min+59*s+750*ms)), // 1
		settle(1*s, 0, 250),
		// Held 300 + charged 250 + 500 > 1000.
		reserve(2*s, 500, d(550, 450, 58*s+750*ms, 58*s+750*ms, 550, 1950, 1*min+57*s+750*ms)),
		settle(3*s, 1, 300),
		status(4*s, d(550, 450, 0, 58*s+750*ms, 550, 1950, 1*min+55*s+750*ms)),
		reserve(30*s, 400, d(950, 50, 0, 32*s+750*ms, 950, 1550, 1*min+29*s+750*ms)), // 6
		settle(31*s, 6, 400),
		// The 250 of second 1 has left the window, not the quota.
		status(61*s, d(700, 300, 0, 29*s+750*ms, 950, 1550, 58*s+750*ms)),
		reserve(62*s, 0, d(700, 300, 0, 28*s+750*ms, 950, 1550, 57*s+750*ms)),
		// The quota has room for 900, the window not.
		reserve(63*s, 900, d(400, 600, 27*s+750*ms, 27*s+750*ms, 950, 1550, 56*s+750*ms)),
		reserve(91*s, 900, d(900, 100, 0, 0, 1850, 650, 28*s+750*ms)), // 11, never settled
		// In-flight tokens alone block it: a whole window to wait.
		reserve(92*s, 600, d(900, 100, limiter.Window, 0, 1850, 650, 27*s+750*ms)), // 12, refused
		settle(93*s, 12, 600), // a refusal's zero Hold: charged all the same
		// A new hour: the quota starts afresh, the window slides on.
		reserve(2*min+30*s, 800, d(1500, 0, limiter.Window, 2*s+750*ms, 900, 1600, 59*min+29*s+750*ms)), // 14
		settle(2*min+31*s, 14, 800),
		status(2*min+32*s, d(2300, 0, 58*s+750*ms, 58*s+750*ms, 1700, 800, 59*min+27*s+750*ms)),
	})
}
