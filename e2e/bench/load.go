package main

import (
	"os"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// loadMeter measures how much CPU processes other than the bench's own
// (this client, the servers, redis-server) used over a stretch of time, in
// cores. On a shared machine that load takes cores from both servers, at
// different moments, and is the first suspect when figures move between
// runs; the tool reports it rather than pretend the machine was idle.
type loadMeter struct {
	procs []*proc.Process
	start time.Time
	busy  time.Duration
	own   time.Duration
	ok    bool
}

func (l *loadMeter) ownCPU() (time.Duration, bool) {
	total, err := cpuTime(os.Getpid())
	if err != nil {
		return 0, false
	}
	for _, p := range l.procs {
		if p == nil {
			continue
		}
		t, err := cpuTime(p.Pid())
		if err != nil {
			return 0, false
		}
		total += t
	}
	return total, true
}

func startLoad(procs ...*proc.Process) *loadMeter {
	l := &loadMeter{procs: procs, start: time.Now()}
	var err error
	l.busy, err = machineBusy()
	own, ok := l.ownCPU()
	l.own, l.ok = own, ok && err == nil
	return l
}

// cores returns the other processes' load since startLoad, in cores, and
// the bench's own; both -1 when unknown.
func (l *loadMeter) cores() (other, own float64) {
	busy, err := machineBusy()
	mine, ok := l.ownCPU()
	wall := time.Since(l.start).Seconds()
	if !l.ok || err != nil || !ok || wall <= 0 {
		return -1, -1
	}
	own = (mine - l.own).Seconds() / wall
	other = max((busy-l.busy).Seconds()/wall-own, 0)
	return other, own
}
