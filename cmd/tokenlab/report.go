package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressFrom is the number of runs from which a progress bar is worth
// drawing; the lab's ten finish before one would be seen.
const progressFrom = 20

func newProgress(n int, w io.Writer) *progressbar.ProgressBar {
	if n < progressFrom {
		return progressbar.DefaultSilent(int64(n))
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("requests"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

// finished drops the runs an interruption kept from starting.
func finished(results []result) []result {
	out := results[:0]
	for _, r := range results {
		if r.Run != 0 {
			out = append(out, r)
		}
	}
	return out
}

// report prints the table, writes the chart and says whether the lab
// completed. Refusals are what the lab is about, so whatever the statuses
// the lab has completed; only requests that got no answer at all, or an
// interruption, make it fail.
func report(ctx context.Context, o options, results []result, stdout io.Writer) error {
	limit := policyLimit(o.limit, results)
	writeTable(stdout, results, limit)
	var errs []error
	if o.out != "" && len(results) > 0 {
		if err := writeChart(o.out, chartTitle(o, limit), results, limit); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(stdout, "chart: %s\n", o.out)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("interrupted after %d of %d runs: %w", len(results), o.n, err))
	}
	unanswered := 0
	var first error
	for _, r := range results {
		if r.Status == 0 {
			unanswered++
			if first == nil {
				first = r.Err
			}
		}
	}
	if unanswered > 0 {
		errs = append(errs, fmt.Errorf("%d of %d requests got no answer; the first: %w", unanswered, len(results), first))
	}
	return errors.Join(errs...)
}

// writeTable prints one row per run, a totals row and a line summing up
// the statuses. Runs made through the SDK also show how many tries each
// took.
func writeTable(w io.Writer, results []result, limit int) {
	tries := false
	for _, r := range results {
		tries = tries || len(r.Attempts) > 0
	}
	// triesCell is the last column's cell (with its tab), or nothing.
	triesCell := func(cell string) string {
		if !tries {
			return ""
		}
		return cell + "\t"
	}
	// Right-aligned cells need a closing tab, which pads the ends of the
	// lines: the table goes through buf to lose that padding.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tstatus\tprompt\tcompletion\ttotal\tremaining\tretry-after\tlatency\t"+triesCell("attempts"))
	var sum usage
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", r.Run, statusText(r.Status), r.Prompt, r.Completion, r.Total,
			orDash(r.Remaining), retryAfterText(r), roundLatency(r.Latency), triesCell(strconv.Itoa(len(r.Attempts))))
		sum.Prompt += r.Prompt
		sum.Completion += r.Completion
		sum.Total += r.Total
	}
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t\t\t\t%s\n", sum.Prompt, sum.Completion, sum.Total, triesCell(""))
	_ = tw.Flush()
	for line := range strings.Lines(buf.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
	fmt.Fprintf(w, "\n%s; %d tokens used", statusSummary(results), sum.Total)
	if limit > 0 {
		fmt.Fprintf(w, ", the policy allows %d per minute", limit)
	}
	fmt.Fprintln(w)
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(w, "run %d: %v\n", r.Run, r.Err)
		}
	}
}

func statusText(status int) string {
	if status == 0 {
		return "error"
	}
	return strconv.Itoa(status)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// retryAfterText shows retry-after in seconds, as the header has it.
func retryAfterText(r result) string {
	if r.RetryAfter == "" {
		return "-"
	}
	if _, err := strconv.Atoi(r.RetryAfter); err == nil {
		return r.RetryAfter + "s"
	}
	return r.RetryAfter // an HTTP date, from some other gateway
}

// statusSummary reads like "6 × 200, 4 × 429", statuses in order.
func statusSummary(results []result) string {
	counts := map[int]int{}
	for _, r := range results {
		counts[r.Status]++
	}
	statuses := make([]int, 0, len(counts))
	for s := range counts {
		statuses = append(statuses, s)
	}
	sort.Ints(statuses)
	parts := make([]string, len(statuses))
	for i, s := range statuses {
		parts[i] = fmt.Sprintf("%d × %s", counts[s], statusText(s))
	}
	return fmt.Sprintf("%s: %s", plural(len(results), "run"), strings.Join(parts, ", "))
}

// roundLatency keeps two or three significant digits: 2.3ms, 41ms, 1.51s.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d < 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d < time.Second:
		return d.Round(time.Millisecond)
	default:
		return d.Round(10 * time.Millisecond)
	}
}

// plural writes "1 run", "2 runs"; "retry" becomes "retries".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
