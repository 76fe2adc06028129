package server

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPanicsAreRecovered(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	boom := func(any, grpc.ServerStream) error { panic("boom") }
	err := recoverStream(m, zap.NewNop())(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x"}, boom)
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: %v, want Internal", err)
	}
	_, err = recoverUnary(m, zap.NewNop())(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/y"},
		func(context.Context, any) (any, error) { panic("bang") })
	if status.Code(err) != codes.Internal {
		t.Errorf("unary: %v, want Internal", err)
	}
	n, err := testutil.GatherAndCount(reg, "tokengate_panics_total")
	if err != nil || n != 1 {
		t.Fatalf("panics metric: %d series, %v", n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "tokengate_panics_total" && mf.GetMetric()[0].GetCounter().GetValue() != 2 {
			t.Errorf("tokengate_panics_total = %v, want 2", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}
