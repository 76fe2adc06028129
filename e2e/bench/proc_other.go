//go:build !linux

package main

import (
	"errors"
	"time"
)

// cpuTime needs /proc; elsewhere the tool reports latency and throughput
// only.
func cpuTime(int) (time.Duration, error) {
	return 0, errors.New("server CPU time is read from /proc, Linux only")
}

func machineBusy() (time.Duration, error) {
	return 0, errors.New("machine load is read from /proc, Linux only")
}
