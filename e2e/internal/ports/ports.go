// Package ports gives the end-to-end tests loopback ports: a free one for
// a server that cannot report the one it chose, and an address nothing
// listens on.
package ports

import (
	"net"
	"strconv"
	"testing"

	"github.com/tokengate/tokengate/internal/proc"
)

// Free is proc.FreePort, failing the test when the kernel has none.
func Free(t testing.TB) int {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Dead is a loopback host:port nothing listens on: a connection to it is
// refused, as to an upstream or a processor that is down.
func Dead(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Free(t)))
}
