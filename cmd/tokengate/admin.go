package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/limiter"
)

// adminMux serves the admin port: liveness, readiness, metrics and, only
// when the server runs on a fake clock, the hook tests use to move it.
func adminMux(hs *health.Server, reg *prometheus.Registry, clock *limiter.ManualClock) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := hs.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if clock != nil {
		mux.HandleFunc("POST /debug/clock", func(w http.ResponseWriter, r *http.Request) {
			d, err := time.ParseDuration(r.URL.Query().Get("advance"))
			if err != nil || d < 0 {
				http.Error(w, "advance must be a non-negative Go duration", http.StatusBadRequest)
				return
			}
			fmt.Fprintln(w, clock.Advance(d).Format(time.RFC3339Nano))
		})
	}
	return mux
}
