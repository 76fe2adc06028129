package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// overrides are the per-request knobs, defaulting to the flags.
type overrides struct {
	status           int
	completionTokens int
	latency          time.Duration
}

func (s *server) overrides(h http.Header) (overrides, error) {
	o := overrides{status: s.cfg.status, completionTokens: s.cfg.completionTokens, latency: s.cfg.latency}
	if v := h.Get("x-mock-status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || !validStatus(n) {
			return o, fmt.Errorf("x-mock-status: %q is neither 0 nor in 200..599", v)
		}
		o.status = n
	}
	if v := h.Get("x-mock-completion-tokens"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, fmt.Errorf("x-mock-completion-tokens: %q is not a non-negative integer", v)
		}
		o.completionTokens = n
	}
	if v := h.Get("x-mock-latency"); v != "" {
		d, err := parseLatency(v)
		if err != nil {
			return o, fmt.Errorf("x-mock-latency: %w", err)
		}
		o.latency = d
	}
	return o, nil
}

// parseLatency takes a Go duration ("250ms") or, for callers that cannot
// spell one, a bare number of milliseconds.
func parseLatency(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is neither a duration nor milliseconds", v)
	}
	return d, nil
}

// validStatus refuses 1xx, which net/http cannot send as a final answer.
func validStatus(n int) bool { return n == 0 || (n >= 200 && n <= 599) }
