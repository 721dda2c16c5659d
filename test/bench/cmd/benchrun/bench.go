package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paddock-csi/paddock/test/bench/load"
	"github.com/paddock-csi/paddock/test/vm"
)

// Paths and endpoints inside the guest.
const (
	export     = "/srv/nfs/a"           // server-local path of the export
	source     = "127.0.0.1:/srv/nfs/a" // what the driver and the floors mount
	floorMnt   = "/mnt/floor-a"         // a plain mount of the export for the floors
	ctrlSock   = "/run/paddock/ctrl.sock"
	nodeSock   = "/run/paddock/node.sock"
	provSock   = "/run/paddock/prov.sock"
	ctrl1Sock  = "/run/paddock/ctrl1.sock"
	targetBase = "/var/lib/kubelet/pods/bench"
	floorTgt   = "/var/lib/floor-targets"
	trashDir   = export + "/.paddock/trash"
)

var params = "server=127.0.0.1,share=" + export

type bench struct {
	g      *vm.Guest
	c      config
	sz     sizes
	resDir string // host path of the results dir (inside the guest dir)
	gres   string // the same dir seen from the guest
	out    io.Writer

	facts_   machineFacts
	rows     []row
	notes    []string
	profiles []string
	commands []string
	wall     time.Duration

	ctrlPID, nodePID int
}

type machineFacts struct {
	HostCPUs    int
	HostKernel  string
	HostCPU     string
	GuestKernel string
	GuestMemMB  int
	GuestCPUs   int
	QEMU        string
	Paddock     string
	Date        time.Time
	LoadStart   string // host /proc/loadavg when the run began and ended: other work on
	LoadEnd     string // the host slows the guest unevenly and adds noise
}

// exec runs argv in the guest, streaming its output to stderr (progress),
// and fails on a non-zero exit.
func (b *bench) exec(ctx context.Context, argv ...string) (string, error) {
	res, err := b.g.Exec(ctx, argv...)
	if err != nil {
		return "", err
	}
	if res.ExitCode != 0 {
		return res.Stdout, fmt.Errorf("%q exited %d: %s%s", argv, res.ExitCode, tailStr(res.Stdout, 800), tailStr(res.Stderr, 1500))
	}
	return res.Stdout, nil
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// csiload runs /host/csiload in the guest with -json written to the
// results dir under name, echoes its table, and returns the report.
// Exit status 1 (some ops failed) still returns the report; the row
// builder shows the errors.
func (b *bench) csiload(ctx context.Context, name string, args ...string) (*load.Report, error) {
	argv := append([]string{"/host/csiload"}, args...)
	argv = append(argv, "-json", b.gres+"/"+name+".json")
	b.commands = append(b.commands, strings.Join(argv, " "))
	logf("[%s] %s", name, strings.Join(argv[1:], " "))
	res, err := b.g.ExecStream(ctx, vm.ExecRequest{Argv: argv}, b.out, os.Stderr)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 && res.ExitCode != load.ExitOpErrs {
		return nil, fmt.Errorf("csiload %s exited %d", name, res.ExitCode)
	}
	rep, err := load.ReadReport(filepath.Join(b.resDir, name+".json"))
	if err != nil {
		return nil, err
	}
	if n := rep.Errors(); n > 0 {
		b.notes = append(b.notes, fmt.Sprintf("`%s`: %d ops failed; first error: %s", name, n, firstErr(rep)))
	}
	return rep, nil
}

func firstErr(r *load.Report) string {
	for _, o := range r.Ops {
		if o.FirstError != "" {
			return o.FirstError
		}
	}
	return ""
}

// op returns the stats of op kind name in r (zero if missing).
func op(r *load.Report, name string) load.OpStats {
	if r == nil {
		return load.OpStats{}
	}
	for _, o := range r.Ops {
		if o.Op == name {
			return o
		}
	}
	return load.OpStats{}
}

func (b *bench) facts(ctx context.Context) error {
	f := machineFacts{GuestMemMB: b.c.mem, Date: time.Now().UTC(), HostCPUs: numCPU()}
	f.HostKernel = readTrim("/proc/sys/kernel/osrelease")
	f.LoadStart = readTrim("/proc/loadavg")
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(cpu), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, v, _ := strings.Cut(l, ":")
				f.HostCPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := runHost("qemu-system-x86_64", "--version"); err == nil {
		f.QEMU = strings.SplitN(strings.TrimSpace(out), "\n", 2)[0]
	}
	out, err := b.exec(ctx, "uname", "-r")
	if err != nil {
		return err
	}
	f.GuestKernel = strings.TrimSpace(out)
	if out, err := b.exec(ctx, "nproc"); err == nil {
		f.GuestCPUs, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	if out, err := b.exec(ctx, "/host/paddock", "-version"); err == nil {
		f.Paddock = strings.TrimSpace(out)
	}
	b.facts_ = f
	return nil
}

// spawnPaddock starts paddock in the guest under name and returns its pid
// once its socket exists.
func (b *bench) spawnPaddock(ctx context.Context, name, sock string, args ...string) (int, error) {
	pidFile := "/run/paddock/" + name + ".pid"
	cmd := "mkdir -p /run/paddock && echo $$ > " + pidFile + " && exec /host/paddock " + strings.Join(args, " ")
	b.commands = append(b.commands, "/host/paddock "+strings.Join(args, " "))
	if err := b.g.Spawn(ctx, name, []string{"/bin/sh", "-c", cmd}, nil); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := b.g.Exec(ctx, "/bin/sh", "-c", "test -S "+sock+" && cat "+pidFile)
		if err != nil {
			return 0, err
		}
		if res.ExitCode == 0 {
			return strconv.Atoi(strings.TrimSpace(res.Stdout))
		}
		if running, code, _ := b.g.SpawnStatus(ctx, name); !running {
			log, _ := b.g.Exec(ctx, "tail", "-n", "30", "/tmp/spawn/"+name+".log")
			return 0, fmt.Errorf("paddock %s exited with %d:\n%s", name, code, log.Stdout)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("paddock %s: no socket %s after 60s", name, sock)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *bench) stopPaddock(ctx context.Context, name string) {
	_ = b.g.Kill(ctx, name, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if running, _, err := b.g.SpawnStatus(ctx, name); err != nil || !running {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = b.g.Kill(ctx, name, syscall.SIGKILL)
}

// rss reads VmRSS/VmHWM of pid in the guest (csiload rss, JSON kept).
func (b *bench) rss(ctx context.Context, name string, pid int) (load.ProcMem, error) {
	argv := []string{"/host/csiload", "rss", "-pid", strconv.Itoa(pid), "-json", b.gres + "/" + name + ".json"}
	b.commands = append(b.commands, strings.Join(argv, " "))
	if _, err := b.exec(ctx, argv...); err != nil {
		return load.ProcMem{}, err
	}
	var r load.ProcMemReport
	bs, err := os.ReadFile(filepath.Join(b.resDir, name+".json"))
	if err != nil {
		return load.ProcMem{}, err
	}
	if err := json.Unmarshal(bs, &r); err != nil {
		return load.ProcMem{}, err
	}
	logf("[%s] VmRSS %d KiB, VmHWM %d KiB", name, r.VmRSSKiB, r.VmHWMKiB)
	return r.ProcMem, nil
}

func (b *bench) runAll(ctx context.Context) error {
	sz, w := b.sz, strconv.Itoa(b.sz.Workers)
	// A plain mount of the export for the floors, as an admin would make it.
	if _, err := b.exec(ctx, "mkdir", "-p", floorMnt, targetBase, floorTgt, "/var/lib/paddock"); err != nil {
		return err
	}
	if _, err := b.exec(ctx, "mount", "-t", "nfs", source, floorMnt); err != nil {
		return err
	}
	mounts, _ := b.exec(ctx, "grep", " nfs", "/proc/mounts")
	b.notes = append(b.notes, "Floor mount (default options, as the driver mounts): `"+strings.TrimSpace(mounts)+"`")

	var err error
	b.ctrlPID, err = b.spawnPaddock(ctx, "ctrl", ctrlSock, "--mode=controller", "--endpoint=unix://"+ctrlSock,
		"--work-dir=/var/lib/paddock", "--node-id=paddock-guest")
	if err != nil {
		return err
	}
	b.nodePID, err = b.spawnPaddock(ctx, "node", nodeSock, "--mode=node", "--endpoint=unix://"+nodeSock, "--node-id=paddock-guest")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let both settle before the idle sample
	ctrlIdle, err := b.rss(ctx, "rss-controller-idle", b.ctrlPID)
	if err != nil {
		return err
	}
	nodeIdle, err := b.rss(ctx, "rss-node-idle", b.nodePID)
	if err != nil {
		return err
	}
	b.add(row{fig: "node VmHWM, idle", value: mib(nodeIdle.VmHWMKiB), target: "< 20 MiB", met: tri(nodeIdle.VmHWMKiB < 20*1024), group: "rss"})
	b.add(row{fig: "controller VmHWM, idle", value: mib(ctrlIdle.VmHWMKiB), target: "—", met: "", group: "rss"})

	ep := "unix://" + ctrlSock
	// Warm-up: mounts the export in the controller's workspace and creates
	// the metadata area, so the timed runs see the steady state.
	if _, err := b.csiload(ctx, "warmup", "-endpoint", ep, "-scenario", "create-delete", "-n", "10", "-workers", "1",
		"-params", params, "-access-mode", "RWX"); err != nil {
		return err
	}

	if b.c.section("crud") {
		if err := b.crud(ctx, ep, sz, w); err != nil {
			return err
		}
	}
	if b.c.section("publish") {
		if err := b.publish(ctx, ep, sz, w); err != nil {
			return err
		}
	}
	if b.c.section("reap") {
		if err := b.reap(ctx, ep, sz); err != nil {
			return err
		}
	}
	if b.c.section("scale") {
		if err := b.scale(ctx, ep, sz); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// The volumes it made are on its own export: the rest can go on.
			b.add(row{fig: "CreateVolume/DeleteVolume at 10 and 10000 volumes on the export", value: "not measured: " + oneLine(err.Error()), group: "scale"})
			logf("scale section failed: %v", err)
		}
	}
	if b.c.section("quota") {
		if err := b.quota(ctx, sz); err != nil {
			if ctx.Err() != nil {
				return err
			}
			b.add(row{fig: "CreateVolume p50 with enforced capacity (quota=enforce) vs without, same XFS export", value: "not measured: " + oneLine(err.Error()), group: "quota"})
			logf("quota section failed: %v", err)
		}
	}
	// The PVC figure runs its own controller; stop these so the guest CPU
	// is the provisioner's alone.
	b.stopPaddock(ctx, "ctrl")
	b.stopPaddock(ctx, "node")
	if b.c.section("pvc") {
		if b.c.noCluster {
			b.add(row{fig: fmt.Sprintf("%d PVCs to Bound, embedded provisioner", sz.PVCs), value: "not measured: -no-cluster", group: "pvc"})
		} else if err := b.pvc(ctx, sz); err != nil {
			b.add(row{fig: fmt.Sprintf("%d PVCs to Bound, embedded provisioner", sz.PVCs), value: "not measured: " + oneLine(err.Error()), group: "pvc"})
			logf("pvc figure failed: %v", err)
		}
	}
	return nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// crud: CreateVolume/DeleteVolume sequential and with workers, against
// mkdir+chmod, rename and mount+mkdir+umount; controller RSS after 1000
// volumes and under the parallel load.
func (b *bench) crud(ctx context.Context, ep string, sz sizes, w string) error {
	seqIDs, parIDs := b.gres+"/ids-seq.json", b.gres+"/ids-par.json"
	seqN, parN := strconv.Itoa(sz.Seq), strconv.Itoa(sz.Par)

	info, err := b.csiload(ctx, "getplugininfo-seq", "-endpoint", ep, "-scenario", "info", "-n", seqN, "-workers", "1")
	if err != nil {
		return err
	}
	// Each sequential phase runs between two readings of the guest's NFS
	// client counters: round trips per op explain most of the latency.
	var create1, delete1, mk1, rn1 *load.Report
	rpcC, err := b.counted(ctx, func() (err error) {
		create1, err = b.csiload(ctx, "create-seq", "-endpoint", ep, "-scenario", "create", "-n", seqN, "-workers", "1",
			"-params", params, "-access-mode", "RWX", "-ids", seqIDs)
		return err
	})
	if err != nil {
		return err
	}
	rpcD, err := b.counted(ctx, func() (err error) {
		delete1, err = b.csiload(ctx, "delete-seq", "-endpoint", ep, "-scenario", "delete", "-ids", seqIDs, "-workers", "1")
		return err
	})
	if err != nil {
		return err
	}
	// Let the reaper's sweeps (kicked by every delete) finish before the
	// floors run.
	time.Sleep(3 * time.Second)
	rpcM, err := b.counted(ctx, func() (err error) {
		mk1, err = b.csiload(ctx, "floor-mkdir-chmod-seq", "floor", "-kind", "mkdir-chmod", "-dir", floorMnt, "-n", seqN, "-workers", "1")
		return err
	})
	if err != nil {
		return err
	}
	rpcR, err := b.counted(ctx, func() (err error) {
		rn1, err = b.csiload(ctx, "floor-rename-seq", "floor", "-kind", "rename", "-dir", floorMnt, "-n", seqN, "-workers", "1")
		return err
	})
	if err != nil {
		return err
	}
	mmu, err := b.csiload(ctx, "floor-mount-mkdir-umount-seq", "floor", "-kind", "mount-mkdir-umount", "-source", source,
		"-n", strconv.Itoa(sz.MountMkdir), "-workers", "1", "-target-dir", "/tmp")
	if err != nil {
		return err
	}
	gi := op(info, load.OpGetPluginInfo)
	b.add(row{fig: "GetPluginInfo p50 (one gRPC round trip, no work)", value: msStr(gi.P50Ms), group: "crud",
		note: "the part of every RPC below that is gRPC, not filesystem"})
	// The floors' untimed setup and cleanup also make RPCs: leave out the
	// REMOVE (rmdir cleanup) of mkdir-chmod, and the CREATE (setup mkdir)
	// and REMOVE (cleanup) of rename.
	mkTimed := rpcM.total - rpcM.by["REMOVE"]
	rnTimed := rpcR.total - rpcR.by["REMOVE"] - rpcR.by["CREATE"]
	nSeq := float64(sz.Seq)
	rc := row{fig: "NFS round trips per CreateVolume", value: fmt.Sprintf("%.1f", float64(rpcC.total)/nSeq),
		floor: fmt.Sprintf("%.1f mkdir+chmod", float64(mkTimed)/nSeq), group: "crud",
		note: "CreateVolume: " + rpcC.perOp(sz.Seq) + "; floor (incl. untimed cleanup): " + rpcM.perOp(sz.Seq)}
	if mkTimed > 0 {
		rc.ratio = fmt.Sprintf("%.1f×", float64(rpcC.total)/float64(mkTimed))
	}
	b.add(rc)
	rd := row{fig: "NFS round trips per DeleteVolume (incl. the reaper sweeps it kicks)", value: fmt.Sprintf("%.1f", float64(rpcD.total)/nSeq),
		floor: fmt.Sprintf("%.1f rename", float64(rnTimed)/nSeq), group: "crud",
		note: "DeleteVolume: " + rpcD.perOp(sz.Seq) + "; floor (incl. untimed setup/cleanup): " + rpcR.perOp(sz.Seq)}
	if rnTimed > 0 {
		rd.ratio = fmt.Sprintf("%.1f×", float64(rpcD.total)/float64(rnTimed))
	}
	b.add(rd)

	createP, err := b.csiload(ctx, "create-par", "-endpoint", ep, "-scenario", "create", "-n", parN, "-workers", w,
		"-params", params, "-access-mode", "RWX", "-ids", parIDs, "-rss-pid", strconv.Itoa(b.ctrlPID))
	if err != nil {
		return err
	}
	after, err := b.rss(ctx, "rss-controller-after-1000", b.ctrlPID)
	if err != nil {
		return err
	}
	// Idle for a moment with the volumes in place: what a controller holding
	// them costs at rest (the HWM above includes the burst that made them).
	time.Sleep(3 * time.Second)
	rest, err := b.rss(ctx, "rss-controller-rest-1000", b.ctrlPID)
	if err != nil {
		return err
	}
	deleteP, err := b.csiload(ctx, "delete-par", "-endpoint", ep, "-scenario", "delete", "-ids", parIDs, "-workers", w,
		"-rss-pid", strconv.Itoa(b.ctrlPID))
	if err != nil {
		return err
	}
	mkP, err := b.csiload(ctx, "floor-mkdir-chmod-par", "floor", "-kind", "mkdir-chmod", "-dir", floorMnt, "-n", parN, "-workers", w)
	if err != nil {
		return err
	}
	rnP, err := b.csiload(ctx, "floor-rename-par", "floor", "-kind", "rename", "-dir", floorMnt, "-n", parN, "-workers", w)
	if err != nil {
		return err
	}

	cs, ds := op(create1, load.OpCreateVolume), op(delete1, load.OpDeleteVolume)
	b.add(ratioRow("CreateVolume p50, sequential", cs, cs.P50Ms, "mkdir+chmod", op(mk1, "mkdir+chmod").P50Ms, 3, "≤ 3× mkdir+chmod", "crud"))
	mm := op(mmu, "mount+mkdir+umount")
	r := ratioRow("CreateVolume p50 vs per-call mount, sequential", cs, cs.P50Ms, "mount+mkdir+umount", mm.P50Ms, 0, "≥ 10× faster", "crud")
	if cs.P50Ms > 0 && mm.P50Ms > 0 {
		speed := mm.P50Ms / cs.P50Ms
		r.ratio = fmt.Sprintf("%.1f× faster", speed)
		r.met = tri(speed >= 10)
	}
	b.add(r)
	b.add(ratioRow("DeleteVolume p50, sequential", ds, ds.P50Ms, "rename", op(rn1, "rename").P50Ms, 3, "≤ 3× rename", "crud"))

	cp, dp := op(createP, load.OpCreateVolume), op(deleteP, load.OpDeleteVolume)
	mkp, rnp := op(mkP, "mkdir+chmod"), op(rnP, "rename")
	b.add(ratioRow("CreateVolume p50, "+w+" workers", cp, cp.P50Ms, "mkdir+chmod", mkp.P50Ms, 3, "≤ 3× mkdir+chmod", "crud"))
	b.add(ratioRow("DeleteVolume p50, "+w+" workers", dp, dp.P50Ms, "rename", rnp.P50Ms, 3, "≤ 3× rename", "crud"))
	b.add(throughputRow("CreateVolume throughput, "+w+" workers", cp, mkp))
	b.add(throughputRow("DeleteVolume throughput, "+w+" workers", dp, rnp))
	b.add(throughputRow("CreateVolume throughput, sequential", cs, op(mk1, "mkdir+chmod")))

	b.add(row{fig: fmt.Sprintf("controller VmHWM after %d volumes exist", sz.Par), value: mib(after.VmHWMKiB),
		target: "< 60 MiB", met: tri(after.VmHWMKiB < 60*1024), group: "rss",
		note: fmt.Sprintf("VmRSS %s right after, %s after 3 s at rest", mib(after.VmRSSKiB), mib(rest.VmRSSKiB))})
	if createP != nil && createP.RSS != nil && deleteP != nil && deleteP.RSS != nil {
		peak := max(createP.RSS.PeakVmRSSKiB, createP.RSS.VmHWMKiB, deleteP.RSS.PeakVmRSSKiB, deleteP.RSS.VmHWMKiB)
		b.add(row{fig: "controller peak RSS under " + w + "-worker create+delete", value: mib(peak), target: "—", group: "rss"})
	}
	return nil
}

// publish: NodePublishVolume/NodeUnpublishVolume of one volume to N targets
// against mount/umount of the same subdirectory.
func (b *bench) publish(ctx context.Context, ep string, sz sizes, w string) error {
	ids := b.gres + "/ids-publish.json"
	if _, err := b.csiload(ctx, "publish-volume", "-endpoint", ep, "-scenario", "create", "-n", "1", "-params", params,
		"-access-mode", "RWX", "-ids", ids); err != nil {
		return err
	}
	vl, err := load.ReadVolumeList(filepath.Join(b.resDir, "ids-publish.json"))
	if err != nil || len(vl.Volumes) != 1 {
		return fmt.Errorf("publish volume: %v (%d volumes)", err, len(vl.Volumes))
	}
	v := vl.Volumes[0]
	var kv []string
	for k, val := range v.VolumeContext {
		kv = append(kv, k+"="+val)
	}
	sort.Strings(kv)
	subDir := v.VolumeContext["subDir"]
	if subDir == "" {
		return fmt.Errorf("volume context %v has no subDir", v.VolumeContext)
	}
	volSource := source + "/" + subDir
	nep := "unix://" + nodeSock
	n := strconv.Itoa(sz.Publish)
	pub := func(name, workers string, rss bool) (*load.Report, error) {
		args := []string{"-endpoint", nep, "-scenario", "publish", "-n", n, "-workers", workers, "-target-dir", targetBase,
			"-access-mode", "RWX", "-volume-id", v.VolumeID}
		if len(kv) > 0 {
			args = append(args, "-volume-context", strings.Join(kv, ","))
		}
		if rss {
			args = append(args, "-rss-pid", strconv.Itoa(b.nodePID))
		}
		return b.csiload(ctx, name, args...)
	}
	p1, err := pub("publish-seq", "1", false)
	if err != nil {
		return err
	}
	f1, err := b.csiload(ctx, "floor-mount-umount-seq", "floor", "-kind", "mount-umount", "-source", volSource, "-n", n,
		"-workers", "1", "-target-dir", floorTgt)
	if err != nil {
		return err
	}
	pp, err := pub("publish-par", w, true)
	if err != nil {
		return err
	}
	fp, err := b.csiload(ctx, "floor-mount-umount-par", "floor", "-kind", "mount-umount", "-source", volSource, "-n", n,
		"-workers", w, "-target-dir", floorTgt)
	if err != nil {
		return err
	}
	ps, us := op(p1, load.OpNodePublishVolume), op(p1, load.OpNodeUnpublishVolume)
	b.add(ratioRow("NodePublishVolume p50, sequential ("+n+" targets)", ps, ps.P50Ms, "mount -t nfs", op(f1, "mount").P50Ms, 1.3, "≤ 1.3× mount", "publish"))
	b.add(ratioRow("NodeUnpublishVolume p50, sequential", us, us.P50Ms, "umount", op(f1, "umount").P50Ms, 0, "—", "publish"))
	pps, pus := op(pp, load.OpNodePublishVolume), op(pp, load.OpNodeUnpublishVolume)
	b.add(ratioRow("NodePublishVolume p50, "+w+" workers", pps, pps.P50Ms, "mount -t nfs", op(fp, "mount").P50Ms, 1.3, "≤ 1.3× mount", "publish"))
	b.add(ratioRow("NodeUnpublishVolume p50, "+w+" workers", pus, pus.P50Ms, "umount", op(fp, "umount").P50Ms, 0, "—", "publish"))
	b.add(throughputRow("NodePublishVolume throughput, "+w+" workers", pps, op(fp, "mount")))
	if pp != nil && pp.RSS != nil {
		b.add(row{fig: "node peak RSS under " + w + "-worker publish/unpublish", value: mib(max(pp.RSS.PeakVmRSSKiB, pp.RSS.VmHWMKiB)), target: "—", group: "rss"})
	}
	_, err = b.csiload(ctx, "publish-volume-delete", "-endpoint", ep, "-scenario", "delete", "-ids", ids)
	return err
}

// reap: DeleteVolume of a volume holding TreeFiles files and the time until
// the reaper has removed it, against rm -rf of an equal tree on the same mount.
func (b *bench) reap(ctx context.Context, ep string, sz sizes) error {
	ids := b.gres + "/ids-tree.json"
	if _, err := b.csiload(ctx, "tree-volume", "-endpoint", ep, "-scenario", "create", "-n", "1", "-params", params,
		"-access-mode", "RWX", "-ids", ids); err != nil {
		return err
	}
	vl, err := load.ReadVolumeList(filepath.Join(b.resDir, "ids-tree.json"))
	if err != nil || len(vl.Volumes) != 1 {
		return fmt.Errorf("tree volume: %v", err)
	}
	subDir := vl.Volumes[0].VolumeContext["subDir"]
	if subDir == "" {
		return fmt.Errorf("volume context %v has no subDir", vl.Volumes[0].VolumeContext)
	}
	files := strconv.Itoa(sz.TreeFiles)
	// Filled on the server side (tmpfs), untimed: the controller's NFS client
	// has nothing of it cached, exactly like the floor's trees below.
	mt, err := b.csiload(ctx, "tree-fill", "floor", "-kind", "make-tree", "-dir", export+"/"+subDir+"/data", "-files", files, "-workers", "2")
	if err != nil {
		return err
	}
	items := op(mt, "make-tree").Items + 1
	rp, err := b.csiload(ctx, "reap", "reap", "-endpoint", ep, "-ids", ids, "-trash", trashDir, "-items", strconv.Itoa(items))
	if err != nil {
		return err
	}
	rf, err := b.csiload(ctx, "floor-rm-rf", "floor", "-kind", "rm-rf", "-dir", floorMnt, "-build-dir", export, "-files", files, "-workers", "2")
	if err != nil {
		return err
	}
	del, reaped := op(rp, load.OpDeleteVolume), op(rp, load.OpReaped)
	rm, ra := op(rf, "rm -rf"), op(rf, "os.RemoveAll")
	rd := ratioRow("DeleteVolume of a "+files+"-file volume", del, del.P50Ms, "rm -rf of the same size", rm.P50Ms, 0, "—", "reap")
	if d1, err := load.ReadReport(filepath.Join(b.resDir, "delete-seq.json")); err == nil {
		rd.note = fmt.Sprintf("O(1): an empty volume's DeleteVolume p50 was %s; the rename floor %s", msStr(op(d1, load.OpDeleteVolume).P50Ms), msStr(b.floorP50("rename")))
	}
	b.add(rd)
	r := ratioRow("reaper: DeleteVolume → trash empty ("+files+" files)", reaped, reaped.P50Ms, "rm -rf", rm.P50Ms, 1, "≤ 1× rm -rf", "reap")
	r.note = fmt.Sprintf("os.RemoveAll of the same tree: %s ms (%.2f×)", f1(ra.P50Ms), safeDiv(reaped.P50Ms, ra.P50Ms))
	b.add(r)

	// The same with one reaper worker: on this testbed client and server
	// share one emulated CPU, so parallel removal cannot hide latency and
	// only adds scheduling; this separates Paddock's per-entry cost from
	// its concurrency.
	if _, err := b.spawnPaddock(ctx, "ctrl1", ctrl1Sock, "--mode=controller", "--endpoint=unix://"+ctrl1Sock,
		"--work-dir=/var/lib/paddock-1", "--node-id=paddock-guest", "--reap-workers=1"); err != nil {
		return err
	}
	defer b.stopPaddock(ctx, "ctrl1")
	ep1 := "unix://" + ctrl1Sock
	ids1 := b.gres + "/ids-tree1.json"
	if _, err := b.csiload(ctx, "tree1-volume", "-endpoint", ep1, "-scenario", "create", "-n", "1", "-params", params,
		"-access-mode", "RWX", "-ids", ids1); err != nil {
		return err
	}
	vl1, err := load.ReadVolumeList(filepath.Join(b.resDir, "ids-tree1.json"))
	if err != nil || len(vl1.Volumes) != 1 {
		return fmt.Errorf("tree volume: %v", err)
	}
	if _, err := b.csiload(ctx, "tree1-fill", "floor", "-kind", "make-tree", "-dir", export+"/"+vl1.Volumes[0].VolumeContext["subDir"]+"/data",
		"-files", files, "-workers", "2"); err != nil {
		return err
	}
	rp1, err := b.csiload(ctx, "reap-1worker", "reap", "-endpoint", ep1, "-ids", ids1, "-trash", trashDir, "-items", strconv.Itoa(items))
	if err != nil {
		return err
	}
	reaped1 := op(rp1, load.OpReaped)
	b.add(ratioRow("reaper with --reap-workers=1 ("+files+" files)", reaped1, reaped1.P50Ms, "rm -rf", rm.P50Ms, 0, "—", "reap"))
	return nil
}

// floorP50 finds the p50 of a floor op already measured (by its op name)
// in the sequential floors.
func (b *bench) floorP50(opName string) float64 {
	rep, err := load.ReadReport(filepath.Join(b.resDir, "floor-"+opName+"-seq.json"))
	if err != nil {
		return 0
	}
	return op(rep, opName).P50Ms
}

func numCPU() int {
	n := 0
	bs, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(bs), "\n") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return n
}

func readTrim(p string) string {
	bs, _ := os.ReadFile(p)
	return strings.TrimSpace(string(bs))
}
