package openaimock

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// overrides are the per-request knobs, defaulting to the flags. The
// streaming ones let end-to-end tests drive every way a real stream ends:
// compressed, without usage, stalled, slow, or cut.
type overrides struct {
	status           int
	completionTokens int
	latency          time.Duration

	// encoding compresses the answer (x-mock-encoding): "", gzip, deflate
	// or br.
	encoding string
	// ignoreIncludeUsage streams without the usage chunk even when the
	// request asks for it (x-mock-ignore-include-usage), as some
	// OpenAI-compatible servers do.
	ignoreIncludeUsage bool
	// noUsage leaves the usage member out of a buffered answer
	// altogether (x-mock-no-usage), as some OpenAI-compatible servers
	// and proxies do.
	noUsage bool
	pace    pacing
	providerKnobs
}

// providerKnobs are the overrides only the Anthropic, Gemini and Bedrock
// APIs read: the OpenAI answers stay as they always were.
type providerKnobs struct {
	// cacheRead and cacheWrite are the prompt tokens reported as read
	// from and written to a prompt cache (x-mock-cache-read,
	// x-mock-cache-write), carved out of the counted prompt.
	cacheRead, cacheWrite int
	// reasoning is the thinking tokens Gemini reports besides the
	// answer's (x-mock-reasoning).
	reasoning int
	// streamErrorAfter, when positive, ends a stream with the API's
	// mid-stream error after that many text events
	// (x-mock-stream-error-after).
	streamErrorAfter int
}

// pacing shapes a stream in time and says where it is cut.
type pacing struct {
	// chunkDelay is waited before every event but the first
	// (x-mock-chunk-delay).
	chunkDelay time.Duration
	// stall is waited once, after stallAfter events, instead of the chunk
	// delay (x-mock-stall, x-mock-stall-after, default 1): long enough for
	// a test to see the first events reach the client while the upstream
	// still holds the rest.
	stall      time.Duration
	stallAfter int
	// cutAfter, when positive, drops the connection after that many events,
	// without [DONE] or the stream's normal end (x-mock-cut-after).
	cutAfter int
}

func (s *server) overrides(h http.Header) (overrides, error) {
	o := overrides{status: s.cfg.status, completionTokens: s.cfg.completionTokens, latency: s.cfg.latency}
	o.pace.stallAfter = 1
	if v := h.Get("x-mock-status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || !validStatus(n) {
			return o, fmt.Errorf("x-mock-status: %q is neither 0 nor in 200..599", v)
		}
		o.status = n
	}
	counts := []struct {
		name string
		dst  *int
		min  int
	}{
		{"x-mock-completion-tokens", &o.completionTokens, 0},
		{"x-mock-cut-after", &o.pace.cutAfter, 1},
		{"x-mock-stall-after", &o.pace.stallAfter, 1},
		{"x-mock-cache-read", &o.cacheRead, 0},
		{"x-mock-cache-write", &o.cacheWrite, 0},
		{"x-mock-reasoning", &o.reasoning, 0},
		{"x-mock-stream-error-after", &o.streamErrorAfter, 1},
	}
	for _, c := range counts {
		if v := h.Get(c.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < c.min {
				return o, fmt.Errorf("%s: %q is not an integer of at least %d", c.name, v, c.min)
			}
			*c.dst = n
		}
	}
	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{"x-mock-latency", &o.latency},
		{"x-mock-chunk-delay", &o.pace.chunkDelay},
		{"x-mock-stall", &o.pace.stall},
	}
	for _, d := range durations {
		if v := h.Get(d.name); v != "" {
			dur, err := parseLatency(v)
			if err != nil {
				return o, fmt.Errorf("%s: %w", d.name, err)
			}
			*d.dst = dur
		}
	}
	switch v := strings.ToLower(strings.TrimSpace(h.Get("x-mock-encoding"))); v {
	case "", "identity":
	case "gzip", "deflate", "br":
		o.encoding = v
	default:
		return o, fmt.Errorf("x-mock-encoding: %q is none of gzip, deflate, br, identity", v)
	}
	flags := []struct {
		name string
		dst  *bool
	}{
		{"x-mock-ignore-include-usage", &o.ignoreIncludeUsage},
		{"x-mock-no-usage", &o.noUsage},
	}
	for _, f := range flags {
		if v := h.Get(f.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("%s: %q is not a boolean", f.name, v)
			}
			*f.dst = b
		}
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
