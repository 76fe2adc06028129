package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/e2e/harness"
	"github.com/tokengate/tokengate/e2e/load"
)

// The accuracy run (SPEC §9: at most 1 % over the limit in any 60 s
// window with 64 concurrent clients). A round is 64 requests at once in
// one fake second, about 47,000 tokens asked of a 20,000 budget, so the
// limit is pressed from the first second on. The runs of
// envoy_overshoot_trailers_test.go and replicas_test.go are this one
// through other clients and deployments.
const (
	accuracyLimit       int64 = 20000
	accuracyClients           = 64
	accuracyClock             = "2026-01-05T10:00:00Z"
	accuracySim               = 3 * time.Minute
	accuracyMaxRequests       = 50000
	// Bound of one run on one process: the 180 rounds take a few
	// seconds on 2 cores.
	overshootMaxWall = 20 * time.Second
)

// accuracyPolicy is the accuracy policy: strict reserves the estimated
// prompt and max_tokens before admitting; without, APIM's check, charged
// only once the response is back.
func accuracyPolicy(strict bool) string {
	mode := ""
	if strict {
		mode = "  estimate_prompt_tokens: true\n  reserve_completion: max_tokens\n"
	}
	return fmt.Sprintf(`policies:
- name: accuracy
  counter_key: {header: [api-key]}
  tokens_per_minute: %d
%s`, accuracyLimit, mode)
}

func overshootConfig(strict bool) string {
	return "store: {backend: memory}\n" + accuracyPolicy(strict)
}

func TestStrictModeNoOvershoot(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	t.Run("strict", func(t *testing.T) {
		res := runOvershoot(t, overshootConfig(true))
		t.Logf("strict: %s", res.Report(accuracyLimit))
		checkNoOvershoot(t, "strict mode", res)
		checkPressed(t, res, accuracyLimit*9/10)
	})
	t.Run("apim", func(t *testing.T) {
		// For the record: APIM's check (refuse once used ≥ limit,
		// charge when the response is back) on the same load. It is
		// expected to overshoot; only the run itself is checked.
		res := runOvershoot(t, overshootConfig(false))
		t.Logf("apim: %s", res.Report(accuracyLimit))
		if res.Admitted == 0 {
			t.Error("APIM mode admitted nothing")
		}
	})
}

// TestStrictModeNoOvershootChoices is the accuracy run with requests that
// make the upstream generate several completions: n for chat, best_of (and
// n) for legacy Completions. The upstream bills every one, so strict mode
// must reserve max_tokens for each; reserving one would let several times
// the limit through. Each choice is 50–400 tokens so that a request (at
// most 607 + 4 × 400 = 2,207 tokens) still fits the 20,000 budget many
// times over.
func TestStrictModeNoOvershootChoices(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	completion := load.Range{Min: 50, Max: 400}
	tests := []struct {
		name      string
		legacy    bool
		n, bestOf int
		// largest is the most tokens one request can be billed: its
		// longest prompt and every choice at its longest.
		largest int64
	}{
		{name: "chat n 4", n: 4, largest: 607 + 4*400},
		{name: "legacy best_of 3 n 1", legacy: true, n: 1, bestOf: 3, largest: 600 + 3*400},
		{name: "legacy n 3", legacy: true, n: 3, largest: 600 + 3*400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runOvershoot(t, overshootConfig(true), func(o *load.Options) {
				o.Legacy, o.N, o.BestOf, o.CompletionTokens = tt.legacy, tt.n, tt.bestOf, completion
			})
			t.Logf("strict, %s: %s", tt.name, res.Report(accuracyLimit))
			checkNoOvershoot(t, "strict mode", res)
			// The upstream must have billed the choices: a record's
			// completion is every choice's (or candidate's) tokens.
			choices := int64(max(tt.n, tt.bestOf, 1))
			for _, r := range res.Records {
				if r.Completion < choices*int64(completion.Min) || r.Completion > choices*int64(completion.Max) {
					t.Fatalf("record %+v: want %d completions of %d–%d tokens billed", r, choices, completion.Min, completion.Max)
				}
			}
			// Pressed, as in TestStrictModeNoOvershoot; requests are
			// bigger here, so a refusal proves the window only held more
			// than the limit less the largest request (a refused request
			// did not fit in what was left).
			checkPressed(t, res, accuracyLimit-tt.largest)
		})
	}
}

// runOvershoot starts a stack on cfg and runs the accuracy load through
// it; shape, when given, changes the load (API, n, best_of, sizes).
func runOvershoot(t *testing.T, cfg string, shape ...func(*load.Options)) load.Result {
	t.Helper()
	return runOvershootOn(t, startOvershoot(t, cfg), shape...)
}

// startOvershoot starts the stack of an accuracy run on cfg, for a test
// that reads tokengate after the run.
func startOvershoot(t *testing.T, cfg string) *harness.Stack {
	t.Helper()
	return harness.StartStack(t, harness.StackOptions{ConfigYAML: cfg, FakeClock: accuracyClock, Filter: patientFront})
}

// runOvershootOn runs the accuracy load through s, as runOvershoot.
func runOvershootOn(t *testing.T, s *harness.Stack, shape ...func(*load.Options)) load.Result {
	t.Helper()
	return runAccuracy(t, []string{s.URL}, []string{s.Tokengate.Field("admin")}, "accuracy-key", overshootMaxWall, shape...)
}

// runAccuracy drives the accuracy load on key through urls, moving the
// fake clocks of admins together, within maxWall; every request must be
// admitted or refused, none fail or be cut. shape, when given, changes the
// load.
func runAccuracy(t *testing.T, urls, admins []string, key string, maxWall time.Duration, shape ...func(*load.Options)) load.Result {
	t.Helper()
	start, err := time.Parse(time.RFC3339, accuracyClock)
	if err != nil {
		t.Fatal(err)
	}
	o := load.Options{
		URLs:        urls,
		Clients:     accuracyClients,
		Key:         key,
		Advance:     load.ClockAdvancer(admins...),
		Start:       start,
		SimDuration: accuracySim,
		MaxRequests: accuracyMaxRequests,
		MaxWall:     maxWall,
		Seed:        1,
	}
	for _, f := range shape {
		f(&o)
	}
	res, err := load.Run(context.Background(), o)
	checkLoadRun(t, res, err)
	return res
}

// account is a run's figures in one unit, held to that unit's limit:
// the tokens the records count, or what they cost (costAccount).
type account struct {
	unit     string
	limit    int64
	worst    load.Window // the 60 s window that charged the most
	admitted int64       // charged over the whole run
}

// tokenAccount is a run in tokens, against the accuracy policy's limit.
func tokenAccount(res load.Result) account {
	return account{unit: "tokens", limit: accuracyLimit, worst: res.Worst, admitted: res.AdmittedTokens}
}

// checkNoOvershoot holds a strict run to the bound: at most limit × 1.01
// tokens in any 60 s window. what names the run.
func checkNoOvershoot(t *testing.T, what string, res load.Result) {
	t.Helper()
	checkWithin(t, what, tokenAccount(res))
}

// checkWithin holds a strict run's account to the bound: at most
// limit × 1.01 in any 60 s window.
func checkWithin(t *testing.T, what string, a account) {
	t.Helper()
	if most := a.limit * 101 / 100; a.worst.Tokens > most {
		t.Errorf("%s let %d %s through in the 60 s from %v: more than limit × 1.01 = %d",
			what, a.worst.Tokens, a.unit, a.worst.From.Format(time.TimeOnly), most)
	}
}

// checkPressed fails a run whose proof is worth nothing because the limit
// was not pressed: no request refused, no window filled to least, or less
// than twice the limit admitted over the run (the window did not refill
// as tokens left it).
func checkPressed(t *testing.T, res load.Result, least int64) {
	t.Helper()
	checkPressedIn(t, res, tokenAccount(res), least)
}

// checkPressedIn is checkPressed on a's figures, least in a's unit.
func checkPressedIn(t *testing.T, res load.Result, a account, least int64) {
	t.Helper()
	if res.RateLimited == 0 || a.worst.Tokens < least || a.admitted < 2*a.limit {
		t.Errorf("the limit was not pressed: %d refused, worst window %d, %d %s admitted in all (want refusals, ≥ %d, ≥ %d)",
			res.RateLimited, a.worst.Tokens, a.admitted, a.unit, least, 2*a.limit)
	}
}

// checkLoadRun fails a load run whose records are not the whole account:
// a failed or cut request may have been charged unseen.
func checkLoadRun(t *testing.T, res load.Result, err error) {
	t.Helper()
	t.Log(res.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed > 0 {
		t.Fatalf("%d requests failed; first: %+v", res.Failed, res.Failures[0])
	}
	if res.Cancelled > 0 {
		t.Fatalf("%d requests were cut: the records are not the whole account", res.Cancelled)
	}
	if res.Stopped != "" {
		// A slow machine (or -race) may stop the run at its bound; the
		// rounds run are still exact, and the callers check that they
		// were enough to press the limit.
		t.Logf("the run stopped after %d of %d rounds: %s", res.Ticks, res.Rounds, res.Stopped)
	}
}
