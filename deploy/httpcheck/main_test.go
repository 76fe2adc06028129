package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok\n"))
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			http.Error(w, "not serving", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name     string
		args     []string
		want     int
		wantText string // in stderr
	}{
		{"healthy", []string{srv.URL + "/healthz"}, 0, ""},
		{"unhealthy status", []string{srv.URL + "/readyz"}, 1, "503"},
		{"connection refused", []string{closed.URL + "/healthz"}, 1, "refused"},
		{"timeout", []string{"-timeout", "50ms", srv.URL + "/slow"}, 1, "deadline exceeded"},
		{"no URL", nil, 1, "usage"},
		{"two URLs", []string{srv.URL, srv.URL}, 1, "usage"},
		{"unknown flag", []string{"-x", srv.URL}, 1, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(tt.args, &stderr); got != tt.want {
				t.Errorf("run(%q): got exit %d, want %d (stderr %q)", tt.args, got, tt.want, stderr.String())
			}
			if tt.wantText == "" && stderr.Len() > 0 {
				t.Errorf("stderr: got %q, want nothing", stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantText) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr.String(), tt.wantText)
			}
		})
	}
}
