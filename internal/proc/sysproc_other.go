//go:build !linux

package proc

import "syscall"

// sysProcAttr puts the child in a process group of its own; only Linux
// can tie the child's life to its parent's.
func sysProcAttr(bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
