// Command pause holds a pod's namespaces open for the real node of hack/localcluster: the
// container runtime starts it first in every pod (the "sandbox"), and the pod's containers
// join its namespaces. It does nothing until SIGTERM or SIGINT. As the first process of a pod
// that shares its process namespace, it also reaps the orphans that are reparented to it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case sig := <-stop:
			fmt.Fprintln(os.Stderr, "pause:", sig)
			return
		case <-children:
			reap()
		}
	}
}

// reap collects every child that has exited, so that none stays a zombie.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
