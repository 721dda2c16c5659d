// Command pause is the sandbox container of the test images (registry.paddock.test/pause:e2e),
// doing what the Kubernetes pause container does: it holds the pod's namespaces open by
// sleeping, exits 0 on SIGTERM or SIGINT, and, as PID 1 of a pod with a shared process
// namespace, reaps the zombies reparented to it. Built static by hack/image.sh.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "e2e"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("pause", version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: pause [-v]")
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		switch s {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
			os.Exit(0)
		}
	}
}

// reap collects every exited child; SIGCHLDs coalesce, so one signal may stand for many.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
