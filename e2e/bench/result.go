package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// report is everything one invocation measured; -json prints it as is.
type report struct {
	Command  string        `json:"command"`
	Source   string        `json:"source,omitempty"` // the commit the servers were built from
	Machine  machine       `json:"machine"`
	Settings settings      `json:"settings"`
	Started  time.Time     `json:"started"`
	Modes    []*modeResult `json:"modes"`
}

type settings struct {
	Concurrency     int     `json:"concurrency"`
	Conns           int     `json:"conns_per_server"`
	DurationSeconds float64 `json:"duration_seconds_per_server,omitempty"`
	Requests        int64   `json:"requests_per_server,omitempty"`
	WarmupSeconds   float64 `json:"warmup_seconds_per_server"`
	Rounds          int     `json:"rounds"`
}

func settingsOf(o options) settings {
	s := settings{Concurrency: o.concurrency, Conns: o.conns, WarmupSeconds: o.warmup.Seconds(), Rounds: o.rounds}
	if o.requests > 0 {
		s.Requests = o.requests
	} else {
		s.DurationSeconds = o.duration.Seconds()
	}
	return s
}

// modeResult is one mode's figures for both servers and their ratios.
type modeResult struct {
	Mode              string        `json:"mode"`
	About             string        `json:"about"`
	MessagesPerStream int           `json:"messages_per_stream"`
	Nop               serverResult  `json:"nop"`
	Tokengate         serverResult  `json:"tokengate"`
	Ratios            ratios        `json:"ratios_tokengate_over_nop"`
	Targets           []targetCheck `json:"targets,omitempty"`
	Checks            []check       `json:"checks"`
	// Rounds are the ratios of each round alone: their spread shows how
	// much the totals can be trusted on this machine.
	Rounds []roundRatios `json:"rounds"`
	// OtherLoadCores is the CPU that processes other than the bench's
	// used during the mode, in cores (-1: unknown); BenchLoadCores the
	// bench's own (client and servers).
	OtherLoadCores float64 `json:"other_load_cores"`
	BenchLoadCores float64 `json:"bench_load_cores"`
}

// serverResult is one server's figures; times in microseconds.
type serverResult struct {
	Streams        int64     `json:"streams"`
	Messages       int64     `json:"messages"`
	Seconds        float64   `json:"seconds"`
	StreamsPerSec  float64   `json:"streams_per_second"`
	Request        latencies `json:"request_latency_us"`
	Message        latencies `json:"message_latency_us"`
	CPUPerStreamUS float64   `json:"server_cpu_us_per_stream"`  // -1: unknown
	CPUPerMsgUS    float64   `json:"server_cpu_us_per_message"` // -1: unknown
	CPUCores       float64   `json:"server_cpu_cores"`          // CPU time / wall time
	// StoreCPUPerStreamUS is the CPU the server's own store process (the
	// redis-server of -mode redis) used per stream, apart from the server's.
	StoreCPUPerStreamUS float64 `json:"store_cpu_us_per_stream,omitempty"`
}

type latencies struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

type ratios struct {
	Throughput     float64 `json:"throughput"`
	RequestP50     float64 `json:"request_latency_p50"`
	RequestP99     float64 `json:"request_latency_p99"`
	RequestP999    float64 `json:"request_latency_p999"`
	MessageP50     float64 `json:"message_latency_p50"`
	CPUPerStream   float64 `json:"server_cpu_per_stream"`
	AddedCPUPerMsg float64 `json:"added_server_cpu_us_per_message"`
}

// targetCheck is one SPEC §9 target and whether this run met it.
type targetCheck struct {
	What   string  `json:"what"`
	Ratio  float64 `json:"ratio"`
	Limit  float64 `json:"limit"`
	AtMost bool    `json:"at_most"` // the ratio must be ≤ Limit, else ≥
	Met    bool    `json:"met"`
	Note   string  `json:"note,omitempty"` // when this run's setting is not the one the target is meant for
}

func newTarget(what string, ratio, limit float64, atMost bool) targetCheck {
	met := ratio >= limit
	if atMost {
		met = ratio > 0 && ratio <= limit
	}
	return targetCheck{What: what, Ratio: ratio, Limit: limit, AtMost: atMost, Met: met}
}

// target says the target, e.g. "≤ 1.25×".
func (t targetCheck) target() string {
	if t.AtMost {
		return fmt.Sprintf("≤ %g×", t.Limit)
	}
	return fmt.Sprintf("≥ %g×", t.Limit)
}

// verdict says met, or by how much the ratio missed, relative to the limit.
func (t targetCheck) verdict() string {
	switch {
	case t.Met:
		return "met"
	case t.AtMost:
		return fmt.Sprintf("MISSED by %.1f%%", 100*(t.Ratio/t.Limit-1))
	}
	return fmt.Sprintf("MISSED by %.1f%%", 100*(1-t.Ratio/t.Limit))
}

// check is a sanity check on what tokengate did during the mode.
type check struct {
	What string `json:"what"`
	OK   bool   `json:"ok"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func summarize(r *stretch) serverResult {
	s := serverResult{
		Streams:  r.streams,
		Messages: r.messages,
		Seconds:  r.wall.Seconds(),
		Request:  latencies{us(r.req.quantile(0.5)), us(r.req.quantile(0.99)), us(r.req.quantile(0.999)), us(r.req.mean()), us(time.Duration(r.req.max))},
		Message:  latencies{us(r.msg.quantile(0.5)), us(r.msg.quantile(0.99)), us(r.msg.quantile(0.999)), us(r.msg.mean()), us(time.Duration(r.msg.max))},
	}
	if r.wall > 0 {
		s.StreamsPerSec = float64(r.streams) / r.wall.Seconds()
	}
	s.CPUPerStreamUS, s.CPUPerMsgUS, s.CPUCores = -1, -1, -1
	if r.cpu >= 0 && r.streams > 0 {
		s.CPUPerStreamUS = us(r.cpu) / float64(r.streams)
		s.CPUPerMsgUS = us(r.cpu) / float64(r.messages)
		s.CPUCores = r.cpu.Seconds() / r.wall.Seconds()
	}
	if r.storeCPU > 0 && r.streams > 0 {
		s.StoreCPUPerStreamUS = us(r.storeCPU) / float64(r.streams)
	}
	return s
}

func ratio(a, b float64) float64 {
	if b <= 0 || a < 0 {
		return 0
	}
	return a / b
}

// SPEC §9's targets, for the buffered mode without estimation.
const (
	maxLatencyRatio    = 1.25
	minThroughputRatio = 0.8
)

func newModeResult(m mode, w *workload, nop, tg *stretch, concurrency int) *modeResult {
	res := &modeResult{Mode: m.name, About: m.about, MessagesPerStream: w.perStream(), Nop: summarize(nop), Tokengate: summarize(tg)}
	n, t := res.Nop, res.Tokengate
	res.Ratios = ratios{
		Throughput:   ratio(t.StreamsPerSec, n.StreamsPerSec),
		RequestP50:   ratio(t.Request.P50, n.Request.P50),
		RequestP99:   ratio(t.Request.P99, n.Request.P99),
		RequestP999:  ratio(t.Request.P999, n.Request.P999),
		MessageP50:   ratio(t.Message.P50, n.Message.P50),
		CPUPerStream: ratio(t.CPUPerStreamUS, n.CPUPerStreamUS),
	}
	if t.CPUPerMsgUS >= 0 && n.CPUPerMsgUS >= 0 {
		res.Ratios.AddedCPUPerMsg = t.CPUPerMsgUS - n.CPUPerMsgUS
	}
	if m.name == "buffered" {
		lat := newTarget("per-request latency p50", res.Ratios.RequestP50, maxLatencyRatio, true)
		tput := newTarget("throughput", res.Ratios.Throughput, minThroughputRatio, false)
		// The SPEC's per-request figure is a serial stream's; with several
		// in flight, latency also holds the wait for a core. Its
		// throughput figure needs more streams in flight than one.
		if concurrency > 1 {
			lat.Note = "with streams in flight this includes queueing for the cores; -concurrency 1 gives the per-request cost"
		} else {
			tput.Note = "serial: one stream at a time does not load the server; use -concurrency 8 for throughput"
		}
		res.Targets = []targetCheck{lat, tput}
	}
	return res
}

func (r *report) failedChecks() []string {
	var out []string
	for _, m := range r.Modes {
		for _, c := range m.Checks {
			if !c.OK {
				out = append(out, m.Mode+": "+c.What)
			}
		}
	}
	return out
}

func writeJSON(w io.Writer, r *report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// commandLine is the invocation as one would type it again.
func commandLine(args []string) string {
	parts := []string{"go", "run", "./e2e/bench"}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./,:") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// roundRatios are one round's tokengate/nop ratios.
type roundRatios struct {
	Throughput float64 `json:"throughput"`
	RequestP50 float64 `json:"request_latency_p50"`
}

func newRoundRatios(nop, tg *stretch) roundRatios {
	n, t := summarize(nop), summarize(tg)
	return roundRatios{Throughput: ratio(t.StreamsPerSec, n.StreamsPerSec), RequestP50: ratio(t.Request.P50, n.Request.P50)}
}

// spread is the lowest and highest of a ratio over the rounds.
func spread(rs []roundRatios, f func(roundRatios) float64) (lo, hi float64) {
	for i, r := range rs {
		v := f(r)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}

// roundsNote says the spread of the two judged ratios over the rounds.
func roundsNote(rs []roundRatios) string {
	if len(rs) < 2 {
		return ""
	}
	tlo, thi := spread(rs, func(r roundRatios) float64 { return r.Throughput })
	plo, phi := spread(rs, func(r roundRatios) float64 { return r.RequestP50 })
	return fmt.Sprintf("over its %d rounds alone: throughput %.2f–%.2f×, request p50 %.2f–%.2f×", len(rs), tlo, thi, plo, phi)
}
