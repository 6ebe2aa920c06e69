package localcluster

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// attachedProcAttr makes a component its own process group leader and has the kernel kill it
// when we die, even by SIGKILL, so that no test run leaves a control plane behind.
func attachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// setns moves the calling thread into the network namespace f refers to.
func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}
