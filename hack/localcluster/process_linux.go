package localcluster

import "syscall"

// attachedProcAttr makes a component its own process group leader and has the kernel kill it
// when we die, even by SIGKILL, so that no test run leaves a control plane behind.
func attachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
