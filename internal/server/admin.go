package server

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter"
)

// withGRPC serves gRPC (the admin API) and HTTP on one port: HTTP/2
// cleartext requests with a gRPC content type go to rpc, the rest to h.
func withGRPC(rpc *grpc.Server, h http.Handler) http.Handler {
	mixed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("content-type"), "application/grpc") {
			rpc.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	return h2c.NewHandler(mixed, &http2.Server{})
}

// adminToken reads the admin API's bearer token from the environment.
func adminToken(c config.Admin) string {
	if c.TokenEnv == "" {
		return ""
	}
	return os.Getenv(c.TokenEnv)
}

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
