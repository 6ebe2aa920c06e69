//go:build !linux

package localcluster

import "syscall"

// attachedProcAttr cannot ask the kernel to kill components when we die outside Linux; Stop
// and the signal handling in Main still do.
func attachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
