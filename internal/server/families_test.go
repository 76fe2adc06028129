package server

import (
	"slices"
	"strings"
	"testing"
)

// TestFamilies checks the list the alert rules and the dashboard are
// checked against: every tokengate_ family is there with its type and
// labels, untouched vectors included, and so are Go's and the process's.
func TestFamilies(t *testing.T) {
	fams, err := Families()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Family{}
	for _, f := range fams {
		byName[f.Name] = f
	}
	want := []Family{
		{"tokengate_requests_total", "counter", []string{"decision", "policy"}},
		{"tokengate_limit_refusals_total", "counter", []string{"limit", "policy"}},
		{"tokengate_cost_micros_total", "counter", []string{"policy"}},
		{"tokengate_tokens_total", "counter", []string{"kind", "policy", "source"}},
		{"tokengate_passthrough_total", "counter", nil},
		{"tokengate_decision_duration_seconds", "histogram", []string{"phase"}},
		{"tokengate_prompt_estimate_error_ratio", "histogram", []string{"api"}},
		{"tokengate_estimates_bounded_total", "counter", nil},
		{"tokengate_unreadable_bodies_total", "counter", []string{"action", "policy", "reason"}},
		{"tokengate_store_errors_total", "counter", []string{"kind", "op"}},
		{"tokengate_store_duration_seconds", "histogram", []string{"op"}},
		{"tokengate_store_fallback", "gauge", nil},
		{"tokengate_settle_overflow_total", "counter", nil},
		{"tokengate_settle_batch_size", "histogram", nil},
		{"tokengate_settle_pending", "gauge", nil},
		{"tokengate_config_reloads_total", "counter", []string{"result"}},
		{"tokengate_panics_total", "counter", nil},
		{"go_goroutines", "gauge", nil},
		{"process_resident_memory_bytes", "gauge", nil},
	}
	for _, w := range want {
		got, ok := byName[w.Name]
		if !ok {
			t.Errorf("%s is missing", w.Name)
			continue
		}
		if got.Type != w.Type || !slices.Equal(got.Labels, w.Labels) {
			t.Errorf("%s: %s %v, want %s %v", w.Name, got.Type, got.Labels, w.Type, w.Labels)
		}
	}
	n := 0
	for _, f := range fams {
		if strings.HasPrefix(f.Name, "tokengate_") {
			n++
		}
	}
	if n != 17 {
		t.Errorf("%d tokengate_ families, want the 17 listed here (a new one belongs in this test and README's list)", n)
	}
}
