package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// writeTables prints each mode as a table: one row per server, one of
// ratios, then the SPEC §9 verdicts and the sanity checks.
func writeTables(w io.Writer, r *report) {
	m := r.Machine
	fmt.Fprintf(w, "%s\n%d CPUs (%s), %s, %s, load average %s at start; client: this process; servers: own processes on loopback\n",
		r.Command, m.NumCPU, m.CPUModel, m.GoVersion, m.OS, m.LoadAvg)
	if r.Source != "" {
		fmt.Fprintf(w, "source: %s\n", r.Source)
	}
	fmt.Fprintf(w, "%s\n", describeSettings(r.Settings))
	for _, mr := range r.Modes {
		fmt.Fprintf(w, "\n== %s: %s (%d messages per stream)\n", mr.Mode, mr.About, mr.MessagesPerStream)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "server\tstreams\tstreams/s\treq p50\treq p99\treq p999\tmsg p50\tmsg p99\tCPU/stream\tCPU/msg\tCPU cores\t")
		for _, s := range []struct {
			name string
			r    serverResult
		}{{"nop", mr.Nop}, {"tokengate", mr.Tokengate}} {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, s.r.Streams, s.r.StreamsPerSec,
				fmtUS(s.r.Request.P50), fmtUS(s.r.Request.P99), fmtUS(s.r.Request.P999),
				fmtUS(s.r.Message.P50), fmtUS(s.r.Message.P99),
				fmtUS(s.r.CPUPerStreamUS), fmtUS(s.r.CPUPerMsgUS), fmtCores(s.r.CPUCores))
		}
		x := mr.Ratios
		added := fmtDeltaUS(x.AddedCPUPerMsg)
		if mr.Nop.CPUPerMsgUS < 0 || mr.Tokengate.CPUPerMsgUS < 0 {
			added = "?"
		}
		fmt.Fprintf(tw, "tokengate/nop\t\t%s\t%s\t%s\t%s\t%s\t\t%s\t%s\t\t\n",
			fmtX(x.Throughput), fmtX(x.RequestP50), fmtX(x.RequestP99), fmtX(x.RequestP999), fmtX(x.MessageP50),
			fmtX(x.CPUPerStream), added)
		tw.Flush()
		if v := mr.Tokengate.StoreCPUPerStreamUS; v > 0 {
			fmt.Fprintf(w, "store: redis-server used %s CPU per tokengate stream besides tokengate's own\n", fmtUS(v))
		}
		if note := roundsNote(mr.Rounds); note != "" {
			fmt.Fprintf(w, "tokengate/nop %s\n", note)
		}
		if mr.OtherLoadCores >= 0 {
			fmt.Fprintf(w, "machine: other processes used %.2f cores during this mode (the bench itself %.2f of %d)\n",
				mr.OtherLoadCores, mr.BenchLoadCores, r.Machine.NumCPU)
		}
		for _, t := range mr.Targets {
			fmt.Fprintf(w, "SPEC §9 %s: %s (target %s) %s\n", t.What, fmtX(t.Ratio), t.target(), t.verdict())
			if t.Note != "" {
				fmt.Fprintf(w, "  (%s)\n", t.Note)
			}
		}
		for _, c := range mr.Checks {
			mark := "ok  "
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "check %s %s\n", mark, c.What)
		}
	}
}

func describeSettings(s settings) string {
	run := fmt.Sprintf("%gs", s.DurationSeconds)
	if s.Requests > 0 {
		run = fmt.Sprintf("%d streams", s.Requests)
	}
	return fmt.Sprintf("per mode and server: %s measured in %d alternating rounds after a %gs warm-up; concurrency %d (streams in flight) over %d connections",
		run, s.Rounds, s.WarmupSeconds, s.Concurrency, s.Conns)
}

// fmtUS prints microseconds with three significant digits or so; "?" for
// an unknown (negative) figure.
func fmtUS(v float64) string {
	switch {
	case v < 0:
		return "?"
	case v < 10:
		return fmt.Sprintf("%.2fµs", v)
	case v < 1000:
		return fmt.Sprintf("%.1fµs", v)
	case v < 1e6:
		return fmt.Sprintf("%.2fms", v/1e3)
	}
	return fmt.Sprintf("%.2fs", v/1e6)
}

func fmtX(v float64) string {
	if v <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f×", v)
}

func fmtCores(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtDeltaUS prints a signed difference in microseconds.
func fmtDeltaUS(v float64) string {
	if v < 0 {
		return "-" + fmtUS(-v)
	}
	return "+" + fmtUS(v)
}
