// Command pause is a pod sandbox's first process, as Kubernetes' own pause image has: it holds the
// pod's namespaces, reaps the children re-parented to it, and exits 0 on SIGTERM or SIGINT. Built
// static in the wrapper module so a node needs no image registry for its sandboxes.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
