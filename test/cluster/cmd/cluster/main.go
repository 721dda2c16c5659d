// Command cluster runs the test control plane of package
// github.com/paddock-csi/paddock/test/cluster in the foreground:
//
//	cluster up -dir D [-san 10.0.2.2]... [-scheduler] [-node NAME]...
//
// Once everything is ready it prints the admin kubeconfig path as the only
// line on stdout (progress goes to stderr), then runs until SIGINT/SIGTERM and
// stops every process it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/paddock-csi/paddock/test/cluster"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintln(os.Stderr, "usage: cluster up -dir D [-san IP|NAME]... [-scheduler] [-node NAME]...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state dir (certs, etcd data, logs, kubeconfig); kept on exit; default a temp dir, removed on exit")
	sched := fs.Bool("scheduler", false, "also run kube-scheduler")
	bin := fs.String("bin", "", "dir with the binaries (default: build them with build.sh)")
	var sans, nodes list
	fs.Var(&sans, "san", "extra IP or DNS name for the apiserver cert (repeatable), e.g. 10.0.2.2 for a QEMU guest")
	fs.Var(&nodes, "node", "create a fake Ready node with this name (repeatable)")
	_ = fs.Parse(os.Args[2:])

	// Signals during startup also abort the startup.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Dir: *dir, ExtraSANs: sans, Scheduler: *sched, BinDir: *bin})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster up:", err)
		os.Exit(1)
	}
	code := 0
	for _, n := range nodes {
		if err := c.AddFakeNode(ctx, n, nil); err != nil {
			fmt.Fprintln(os.Stderr, "cluster up:", err)
			code = 1
		}
	}
	if code == 0 {
		fmt.Fprintf(os.Stderr, "cluster up: ready in %s: apiserver %s, state in %s, binaries in %s\n",
			time.Since(t0).Round(time.Millisecond), c.URL, c.Dir, c.BinDir)
		fmt.Println(c.Kubeconfig)
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "cluster up: stopping")
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster up: stop:", err)
		code = 1
	}
	os.Exit(code)
}
