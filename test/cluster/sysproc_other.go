//go:build !linux

package cluster

import "syscall"

// Setpgid lets Stop signal a whole process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
