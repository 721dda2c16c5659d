//go:build e2e

package node

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/status"
)

// Scenario 5a: on a no_root_squash export, uid/gid/mode are honoured exactly, and a non-root pod user
// with those IDs can write through the publish while another user cannot.
func TestOwnershipNoRootSquash(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	vol := createVolume(t, p.Controller, uniq("own"), class(exportA, "uid", "1000", "gid", "1000", "mode", "0770"))
	sub := subDirOf(t, vol)
	if got := describe(t, filepath.Join(exportA, sub)); got.Kind != "d" || got.Mode.Perm() != 0o770 || got.UID != 1000 || got.GID != 1000 {
		t.Errorf("server: %s is %v, want directory 0770 1000:1000", sub, got)
	}
	target := filepath.Join(newDir(t, "own"), "mount")
	if err := os.Chmod(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	if out, errno, ok := runAs(t, 1000, 1000, "write", filepath.Join(target, "by-1000.txt"), "hello from 1000"); !ok {
		t.Errorf("uid 1000 write through the publish failed: %v %s", errno, out)
	}
	if got := describe(t, filepath.Join(exportA, sub, "by-1000.txt")); got.UID != 1000 || got.GID != 1000 || got.Size != int64(len("hello from 1000")) {
		t.Errorf("server: by-1000.txt is %v, want owned 1000:1000 with the content", got)
	}
	if out, errno, ok := runAs(t, 2000, 2000, "write", filepath.Join(target, "by-2000.txt"), "intruder"); ok || errno != syscall.EACCES {
		t.Errorf("uid 2000 write into a 0770 1000:1000 volume: ok=%v errno=%v %s, want EACCES", ok, errno, out)
	}
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}

// Scenario 5b: on the root_squash export the controller's root is squashed to nobody (65534). It can
// create directories (when the export root lets nobody write) and set their mode, but it can never
// give a directory to uid/gid 1000: CreateVolume must fail with a clear error rather than succeed with
// a wrong owner. A class without uid/gid works, and uid 1000 writes through the publish.
func TestOwnershipRootSquash(t *testing.T) {
	// The export root as shipped is 0755 root:root, which nobody cannot write to; a root_squash export
	// for dynamic volumes is conventionally handed to the squashed user.
	var st syscall.Stat_t
	if err := syscall.Stat(exportSq, &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chown(exportSq, int(st.Uid), int(st.Gid))
		os.Chmod(exportSq, os.FileMode(st.Mode&0o7777))
	})
	guardExport(t, exportSq)
	p := startPaddock(t, "all")

	t.Run("export-root-not-writable-by-nobody", func(t *testing.T) {
		if err := os.Chown(exportSq, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(exportSq, 0o755); err != nil {
			t.Fatal(err)
		}
		before := listing(t, exportSq)
		_, err := p.Controller.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{
			Name: uniq("sq0"), Parameters: class(exportSq), VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}})
		if err == nil {
			t.Fatalf("CreateVolume on a root_squash export whose root nobody cannot write succeeded")
		}
		t.Logf("CreateVolume: %v", err)
		assertSame(t, "failed CreateVolume", before, listing(t, exportSq))
	})

	if err := os.Chown(exportSq, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(exportSq, 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("uid-gid-cannot-be-honoured", func(t *testing.T) {
		name := uniq("sq1")
		_, err := p.Controller.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{
			Name: name, Parameters: class(exportSq, "uid", "1000", "gid", "1000", "mode", "0770"),
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}})
		if err == nil {
			got := describe(t, filepath.Join(exportSq, name))
			t.Fatalf("CreateVolume with uid/gid 1000 on root_squash succeeded; server shows %v", got)
		}
		st, _ := status.FromError(err)
		t.Logf("CreateVolume: %v: %s", st.Code(), st.Message())
		fi, lerr := os.Lstat(filepath.Join(exportSq, name))
		if lerr == nil {
			t.Logf("server after the failed CreateVolume: %s is %v", name, describe(t, filepath.Join(exportSq, name)))
			if d := describe(t, filepath.Join(exportSq, name)); d.UID == 1000 && fi.IsDir() {
				t.Errorf("unexpected: squashed root managed to chown")
			}
		}
		wantCode(t, "CreateVolume uid/gid on root_squash", err, st.Code())
		assertClearOwnerError(t, st.Message())
	})

	t.Run("mode-only", func(t *testing.T) {
		vol := createVolume(t, p.Controller, uniq("sq2"), class(exportSq, "mode", "0777"))
		sub := subDirOf(t, vol)
		got := describe(t, filepath.Join(exportSq, sub))
		if got.Kind != "d" || got.Mode.Perm() != 0o777 || got.UID != 65534 || got.GID != 65534 {
			t.Errorf("server: %s is %v, want directory 0777 owned by the squashed root 65534:65534", sub, got)
		}
		target := filepath.Join(newDir(t, "sq"), "mount")
		if err := os.Chmod(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		publish(t, p.Node, vol, target, mountCap(rwx), false)
		if out, errno, ok := runAs(t, 1000, 1000, "write", filepath.Join(target, "by-1000.txt"), "hello"); !ok {
			t.Errorf("uid 1000 write through the publish failed: %v %s", errno, out)
		}
		if got := describe(t, filepath.Join(exportSq, sub, "by-1000.txt")); got.UID != 1000 || got.GID != 1000 {
			t.Errorf("server: by-1000.txt is %v, want 1000:1000", got)
		}
		// Root in a pod is squashed too: its file belongs to nobody on the server.
		mustWrite(t, filepath.Join(target, "by-root.txt"), "root")
		if got := describe(t, filepath.Join(exportSq, sub, "by-root.txt")); got.UID != 65534 {
			t.Errorf("server: by-root.txt is %v, want owned by 65534 (root_squash)", got)
		}
		unpublish(t, p.Node, vol.GetVolumeId(), target)
		deleteVolume(t, p.Controller, vol.GetVolumeId())
		if _, err := os.Lstat(filepath.Join(exportSq, sub)); !os.IsNotExist(err) {
			t.Errorf("server: %s still in place after DeleteVolume: %v", sub, err)
		}
	})
}

// assertClearOwnerError: the message must say that setting the owner was not permitted (the
// volume ID, which names the export, is left out of the check).
func assertClearOwnerError(t *testing.T, msg string) {
	t.Helper()
	if i := strings.Index(msg, "#: "); i >= 0 {
		msg = msg[i+3:]
	}
	lower := strings.ToLower(msg)
	if !strings.Contains(lower, "owner") && !strings.Contains(lower, "chown") {
		t.Errorf("error does not say the owner could not be set: %q", msg)
	}
	if !strings.Contains(lower, "not permitted") && !strings.Contains(lower, "squash") {
		t.Errorf("error does not say why: %q", msg)
	}
	if !strings.Contains(lower, "squash") {
		t.Logf("FINDING: the error does not name root squashing as the likely cause: %q", msg)
	}
}
