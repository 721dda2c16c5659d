//go:build e2e

package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func countMountsAt(t *testing.T, target string) int {
	n := 0
	for _, m := range procMounts(t) {
		if m.Target == target {
			n++
		}
	}
	return n
}

// Scenario 7a: paddock is killed (SIGKILL) between publish and unpublish; after a restart a repeated
// publish is idempotent (nothing stacked) and unpublish still removes the mount.
func TestKillBetweenPublishAndUnpublish(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	vol := createVolume(t, p.Controller, uniq("kill"), class(exportA))
	target := filepath.Join(newDir(t, "kill"), "pod", "mount")
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	mustWrite(t, filepath.Join(target, "before-crash.txt"), "x")

	p.Restart() // SIGKILL, then start again on the same socket and work dir
	if n := countMountsAt(t, target); n != 1 {
		t.Fatalf("%d mounts at %s after the crash, want the pod's 1", n, target)
	}
	publish(t, p.Node, vol, target, mountCap(rwx), false) // kubelet retries after a plugin restart
	if n := countMountsAt(t, target); n != 1 {
		t.Errorf("%d mounts at %s after a repeated publish, want 1", n, target)
	}
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	if n := countMountsAt(t, target); n != 0 {
		t.Errorf("%d mounts at %s after unpublish, want 0", n, target)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("target %s not removed after unpublish: %v", target, err)
	}
	if got := mustRead(t, filepath.Join(exportA, subDirOf(t, vol), "before-crash.txt")); got != "x" {
		t.Errorf("server: content %q", got)
	}
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}

// Scenario 7b: paddock is killed between the rename into the trash and the reaping; restarted with
// the grace lifted and no API access (pure CSI: nothing is kept in the work dir), it knows the export
// again at the first call that uses it, sweeps it at once and empties the trash.
func TestReaperResumesAfterCrash(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all", "--trash-grace=1h")
	name := uniq("resume")
	vol := createVolume(t, p.Controller, name, class(exportA))
	root := filepath.Join(exportA, subDirOf(t, vol))
	for i := 0; i < 1000; i++ {
		mustWrite(t, filepath.Join(root, fmt.Sprintf("d%d/f%d", i%10, i)), "x")
	}
	deleteVolume(t, p.Controller, vol.GetVolumeId())
	time.Sleep(time.Second) // the reaper had its chance; the grace holds it back
	e := trashEntries(exportA, name)
	if len(e) != 1 {
		t.Fatalf("server: trash entries %v, want 1", e)
	}
	if n := len(listing(t, filepath.Join(exportA, ".paddock/trash", e[0]))); n != 1011 {
		t.Errorf("server: trashed tree has %d entries, want 1011", n)
	}

	p.Kill()
	start := time.Now()
	p.Start("--trash-grace=0")
	time.Sleep(2 * time.Second)
	if len(trashEntries(exportA, name)) != 1 {
		t.Fatal("the trash was emptied before any call: the restarted controller knew the export from somewhere")
	}
	deleteVolume(t, p.Controller, createVolume(t, p.Controller, uniq("after"), class(exportA)).GetVolumeId())
	if !waitFor(2*time.Minute, func() bool { return len(trashEntries(exportA, name)) == 0 }) {
		t.Fatalf("server: reaper did not resume: trash still holds %v 2 minutes after restart", trashEntries(exportA, name))
	}
	t.Logf("reaper resumed after restart and removed the 1000-file tree in %v", time.Since(start).Round(time.Millisecond))
}

// Scenario 7c: the NFS server goes away while a pod still uses the volume and kubelet unpublishes
// it: once with nfsd stopped (connections refused, as when the NFS service on a live host is down)
// and once with the server's packets silently dropped (a powered-off server or a partition: the
// guest's server address 192.0.2.1 is blackholed). The RPC returns within its deadline
// (--fs-timeout=5s: within 3x), the plugin stays responsive, and a second unpublish succeeds once the
// server is back.
func TestServerGoneDuringUnpublish(t *testing.T) {
	for _, tc := range []struct {
		name, server string
		stopArgs     []string
		inUse        bool
	}{
		{"nfsd-stopped", server, nil, true},
		{"server-unreachable", "192.0.2.1", []string{"--hang"}, true},
		{"server-unreachable-idle-mount", "192.0.2.1", []string{"--hang"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { serverGoneDuringUnpublish(t, tc.server, tc.stopArgs, tc.inUse) })
	}
}

func serverGoneDuringUnpublish(t *testing.T, srv string, stopArgs []string, inUse bool) {
	guardExport(t, exportA)
	const fsTimeout = 5 * time.Second
	p := startPaddock(t, "all", "--fs-timeout=5s")
	params := class(exportA)
	params["server"] = srv
	vol := createVolume(t, p.Controller, uniq("dead"), params)
	target := filepath.Join(newDir(t, "dead"), "pod", "mount")
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	if m := mountAt(t, target); m == nil || !strings.HasPrefix(m.Source, srv+":") {
		t.Fatalf("mounted %v, want a mount from %s", m, srv)
	}
	mustWrite(t, filepath.Join(target, "in-use.txt"), "x")

	if inUse {
		holdOpen(t, filepath.Join(target, "in-use.txt"))
	}

	serverStarted := false
	startServer := func() {
		if serverStarted {
			return
		}
		if b, err := exec.Command("/usr/local/bin/nfs-server-start").CombinedOutput(); err != nil {
			t.Errorf("nfs-server-start: %v: %s", err, b)
		}
		serverStarted = true
	}
	t.Cleanup(startServer)
	if b, err := exec.Command("/usr/local/bin/nfs-server-stop", stopArgs...).CombinedOutput(); err != nil {
		t.Fatalf("nfs-server-stop: %v: %s", err, b)
	} else {
		t.Logf("%s", strings.TrimSpace(string(b)))
	}
	time.Sleep(time.Second) // the holder is now blocked on the dead server

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err := p.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target})
	took := time.Since(start)
	t.Logf("NodeUnpublishVolume with the server gone: %v after %v (fs-timeout %v)", err, took.Round(time.Millisecond), fsTimeout)
	if took > 3*fsTimeout {
		t.Errorf("NodeUnpublishVolume took %v, more than 3x fs-timeout (%v)", took, 3*fsTimeout)
	}
	if c := status.Code(err); c != codes.OK && c != codes.DeadlineExceeded {
		t.Errorf("NodeUnpublishVolume: %v, want OK or DeadlineExceeded", err)
	}
	// The staging mount (the volume's one NFS mount on the node) goes the same way.
	if staging := stagingOf(target); staging != "" {
		start := time.Now()
		_, err := p.Node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: staging})
		took := time.Since(start)
		t.Logf("NodeUnstageVolume with the server gone: %v after %v", err, took.Round(time.Millisecond))
		if took > 3*fsTimeout {
			t.Errorf("NodeUnstageVolume took %v, more than 3x fs-timeout (%v)", took, 3*fsTimeout)
		}
		if c := status.Code(err); c != codes.OK && c != codes.DeadlineExceeded {
			t.Errorf("NodeUnstageVolume: %v, want OK or DeadlineExceeded", err)
		}
	}
	for _, l := range strings.Split(tail(p.LogPath, 200), "\n") {
		if strings.Contains(l, "escalating") {
			t.Logf("paddock: %s", strings.TrimSpace(l))
		}
	}
	if err := p.Probe(2 * time.Second); err != nil {
		t.Errorf("Probe with the server gone: %v", err)
	}
	if _, err := p.Node.NodeGetCapabilities(ctxT(t, 2*time.Second), &csi.NodeGetCapabilitiesRequest{}); err != nil {
		t.Errorf("NodeGetCapabilities with the server gone: %v", err)
	}
	t.Logf("mounts at the target with the server gone: %d", countMountsAt(t, target))

	startServer()
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	start = time.Now()
	if _, err := p.Node.NodeUnpublishVolume(ctx2, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target}); err != nil {
		t.Errorf("second NodeUnpublishVolume with the server back: %v", err)
	}
	forgetTarget(t, p.Node, vol.GetVolumeId(), target) // unstages again, now with the server back
	t.Logf("second NodeUnpublishVolume took %v", time.Since(start).Round(time.Millisecond))
	if n := countMountsAt(t, target); n != 0 {
		t.Errorf("%d mounts still at %s", n, target)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("target %s not removed: %v", target, err)
	}
	if err := p.Probe(2 * time.Second); err != nil {
		t.Errorf("Probe after the server came back: %v", err)
	}
	if !p.Running() {
		t.Errorf("paddock died")
	}
	// The plugin still does real work: a fresh publish and write go through.
	target2 := filepath.Join(filepath.Dir(filepath.Dir(target)), "pod2", "mount")
	publish(t, p.Node, vol, target2, mountCap(rwx), false)
	mustWrite(t, filepath.Join(target2, "after.txt"), "server is back")
	unpublish(t, p.Node, vol.GetVolumeId(), target2)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}

// Scenario 7d: the volume's directory is re-created on the server under a live publish; the mount
// returns ESTALE, and a repeated NodePublishVolume to the same target recovers it.
func TestStaleHandleRecovery(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	vol := createVolume(t, p.Controller, uniq("stale"), class(exportA))
	sdir := filepath.Join(exportA, subDirOf(t, vol))
	target := filepath.Join(newDir(t, "stale"), "pod", "mount")
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	mustWrite(t, filepath.Join(target, "first.txt"), "1")

	// On the server: the directory is removed and made again (a restore, an admin's mistake).
	if err := os.RemoveAll(sdir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sdir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sdir, 0o777); err != nil {
		t.Fatal(err)
	}
	// The old mount's handle names a directory that no longer exists. (Creating a file in it fails
	// with ENOENT on Linux 6.1, the lookup in the dead directory; stat and readdir say ESTALE.)
	werr := os.WriteFile(filepath.Join(target, "second.txt"), []byte("2"), 0o644)
	_, rerr := os.ReadDir(target)
	_, serr := os.Stat(target)
	t.Logf("old mount after re-creation: write: %v; readdir: %v; stat: %v", werr, rerr, serr)
	if werr == nil {
		t.Errorf("write through the old mount after re-creation succeeded; want it to fail")
	}
	if !errors.Is(rerr, syscall.ESTALE) && !errors.Is(serr, syscall.ESTALE) {
		t.Errorf("neither readdir (%v) nor stat (%v) of the old mount says ESTALE", rerr, serr)
	}
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	if n := countMountsAt(t, target); n != 1 {
		t.Errorf("%d mounts at %s after recovery, want 1", n, target)
	}
	if err := os.WriteFile(filepath.Join(target, "third.txt"), []byte("3"), 0o644); err != nil {
		t.Errorf("write after the recovering publish: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(sdir, "third.txt")); err != nil || string(got) != "3" {
		t.Errorf("server: third.txt %q %v", got, err)
	}
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}

// holdOpen starts a pod-like process that keeps path open and stats it until the test ends.
func holdOpen(t *testing.T, path string) {
	t.Helper()
	holder := exec.Command(os.Args[0], path)
	holder.Env = append(os.Environ(), helperEnv+"=hold")
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); go holder.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "OK" {
		t.Fatalf("holder: %q", line)
	}
}
