//go:build !linux

package localcluster

import (
	"errors"
	"os"
	"syscall"
)

// attachedProcAttr cannot ask the kernel to kill components when we die outside Linux; Stop
// and the signal handling in Main still do.
func attachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// setns exists on Linux only, as does the real node.
func setns(*os.File) error { return errors.New("network namespaces exist on Linux only") }
