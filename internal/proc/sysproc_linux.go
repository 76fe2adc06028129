package proc

import "syscall"

// sysProcAttr puts the child in a process group of its own and, with
// killWithParent, has the kernel SIGKILL it when its parent dies.
func sysProcAttr(killWithParent bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if killWithParent {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}
