// Command paddock is the Paddock CSI driver: controller, node, or both in one process.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/registration"
	"github.com/paddock-csi/paddock/pkg/share"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

type flags struct {
	mode, endpoint, nodeID, driverName, workDir, httpEndpoint string
	registrationDir, kubeletRegistrationPath                  string
	idleTimeout, fsTimeout, trashGrace, reapInterval, grace   time.Duration
	reapWorkers, maxStuckCalls                                int
	maxVolumesPerNode                                         int64
	topology                                                  string
	showVersion                                               bool
	kube                                                      kubeFlags
	quota                                                     quotaFlags
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("paddock", flag.ContinueOnError)
	klog.InitFlags(fs)
	host, _ := os.Hostname()
	fs.StringVar(&f.mode, "mode", "all", "CSI services to serve: controller, node or all; or quota-agent, the quota agent on an NFS server host")
	fs.StringVar(&f.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path or tcp://host:port")
	fs.StringVar(&f.nodeID, "node-id", host, "this node's name (node mode)")
	fs.StringVar(&f.driverName, "driver-name", driver.DefaultName, "CSI driver and provisioner name")
	fs.StringVar(&f.workDir, "work-dir", "/var/lib/paddock", "controller: where NFS exports are mounted")
	fs.StringVar(&f.httpEndpoint, "http-endpoint", "", "address for /metrics, /healthz and /readyz, e.g. :9809 (empty: off)")
	fs.DurationVar(&f.idleTimeout, "export-idle-timeout", 5*time.Minute, "controller: unmount an export unused for this long")
	fs.DurationVar(&f.fsTimeout, "fs-timeout", 30*time.Second, "deadline for one blocking NFS call (mount, mkdir, rename, stat)")
	fs.DurationVar(&f.trashGrace, "trash-grace", 0, "controller: keep deleted volumes in the export's trash this long before removing them")
	fs.DurationVar(&f.reapInterval, "reap-interval", time.Hour, "controller: how often known exports are swept for trash and expired archives")
	fs.IntVar(&f.reapWorkers, "reap-workers", 8, "controller: parallel removals per trash sweep")
	fs.DurationVar(&f.grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long calls in flight may take to finish")
	fs.IntVar(&f.maxStuckCalls, "max-stuck-calls", 16, "blocking filesystem calls one NFS server may have in flight (controller: every call on its exports and the reaper's; node: statfs, stat); once all are stuck past their deadline, further calls to it fail at once with Unavailable")
	fs.Int64Var(&f.maxVolumesPerNode, "max-volumes-per-node", 0, "node: volumes ControllerPublishVolume may publish to this node, reported in NodeGetInfo (0: unlimited)")
	fs.StringVar(&f.topology, "topology", "", "node: accessible topology reported in NodeGetInfo, key=value[,key=value] (e.g. topology.kubernetes.io/zone=a)")
	fs.StringVar(&f.registrationDir, "registration-dir", "", "node: kubelet's plugins_registry directory as mounted here (e.g. /var/lib/kubelet/plugins_registry); Paddock registers itself with kubelet through a socket there, in place of node-driver-registrar, and /healthz fails until kubelet accepts it (empty: off)")
	fs.StringVar(&f.kubeletRegistrationPath, "kubelet-registration-path", "", "node, with --registration-dir: the CSI socket path kubelet dials, as the host sees it (default: the path of a unix:// --endpoint, right only when the plugin sees host paths)")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	f.kube.register(fs)
	f.quota.register(fs)
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if f.showVersion {
		fmt.Println("paddock", version)
		return
	}
	setUmask(os.Args[1:])
	if err := run(f); err != nil {
		klog.ErrorS(err, "Exiting")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(f flags) error {
	if f.mode == modeQuotaAgent {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return runQuotaAgent(ctx, f)
	}
	topology, err := driver.ParseTopology(f.topology)
	if err != nil {
		return err
	}
	opts := driver.Options{Name: f.driverName, Version: version, Mode: driver.Mode(f.mode), NodeID: f.nodeID,
		Endpoint: f.endpoint, FSTimeout: f.fsTimeout, MaxVolumesPerNode: f.maxVolumesPerNode, Topology: topology,
		MaxStuckCalls: f.maxStuckCalls}
	if err := opts.Validate(); err != nil {
		return err
	}
	agents, closeAgents, err := f.quota.controllerAgents()
	if err != nil {
		return err
	}
	defer closeAgents()
	opts.QuotaAgents = agents
	regCfg, err := registrationConfig(f)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var healthy func() error // nil: /healthz is always ok
	waitRegistration := func() error { return nil }
	if regCfg != nil {
		reg, err := registration.New(*regCfg)
		if err != nil {
			return err
		}
		healthy = reg.Healthy
		waitRegistration = registerAfterListening(ctx, &opts, reg, stop)
	}
	m := mount.New(f.fsTimeout)

	var ws *share.Workspace
	var wg sync.WaitGroup
	if opts.Mode != driver.ModeNode {
		var err error
		ws, err = share.New(share.Config{WorkDir: f.workDir, IdleTimeout: f.idleTimeout, FSTimeout: f.fsTimeout,
			TrashGrace: f.trashGrace, ReapInterval: f.reapInterval, ReapWorkers: f.reapWorkers, Mounter: m,
			Limiter: mount.NewLimiter(f.maxStuckCalls)})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); ws.Run(ctx) }()
	}
	d, err := driver.New(opts, ws, m)
	if err != nil {
		return err
	}
	if f.httpEndpoint != "" {
		go func() {
			if err := metrics.Serve(ctx, f.httpEndpoint, d.Ready, healthy); err != nil {
				klog.ErrorS(err, "Metrics endpoint failed")
			}
		}()
	}
	if err := f.kube.start(ctx, &wg, d, ws, opts); err != nil {
		return err
	}
	err = d.Serve(ctx, f.grace)
	stop()
	wg.Wait()
	if regErr := waitRegistration(); err == nil {
		err = regErr
	}
	if ws != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 3*f.fsTimeout)
		ws.Wait()
		ws.Close(cctx)
		cancel()
	}
	klog.InfoS("Stopped")
	return err
}
