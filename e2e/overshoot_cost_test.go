package e2e

import (
	"fmt"
	"testing"

	"github.com/tokengate/tokengate/e2e/load"
)

// The accuracy run in cost: the same 64 clients and load as
// TestStrictModeNoOvershoot, against a policy whose one limit is a cost
// per 1m window. The harness prices what the upstream reported of every
// admitted request itself, at the prices it configured, and holds the
// worst 60 s window of that bill to the limit: tokengate's own account is
// only cross-checked against it, never used for it.
const (
	// costLimit is what the token run's 20,000 tokens cost at the load's
	// mean request (a prompt of 317 tokens at 2.50, a completion of 425
	// at 10.00 per million: 5,042.5 micro-units for 742 tokens): a round
	// asks about 322,700, 2.4 times the limit, as a round of the token
	// run asks 47,000 of its 20,000. The limit is pressed from the first
	// second on.
	costLimit       int64 = 136_000
	costLimitConfig       = "0.136"
)

// costPrice is gpt-4o's price in the cost policy, in micro-units per
// million tokens; costPriceConfig writes it as the file does.
var costPrice = load.Price{Input: 2_500_000, Output: 10_000_000}

const costPriceConfig = "{input: 2.50, output: 10.00}"

// costLargest is the most one request of the load can cost: its longest
// prompt (600 words and the chat framing's 7 tokens) and its longest
// completion (800).
var costLargest = costPrice.Cost(load.Record{Prompt: 607, Completion: 800})

// overshootCostConfig is the accuracy policy with a cost limit in place
// of tokens_per_minute; strict, it reserves the estimated prompt at the
// input price and max_tokens at the output price. Another model's price,
// as default, must not be the one charged.
func overshootCostConfig(strict bool) string {
	mode := ""
	if strict {
		mode = "  estimate_prompt_tokens: true\n  reserve_completion: max_tokens\n"
	}
	return fmt.Sprintf(`store: {backend: memory}
prices:
  models:
    gpt-4o: %s
  default: {input: 100, output: 100}
policies:
- name: accuracy
  counter_key: {header: [api-key]}
%s  limits:
  - {name: cost, unit: cost, max: %s, window: 1m}
`, costPriceConfig, mode, costLimitConfig)
}

func TestStrictModeNoOvershootCost(t *testing.T) {
	skipLongUnderShort(t)
	needBinaries(t)
	t.Run("strict", func(t *testing.T) {
		s := startOvershoot(t, overshootCostConfig(true))
		res := runOvershootOn(t, s)
		a := costAccount(res)
		t.Logf("strict cost: %s", res.ReportCost(costPrice, costLimit))
		checkWithin(t, "strict mode", a)
		// A refused request did not fit in what the window had left,
		// so the window held more than the limit less the dearest
		// request; 90 % of the limit is less than that.
		checkPressedIn(t, res, a, costLimit*9/10)
		checkCostMetrics(t, s.Tokengate.Field("admin"), res)
	})
	t.Run("apim", func(t *testing.T) {
		// For the record, as in TestStrictModeNoOvershoot: nothing is
		// reserved, the cost is charged once the response is back, and
		// the run is expected to overshoot.
		s := startOvershoot(t, overshootCostConfig(false))
		res := runOvershootOn(t, s)
		t.Logf("apim cost: %s", res.ReportCost(costPrice, costLimit))
		if res.Admitted == 0 {
			t.Error("APIM mode admitted nothing")
		}
		checkCostMetrics(t, s.Tokengate.Field("admin"), res)
	})
}

// costAccount is a run in cost: the records priced at costPrice against
// costLimit, in micro-units.
func costAccount(res load.Result) account {
	return account{unit: "micro-units", limit: costLimit, worst: res.WorstCost(costPrice), admitted: res.Cost(costPrice)}
}

// checkCostMetrics cross-checks tokengate's account with the harness's:
// tokengate_cost_micros_total must be the bill the harness priced from
// the upstream's usage, to the micro-unit, and every 429 must be the cost
// limit's. An admitted request is settled, and counted, before its answer
// is passed on, so the run's end is the metrics' too.
func checkCostMetrics(t *testing.T, admin string, res load.Result) {
	t.Helper()
	bill := res.Cost(costPrice)
	got := faultMetric(t, admin, "tokengate_cost_micros_total", "policy", "accuracy")
	t.Logf("tokengate_cost_micros_total %.0f, the harness's bill %d micro-units over %d requests admitted (dearest possible %d)",
		got, bill, res.Admitted, costLargest)
	if got != float64(bill) {
		t.Errorf("tokengate_cost_micros_total = %.0f, the upstream's usage at the configured prices costs %d", got, bill)
	}
	refused := faultMetric(t, admin, "tokengate_limit_refusals_total", "policy", "accuracy", "limit", "cost")
	if refused != float64(res.RateLimited) {
		t.Errorf("tokengate_limit_refusals_total{limit=\"cost\"} = %.0f, the run saw %d 429s", refused, res.RateLimited)
	}
}
