// Package load is the accuracy harness of the end-to-end tests: it drives
// concurrent chat completions (or legacy completions; n and best_of
// optional) through a gateway whose limiter runs on a fake clock, and
// records every admitted request's tokens, as the upstream's usage reports
// them, against the fake second it was charged in, so that a test can
// compare the worst 60-second window with the limit.
//
// The fake clock only moves when the harness moves it, between rounds: no
// request is in flight while it advances, so each request's second is known
// exactly on the client side, without trusting the gateway's own account.
package load
