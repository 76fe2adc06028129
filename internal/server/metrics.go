package server

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/limiter"
)

// metrics are the series of the server around ext_proc: the store, reloads
// and recovered panics. extproc registers its own (decisions, tokens,
// latency); the store errors it meets reach StoreError here.
type metrics struct {
	storeErrors  *prometheus.CounterVec
	storeLatency *prometheus.HistogramVec
	storeDown    prometheus.Gauge
	overflow     prometheus.Counter
	pending      atomic.Pointer[func() int] // the settle-behind queue's Pending, once there is one
	batches      prometheus.Histogram
	reloads      *prometheus.CounterVec
	panics       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_store_errors_total",
			Help: "Limiter store operations that failed, by operation and kind (timeout, connection, unavailable, other).",
		}, []string{"op", "kind"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokengate_store_duration_seconds",
			Help:    "Time of one call to the shared store, by operation.",
			Buckets: []float64{100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
		}, []string{"op"}),
		storeDown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_store_fallback",
			Help: "1 while the shared store is away and store.redis.on_error decides, else 0.",
		}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_settle_overflow_total",
			Help: "Settles the full settle-behind queue refused: each was made in line, before its response, never dropped.",
		}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokengate_settle_batch_size",
			Help:    "Settles sent to the shared store in one round trip, behind the responses.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_config_reloads_total",
			Help: "SIGHUP reloads by result (success, failure); a failure keeps the running config.",
		}, []string{"result"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_panics_total",
			Help: "Panics recovered in gRPC handlers; each is a bug, logged with its stack.",
		}),
	}
	settling := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokengate_settle_pending",
		Help: "Settles queued behind their responses or on their way to the shared store; 0 without one.",
	}, func() float64 {
		if f := m.pending.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	reg.MustRegister(m.storeErrors, m.storeLatency, m.storeDown, m.overflow, m.batches, settling, m.reloads, m.panics)
	// Both results are exported from the start, at 0: a series that
	// appears at 1 on the first failure shows no increase to rate() and
	// increase(), and the alert on failed reloads would miss it.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// storeError counts a failed store operation.
func (m *metrics) storeError(op string, err error) {
	m.storeErrors.WithLabelValues(op, errorKind(err)).Inc()
}

// storeCall records one call to the shared store.
func (m *metrics) storeCall(op string, took time.Duration, err error) {
	m.storeLatency.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		m.storeError(op, err)
	}
}

func (m *metrics) setStoreDown(down bool) {
	v := 0.0
	if down {
		v = 1
	}
	m.storeDown.Set(v)
}

func (m *metrics) reload(ok bool) {
	result := "failure"
	if ok {
		result = "success"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// errorKind sorts store errors for the metric, without unbounded labels.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, limiter.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, io.EOF):
		return "connection"
	}
	return "other"
}
