package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestClusterNetErrorsAreFinal checks the hooks clusterOnError puts on a
// Cluster client: a network error leaves a node wrapped so go-redis's
// redirect loop does not send the call again, and comes out of the
// cluster client as it went in; Redis's replies (MOVED, ASK, TRYAGAIN
// and the rest), the client's closing and the caller's own end are left
// to go-redis. TestRedisClusterFaults (e2e) is the proof under a real
// failover.
func TestClusterNetErrorsAreFinal(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name string
		err  error
		net  bool
	}{
		{"eof", io.EOF, true},
		{"dial", dial, true},
		{"wrapped", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"redis reply", redis.Nil, false},
		{"closed client", redis.ErrClosed, false},
		{"deadline", context.DeadlineExceeded, false},
		{"canceled", context.Canceled, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		node := finalNetErrors{}.ProcessHook(func(context.Context, redis.Cmder) error { return tt.err })
		got := node(context.Background(), nil)
		var f finalError
		if wrapped := errors.As(got, &f); wrapped != tt.net {
			t.Errorf("%s: node hook wrapped %v: %v, want %v", tt.name, tt.err, wrapped, tt.net)
		}
		if tt.net && (errors.Is(got, io.EOF) || errors.Is(got, io.ErrUnexpectedEOF)) {
			t.Errorf("%s: the wrapped error still unwraps to EOF, which go-redis retries", tt.name)
		}
		if !tt.net && !errors.Is(got, tt.err) && got != tt.err {
			t.Errorf("%s: node hook changed %v into %v", tt.name, tt.err, got)
		}
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
		outer := reloadOnNetError{c}.ProcessHook(func(context.Context, redis.Cmder) error { return got })
		if back := outer(context.Background(), nil); back != tt.err {
			t.Errorf("%s: cluster hook returned %v, want %v as it was", tt.name, back, tt.err)
		}
		_ = c.Close()
	}
}
