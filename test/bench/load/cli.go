package load

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Exit codes of Main.
const (
	ExitOK     = 0 // every op succeeded
	ExitOpErrs = 1 // the run completed but some ops failed (see the report)
	ExitUsage  = 2 // bad flags, or the run could not be set up
)

const usageText = `csiload: CSI load generator and raw floor measurements

  csiload [-scenario S] -endpoint E [flags]   drive a CSI endpoint
  csiload floor -kind K [flags]                time the raw operations underneath
  csiload rss -pid P [-interval I -duration D] sample a process's VmRSS/VmHWM
  csiload reap -endpoint E -ids F -trash DIR    DeleteVolume, then time until DIR is empty

Scenarios: create-delete, create (needs -ids), delete (needs -ids), publish (needs -target-dir), info (GetPluginInfo only)
Floor kinds: ` + "mkdir-chmod, rename, mount-mkdir-umount, mount-umount, make-tree, rm-rf" + `
Exit status: 0 all ops succeeded, 1 some ops failed, 2 usage or setup error.
Run "csiload -h", "csiload floor -h" or "csiload rss -h" for the flags.
`

// Main is the csiload command; args exclude the program name. It returns
// the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "floor":
			return floorMain(ctx, args[1:], stdout, stderr)
		case "rss":
			return rssMain(ctx, args[1:], stdout, stderr)
		case "reap":
			return reapMain(ctx, args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, usageText)
			return ExitOK
		}
	}
	return csiMain(ctx, args, stdout, stderr)
}

// DefaultPrefix is unique per run (time plus randomness) so that repeated
// runs against one driver never collide with, or idempotently "succeed" on,
// an earlier run's volumes.
func DefaultPrefix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "csiload-" + strconv.FormatInt(time.Now().Unix(), 36) + "-" + hex.EncodeToString(b[:])
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs
}

// parseCSIFlags turns the command line of a CSI run into options and the
// -json path.
func parseCSIFlags(args []string, stderr io.Writer) (CSIOptions, string, error) {
	fs := newFlagSet("csiload", stderr)
	var (
		o                  CSIOptions
		params, volCtx     KVFlag
		mountFlags         ListFlag
		accessMode, capStr string
		jsonPath           string
	)
	fs.StringVar(&o.Endpoint, "endpoint", os.Getenv("CSI_ENDPOINT"), "CSI endpoint: unix:///path or tcp://host:port (default $CSI_ENDPOINT)")
	fs.StringVar(&o.Scenario, "scenario", ScenarioCreateDelete, "create-delete, create, delete, publish or info")
	fs.Var(&params, "params", "CreateVolume parameters k=v,k=v (repeatable; \\, for a literal comma)")
	fs.StringVar(&accessMode, "access-mode", "SINGLE_NODE_WRITER", "CSI access mode enum name (or RWO, ROX, RWX, RWOP)")
	fs.StringVar(&o.FsType, "fs-type", "", "mount volume fs_type")
	fs.Var(&mountFlags, "mount-flags", "mount volume mount_flags a,b (repeatable)")
	fs.StringVar(&capStr, "capacity", "", "CreateVolume required_bytes, e.g. 1Gi (default: no capacity_range)")
	fs.BoolVar(&o.Readonly, "readonly", false, "NodePublishVolume readonly")
	fs.IntVar(&o.N, "n", 10, "volumes to create (create, create-delete) or targets to publish to (publish)")
	fs.IntVar(&o.Workers, "workers", 4, "concurrent RPCs")
	fs.StringVar(&o.Prefix, "prefix", "", "volume and target name prefix, names are PREFIX-i (default csiload-<time>-<random>)")
	fs.StringVar(&o.TargetDir, "target-dir", "", "publish: directory under which the N targets are created")
	fs.StringVar(&o.VolumeID, "volume-id", "", "publish: publish this existing volume instead of creating one")
	fs.Var(&volCtx, "volume-context", "publish: volume_context k=v,k=v of -volume-id")
	fs.StringVar(&o.IDsFile, "ids", "", "volume list file: written by create (and create-delete), read by delete")
	fs.StringVar(&o.PVCNamespace, "pvc-namespace", "", "add csi.storage.k8s.io/pvc/name and pv/name (the volume name) and pvc/namespace (this value) to each CreateVolume, as csi-provisioner --extra-create-metadata does")
	fs.StringVar(&jsonPath, "json", "", "write the JSON report to this file")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "deadline of each RPC")
	fs.IntVar(&o.RSSPID, "rss-pid", 0, "sample this process's VmRSS during the run (e.g. the driver's pid)")
	fs.DurationVar(&o.RSSInterval, "rss-interval", 100*time.Millisecond, "RSS sampling interval")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if fs.NArg() > 0 {
		return o, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.AccessMode, err = ParseAccessMode(accessMode); err != nil {
		return o, "", err
	}
	if o.CapacityBytes, err = ParseSize(capStr); err != nil {
		return o, "", err
	}
	if o.Endpoint == "" {
		return o, "", errors.New("-endpoint is required (or set $CSI_ENDPOINT)")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix()
	}
	o.Params, o.VolumeContext, o.MountFlags = params.M, volCtx.M, mountFlags.L
	if o.VolumeID == "" && len(o.VolumeContext) > 0 {
		return o, "", errors.New("-volume-context needs -volume-id")
	}
	return o, jsonPath, nil
}

func parseFloorFlags(args []string, stderr io.Writer) (FloorOptions, string, error) {
	fs := newFlagSet("csiload floor", stderr)
	var o FloorOptions
	var jsonPath string
	fs.StringVar(&o.Kind, "kind", "", strings.Join(FloorKinds, ", "))
	fs.StringVar(&o.Dir, "dir", "", "working directory, e.g. an NFS export mounted by hand (mkdir-chmod, rename, make-tree, rm-rf)")
	fs.IntVar(&o.N, "n", 100, "iterations")
	fs.IntVar(&o.Workers, "workers", 1, "concurrency")
	fs.StringVar(&o.Prefix, "prefix", "", "name prefix of everything created (default csiload-<time>-<random>)")
	fs.StringVar(&o.Source, "source", "", "mount source server:/export (mount kinds)")
	fs.StringVar(&o.TargetDir, "target-dir", "", "mount-umount: where the N targets go; mount-mkdir-umount: where the temporary mount points go (default $TMPDIR)")
	fs.StringVar(&o.MountType, "mount-type", "nfs", "mount -t TYPE")
	fs.StringVar(&o.MountOpts, "mount-opts", "", "mount -o OPTS")
	fs.IntVar(&o.Files, "files", 10000, "files in the tree (make-tree, rm-rf)")
	fs.StringVar(&o.BuildDir, "build-dir", "", "rm-rf: build the trees here (the server-local path of -dir) instead of through -dir")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "deadline of each exec'd mount/umount/rm")
	fs.BoolVar(&o.Keep, "keep", false, "leave the directories the floor created (default: removed, untimed)")
	fs.StringVar(&jsonPath, "json", "", "write the JSON report to this file")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if fs.NArg() > 0 {
		return o, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix()
	}
	return o, jsonPath, nil
}

func finish(rep *Report, runErr error, jsonPath string, stdout, stderr io.Writer) int {
	if rep != nil {
		if err := rep.WriteText(stdout); err != nil {
			fmt.Fprintf(stderr, "csiload: %v\n", err)
		}
		if jsonPath != "" {
			if err := rep.WriteJSON(jsonPath); err != nil {
				fmt.Fprintf(stderr, "csiload: %v\n", err)
				return ExitUsage
			}
		}
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "csiload: %v\n", runErr)
		return ExitUsage
	}
	if rep.Errors() > 0 {
		return ExitOpErrs
	}
	return ExitOK
}

func csiMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, jsonPath, err := parseCSIFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "csiload: %v\n", err)
		return ExitUsage
	}
	o.Log = stderr
	rep, err := RunCSI(ctx, o)
	return finish(rep, err, jsonPath, stdout, stderr)
}

func floorMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, jsonPath, err := parseFloorFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "csiload floor: %v\n", err)
		return ExitUsage
	}
	o.Log = stderr
	rep, err := RunFloor(ctx, o)
	return finish(rep, err, jsonPath, stdout, stderr)
}

// ProcMemReport is the -json output of a one-shot "csiload rss".
type ProcMemReport struct {
	PID int `json:"pid"`
	ProcMem
}

func rssMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("csiload rss", stderr)
	pid := fs.Int("pid", 0, "process to sample")
	interval := fs.Duration("interval", 100*time.Millisecond, "sampling interval")
	duration := fs.Duration("duration", 0, "sample for this long and report the peak (0: print the current values once)")
	jsonPath := fs.String("json", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if *pid <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "csiload rss: need -pid P and no other arguments")
		return ExitUsage
	}
	var out any
	if *duration <= 0 {
		m, err := ReadProcMem(*pid)
		if err != nil {
			fmt.Fprintf(stderr, "csiload rss: %v\n", err)
			return ExitUsage
		}
		fmt.Fprintf(stdout, "VmRSS %d KiB\nVmHWM %d KiB\n", m.VmRSSKiB, m.VmHWMKiB)
		out = ProcMemReport{PID: *pid, ProcMem: m}
	} else {
		rep := SampleRSS(ctx, *pid, *interval, *duration)
		if rep.Samples == 0 {
			fmt.Fprintf(stderr, "csiload rss: %s\n", rep.Error)
			return ExitUsage
		}
		fmt.Fprintf(stdout, "peak VmRSS %d KiB\nVmHWM %d KiB\nstart VmRSS %d KiB\nend VmRSS %d KiB\nsamples %d\n",
			rep.PeakVmRSSKiB, rep.VmHWMKiB, rep.StartVmRSSKiB, rep.EndVmRSSKiB, rep.Samples)
		if rep.Error != "" {
			// The process went away mid-run; the numbers up to then stand.
			fmt.Fprintf(stderr, "csiload rss: stopped early: %s\n", rep.Error)
		}
		out = rep
	}
	if *jsonPath != "" {
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "csiload rss: %v\n", err)
			return ExitUsage
		}
	}
	return ExitOK
}
