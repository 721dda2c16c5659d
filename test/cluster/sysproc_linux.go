package cluster

import "syscall"

// Setpgid lets Stop signal a whole process group; Pdeathsig kills the child if
// the test process dies without calling Stop (e.g. go test's timeout panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
