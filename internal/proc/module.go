package proc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
)

// ModuleRoot finds the module's root by walking up from the working
// directory to go.mod, so tests and tools run from any directory inside
// the module.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("proc: no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort asks the kernel for a loopback port nobody uses. It is free
// when this returns; another process could take it before the child
// binds it, which on loopback is rare and only makes the start fail,
// loudly. It is for children that cannot report a port they chose
// (redis-server, Envoy), and for an address nothing listens on.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
