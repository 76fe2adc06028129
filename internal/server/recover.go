package server

import (
	"context"
	"runtime/debug"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recoverStream keeps one request's panic from taking every other request
// down with the process: the stream ends with Internal (Envoy then applies
// failure_mode_allow), the panic is logged with its stack and counted.
func recoverStream(m *metrics, log *zap.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(m, log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

func recoverUnary(m *metrics, log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(m, log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

func recovered(m *metrics, log *zap.Logger, method string, r any) error {
	m.panics.Inc()
	log.Error("recovered from a panic in a gRPC handler", zap.String("method", method),
		zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
	return status.Error(codes.Internal, "tokengate: internal error")
}
