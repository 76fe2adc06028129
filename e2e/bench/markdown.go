package main

import (
	"fmt"
	"os"
	"strings"
)

// appendMarkdown appends r to path as a snippet for BENCHMARKS.md: the
// exact command, the machine, one table for all modes and the verdicts,
// so a figure never travels without what made it.
func appendMarkdown(path string, r *report) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(markdown(r)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func markdown(r *report) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "\n### `%s`\n\n", r.Command)
	if r.Source != "" {
		fmt.Fprintf(&b, "Built from %s. ", r.Source)
	}
	fmt.Fprintf(&b, "Run %s. Machine: nproc %d, %s, %s, Linux %s, %s %s, load average %s at start. "+
		"The client is the bench tool; the nop and tokengate run as their own processes on loopback. %s.\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), m.NumCPU, m.CPUModel, m.MemTotal, m.Kernel, m.GoVersion, m.OS, m.LoadAvg,
		strings.ToUpper(describeSettings(r.Settings)[:1])+describeSettings(r.Settings)[1:])
	b.WriteString("| mode | server | streams/s | request p50 | p99 | p999 | message p50 | server CPU / stream | server CPU / message |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, mr := range r.Modes {
		for _, s := range []struct {
			name string
			r    serverResult
		}{{"nop", mr.Nop}, {"tokengate", mr.Tokengate}} {
			fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n", mr.Mode, s.name, s.r.StreamsPerSec,
				fmtUS(s.r.Request.P50), fmtUS(s.r.Request.P99), fmtUS(s.r.Request.P999), fmtUS(s.r.Message.P50),
				fmtUS(s.r.CPUPerStreamUS), fmtUS(s.r.CPUPerMsgUS))
		}
		x := mr.Ratios
		fmt.Fprintf(&b, "| %s | **tokengate / nop** | %s | %s | %s | %s | %s | %s | %s |\n", mr.Mode,
			fmtX(x.Throughput), fmtX(x.RequestP50), fmtX(x.RequestP99), fmtX(x.RequestP999), fmtX(x.MessageP50),
			fmtX(x.CPUPerStream), fmtDeltaUS(x.AddedCPUPerMsg))
	}
	b.WriteString("\n")
	for _, mr := range r.Modes {
		if note := roundsNote(mr.Rounds); note != "" {
			fmt.Fprintf(&b, "- %s: tokengate/nop %s.\n", mr.Mode, note)
		}
		if mr.OtherLoadCores >= 0 {
			fmt.Fprintf(&b, "- %s: other processes used %.2f cores during the mode, the bench itself %.2f.\n", mr.Mode, mr.OtherLoadCores, mr.BenchLoadCores)
		}
		if v := mr.Tokengate.StoreCPUPerStreamUS; v > 0 {
			fmt.Fprintf(&b, "- %s: redis-server used %s CPU per tokengate stream besides tokengate's own.\n", mr.Mode, fmtUS(v))
		}
		for _, t := range mr.Targets {
			note := ""
			if t.Note != "" {
				note = " (" + t.Note + ")"
			}
			fmt.Fprintf(&b, "- SPEC §9, %s, %s: %s (target %s), %s%s.\n", mr.Mode, t.What, fmtX(t.Ratio), t.target(), t.verdict(), note)
		}
		for _, c := range mr.Checks {
			if !c.OK {
				fmt.Fprintf(&b, "- **%s: sanity check failed**: %s.\n", mr.Mode, c.What)
			}
		}
	}
	return b.String()
}
