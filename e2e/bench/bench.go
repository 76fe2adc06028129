package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/internal/proc"
)

// target is one server under measurement.
type target struct {
	name    string
	proc    *proc.Process
	clients []extprocv3.ExternalProcessorClient
	store   *proc.Process // a process the server depends on (redis-server), or nil
	sent    int64         // streams played against it, warm-up included
}

// benchAll builds the servers, starts the nop once and, per mode, a
// tokengate configured for it, and measures both.
func benchAll(ctx context.Context, o options, ms []mode, log io.Writer) (*report, error) {
	rep := &report{Command: commandLine(o.args), Machine: readMachine(), Settings: settingsOf(o), Started: time.Now().UTC()}
	root, err := proc.ModuleRoot()
	if err != nil {
		return nil, fmt.Errorf("%w: run from the tokengate repository", err)
	}
	rep.Source = sourceOf(ctx, root)
	dir, err := os.MkdirTemp("", "tokengate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(log, "bench: building tokengate and the nop server")
	tgBin, nopBin, err := build(ctx, root, dir)
	if err != nil {
		return nil, err
	}
	nopProc, err := proc.Start(ctx, nopBin, []string{"-listen", "127.0.0.1:0"}, serverOptions())
	if err != nil {
		return nil, err
	}
	defer nopProc.Stop(stopTimeout)
	nop, closeNop, err := connect("nop", nopProc, o.conns)
	if err != nil {
		return nil, err
	}
	defer closeNop()
	for _, m := range ms {
		fmt.Fprintf(log, "bench: mode %s\n", m.name)
		res, err := benchMode(ctx, o, m, dir, tgBin, nop)
		if err != nil {
			return nil, fmt.Errorf("mode %s: %w", m.name, err)
		}
		rep.Modes = append(rep.Modes, res)
	}
	return rep, nil
}

// connect opens n connections to p's gRPC address. They are made before
// any measurement, so connection setup is in no figure.
func connect(name string, p *proc.Process, n int) (*target, func(), error) {
	addr := p.Field("grpc")
	if addr == "" {
		return nil, nil, fmt.Errorf("%s's ready line has no grpc= address", name)
	}
	t := &target{name: name, proc: p}
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		// Distinct connections, not one shared: grpc.NewClient gives each
		// its own HTTP/2 transport, as Envoy's workers have.
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		c.Connect()
		conns = append(conns, c)
		t.clients = append(t.clients, extprocv3.NewExternalProcessorClient(c))
	}
	return t, closeAll, nil
}

// benchMode starts what m needs, warms both servers up, then measures
// them in alternating rounds.
func benchMode(ctx context.Context, o options, m mode, dir, tgBin string, nop *target) (*modeResult, error) {
	var redisAddr string
	var redis *proc.Process
	if m.redis {
		rp, addr, err := startRedis(ctx, o.redisBin)
		if err != nil {
			return nil, err
		}
		defer rp.Stop(stopTimeout)
		redis, redisAddr = rp, addr
	}
	cfg, err := writeConfig(dir, m, redisAddr)
	if err != nil {
		return nil, err
	}
	tgProc, err := proc.Start(ctx, tgBin, []string{"--config", cfg,
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "error"}, serverOptions())
	if err != nil {
		return nil, err
	}
	defer tgProc.Stop(stopTimeout)
	tg, closeTG, err := connect("tokengate", tgProc, o.conns)
	if err != nil {
		return nil, err
	}
	defer closeTG()
	tg.store = redis

	w := newWorkload(m.streamed)
	if m.api == "anthropic" {
		w = newAnthropicWorkload()
	}
	load := startLoad(nop.proc, tgProc, redis)
	var seq atomic.Int64
	targets := []*target{nop, tg}
	for _, t := range targets {
		r, err := drive(ctx, t.clients, w, bound{duration: o.warmup, concurrency: o.concurrency}, &seq)
		if err != nil {
			return nil, fmt.Errorf("warm-up of %s: %w", t.name, err)
		}
		t.sent += r.streams
	}
	totals := map[string]*stretch{nop.name: newStretch(), tg.name: newStretch()}
	var perRound []roundRatios
	for r := range o.rounds {
		order := slices.Clone(targets)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		got := map[string]*stretch{}
		for _, t := range order {
			s, err := measure(ctx, t, w, roundBound(o, r), &seq)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", r+1, t.name, err)
			}
			got[t.name] = s
			totals[t.name].add(s)
		}
		perRound = append(perRound, newRoundRatios(got[nop.name], got[tg.name]))
	}
	res := newModeResult(m, w, totals[nop.name], totals[tg.name], o.concurrency)
	res.Rounds = perRound
	res.OtherLoadCores, res.BenchLoadCores = load.cores()
	res.Checks = checkTokengate(tgProc.Field("admin"), m, tg.sent)
	return res, nil
}

// roundBound is round r's share of the run: an equal slice of the
// duration, or of the request count with the remainder spread.
func roundBound(o options, r int) bound {
	b := bound{concurrency: o.concurrency}
	if o.requests > 0 {
		n := int64(o.rounds)
		b.requests = o.requests*int64(r+1)/n - o.requests*int64(r)/n
		return b
	}
	b.duration = o.duration / time.Duration(o.rounds)
	return b
}

// measure drives t once and adds the server's CPU time over the stretch,
// read from /proc around it. Both servers are idle outside their own
// stretches, so what the process used is what the stretch cost. A store
// process's CPU is read the same way and kept apart: it is tokengate's
// cost too, but not tokengate's code.
func measure(ctx context.Context, t *target, w *workload, b bound, seq *atomic.Int64) (*stretch, error) {
	var store0 time.Duration
	if t.store != nil {
		store0, _ = cpuTime(t.store.Pid())
	}
	cpu0, cpuErr := cpuTime(t.proc.Pid())
	r, err := drive(ctx, t.clients, w, b, seq)
	if t.store != nil {
		if store1, err := cpuTime(t.store.Pid()); err == nil {
			r.storeCPU = store1 - store0
		}
	}
	t.sent += r.streams
	if err != nil {
		if e := t.proc.Alive(); e != nil {
			return nil, fmt.Errorf("%w (%v)", err, e)
		}
		return nil, err
	}
	if cpuErr == nil {
		cpu1, err := cpuTime(t.proc.Pid())
		if err != nil {
			return nil, err
		}
		r.cpu = cpu1 - cpu0
	} else {
		r.cpu = -1
	}
	return r, t.proc.Alive()
}
