// Command vmrun boots a fresh Paddock test guest, runs one command in it with
// its output streamed to this process's stdout/stderr, powers the guest off
// and exits with the command's exit status.
//
//	go run ./test/vm/cmd/vmrun [-share DIR] [-mem MB] [-timeout 30m] [-log FILE] -- CMD ARGS...
//
// Exit status: CMD's status; 124 if -timeout expired; 125 if the guest could
// not be booted or the command could not be run (the serial log tail is
// printed then).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddock-csi/paddock/test/vm"
)

func main() {
	share := flag.String("share", "", "host directory shared at /host in the guest")
	mem := flag.Int("mem", 1024, "guest memory in MB")
	timeout := flag.Duration("timeout", 30*time.Minute, "overall time limit (boot + command)")
	logPath := flag.String("log", "", "serial console log file (default: a temp file, removed on success)")
	var env multiFlag
	flag.Var(&env, "env", "KEY=VALUE passed to the command (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: vmrun [flags] -- CMD ARGS...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	argv := flag.Args()
	if len(argv) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(*share, *mem, *timeout, *logPath, env, argv))
}

func run(share string, mem int, timeout time.Duration, logPath string, env, argv []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	bootCtx, bootCancel := context.WithTimeout(ctx, 5*time.Minute)
	g, err := vm.Start(bootCtx, vm.Options{ShareDir: share, MemoryMB: mem, LogPath: logPath})
	bootCancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmrun: guest failed to boot: %v\n", err)
		return 125
	}
	fmt.Fprintf(os.Stderr, "vmrun: guest ready in %.1fs (serial log %s)\n", time.Since(start).Seconds(), g.LogPath())

	res, err := g.ExecStream(ctx, vm.ExecRequest{Argv: argv, Env: env}, os.Stdout, os.Stderr)
	code := res.ExitCode
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "vmrun: %v\n--- serial log (tail) ---\n%s\n", err, g.SerialTail(40))
		code = 125
	case res.TimedOut || errors.Is(ctx.Err(), context.DeadlineExceeded):
		fmt.Fprintf(os.Stderr, "vmrun: %q timed out after %v\n", argv, timeout)
		code = 124
	case ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "vmrun: interrupted\n")
		code = 130
	}
	if serr := g.Stop(); serr != nil {
		fmt.Fprintf(os.Stderr, "vmrun: stopping guest: %v\n", serr)
	}
	if code == 0 && logPath == "" {
		os.Remove(g.LogPath())
	} else {
		fmt.Fprintf(os.Stderr, "vmrun: exit status %d; serial log kept at %s\n", code, g.LogPath())
	}
	return code
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
