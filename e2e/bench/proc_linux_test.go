package main

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses, as /proc allows.
	stat := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1 2 3 4 150 25 0 0 20 0 12 0 100 1000 10 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil || got != 1750*time.Millisecond {
		t.Errorf("got %v, %v; want 1.75s (150 + 25 ticks)", got, err)
	}
	if _, err := parseStatCPU("garbage"); err == nil {
		t.Error("garbage parsed")
	}
}
