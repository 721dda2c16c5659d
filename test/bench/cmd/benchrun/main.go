// Command benchrun is `make bench`: it boots a QEMU guest with kernel NFS
// (test/vm), runs Paddock in it and measures each figure beside its physical
// floor in the same guest, in the same run, then writes the table (and the
// raw csiload JSON reports) to docs/performance.md and docs/bench/.
//
//	go run ./test/bench/cmd/benchrun -guest-dir=_output/guest -out docs/performance.md [-quick]
//
// The guest dir must hold a static paddock binary (make guest-binaries);
// benchrun builds a static csiload into it itself. The PVC figure also starts
// a control plane on the host (test/cluster) that the guest reaches at
// 10.0.2.2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/paddock-csi/paddock/test/vm"
)

// sizes are the N of every phase; -quick shrinks them for development.
type sizes struct {
	Seq, Par, Workers, MountMkdir, Publish, TreeFiles, PVCs int
	// The scale section: volumes on its export for the low and the high
	// measurement, sequential calls per repetition, repetitions per size.
	ScaleLow, ScaleHigh, ScaleOps, ScaleReps int
}

var full = sizes{Seq: 200, Par: 1000, Workers: 16, MountMkdir: 50, Publish: 100, TreeFiles: 50000, PVCs: 1000,
	ScaleLow: 10, ScaleHigh: 10000, ScaleOps: 50, ScaleReps: 3}
var quick = sizes{Seq: 40, Par: 200, Workers: 16, MountMkdir: 10, Publish: 20, TreeFiles: 5000, PVCs: 100,
	ScaleLow: 10, ScaleHigh: 1000, ScaleOps: 20, ScaleReps: 3}

type config struct {
	guestDir, out, jsonDir string
	mem                    int
	quick, noCluster       bool
	timeout                time.Duration
	only                   string
}

func main() {
	var c config
	flag.StringVar(&c.guestDir, "guest-dir", "_output/guest", "host dir with the static paddock binary, shared at /host in the guest")
	flag.StringVar(&c.out, "out", "docs/performance.md", "markdown report to write (empty: stdout only)")
	flag.StringVar(&c.jsonDir, "json-dir", "", "where the raw JSON reports are copied (default: bench/ next to -out)")
	flag.IntVar(&c.mem, "mem", 2048, "guest memory in MB (the 50 000-file trees live on the guest's tmpfs export)")
	flag.BoolVar(&c.quick, "quick", false, "small N everywhere (development; the report says so)")
	flag.BoolVar(&c.noCluster, "no-cluster", false, "skip the PVC figure (no control plane)")
	flag.StringVar(&c.only, "only", "", "comma-separated subset of sections: crud,publish,reap,scale,quota,pvc (development)")
	flag.DurationVar(&c.timeout, "timeout", 45*time.Minute, "overall time limit")
	flag.Parse()
	if c.jsonDir == "" && c.out != "" {
		c.jsonDir = filepath.Join(filepath.Dir(c.out), "bench")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintf(os.Stderr, "benchrun: %v\n", err)
		os.Exit(1)
	}
}

func (c config) section(name string) bool {
	if c.only == "" {
		return true
	}
	for _, s := range strings.Split(c.only, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

func run(ctx context.Context, c config) error {
	start := time.Now()
	guestDir, err := filepath.Abs(c.guestDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(guestDir, "paddock")); err != nil {
		return fmt.Errorf("%s has no paddock binary (run make guest-binaries): %w", guestDir, err)
	}
	logf("building a static csiload into %s", guestDir)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(guestDir, "csiload"), "./test/bench/cmd/csiload")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building csiload: %w", err)
	}
	resDir := filepath.Join(guestDir, "bench-results")
	if err := os.RemoveAll(resDir); err != nil {
		return err
	}
	if err := os.MkdirAll(resDir, 0o755); err != nil {
		return err
	}

	sz := full
	if c.quick {
		sz = quick
	}
	logf("booting the guest (%d MB, TCG)", c.mem)
	bootStart := time.Now()
	g, err := vm.Start(ctx, vm.Options{ShareDir: guestDir, MemoryMB: c.mem})
	if err != nil {
		return err
	}
	defer g.Stop()
	logf("guest ready in %.1fs (serial log %s)", time.Since(bootStart).Seconds(), g.LogPath())

	b := &bench{g: g, c: c, sz: sz, resDir: resDir, gres: "/host/bench-results", out: os.Stdout}
	if err := b.facts(ctx); err != nil {
		return err
	}
	runErr := b.runAll(ctx)
	b.wall = time.Since(start)
	if runErr != nil {
		logf("run failed: %v\n--- guest serial log (tail) ---\n%s", runErr, g.SerialTail(30))
		b.notes = append(b.notes, fmt.Sprintf("The run stopped early: %v", runErr))
	}
	if err := b.write(); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchrun: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

var _ io.Writer = (*os.File)(nil)
