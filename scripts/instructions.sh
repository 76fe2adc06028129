#!/bin/bash
# Instructions per op of Go benchmarks, counted by valgrind (callgrind):
# deterministic where timings on a shared VM are not. One goroutine, no
# GC, no preemption signals (which callgrind does not survive); each
# benchmark runs twice, N and 2N times, and the difference is divided by
# N, so that setup is not counted.
#   scripts/instructions.sh ./limiter/memstore/ BenchmarkMemoryBudget/limits=1/serial ...
set -euo pipefail
pkg=$1; shift
bin=$(mktemp -d)/bench.test
go test -c -o "$bin" "$pkg"
count() { # bench N -> total instructions
	GOGC=off GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$bin" -test.run '^$' -test.bench "^$1\$" -test.benchtime "$2x" -test.cpu 1 2>&1 >/dev/null |
		sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
n=${N:-20000}
for b in "$@"; do
	a=$(count "$b" "$n"); c=$(count "$b" $((2 * n)))
	echo "$b $(( (c - a) / n )) instructions/op"
done
