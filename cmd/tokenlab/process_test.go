package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartProcessFailures(t *testing.T) {
	tests := []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{"exits before ready", filepath.Join(binDir, "openai-mock"), []string{"--completion-tokens", "-1"}, "openai-mock exited before it was ready"},
		{"no such binary", filepath.Join(binDir, "nothing-here"), nil, "start nothing-here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := startProcess(context.Background(), tt.bin, tt.args...)
			if err == nil {
				_ = p.stop()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
		})
	}
}

// TestStartStopProcess checks the ready line's fields and a clean stop.
func TestStartStopProcess(t *testing.T) {
	p, err := startProcess(context.Background(), filepath.Join(binDir, "openai-mock"), "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if addr := p.fields["http"]; !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("ready line field http=%q", addr)
	}
	if err := p.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := p.stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
}
