//go:build e2e

package node

import (
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Scenario 1: one RWX volume published at two targets (two pods on a node), with separate controller
// and node processes as in a cluster; a write through one target is read through the other, the
// negotiated NFS version is the one the mount flags asked for, and the directory on the server has
// the class's mode.
func TestRWXTwoTargets(t *testing.T) {
	for _, tc := range []struct {
		flag, fstype, vers string
	}{
		{"nfsvers=3", "nfs", "3"},
		{"nfsvers=4.1", "nfs4", "4.1"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			guardExport(t, exportA)
			ctrl := startPaddock(t, "controller")
			node := startPaddock(t, "node")
			name := uniq("rwx")
			vol := createVolume(t, ctrl.Controller, name, class(exportA, "mode", "0775"))
			sub := subDirOf(t, vol)
			if got := describe(t, filepath.Join(exportA, sub)); got.Kind != "d" || got.Mode.Perm() != 0o775 || got.UID != 0 || got.GID != 0 {
				t.Errorf("server: %s is %v, want a directory 0775 owned 0:0", sub, got)
			}

			dir := newDir(t, "rwx")
			t1, t2 := filepath.Join(dir, "pod1", "mount"), filepath.Join(dir, "pod2", "mount")
			c := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, tc.flag)
			publish(t, node.Node, vol, t1, c, false)
			publish(t, node.Node, vol, t2, c, false)
			for _, tg := range []string{t1, t2} {
				m := mountAt(t, tg)
				switch {
				case m == nil:
					t.Fatalf("nothing mounted at %s", tg)
				case m.Source != server+":"+filepath.Join(exportA, sub):
					t.Errorf("%s: source %s, want %s", tg, m.Source, server+":"+filepath.Join(exportA, sub))
				case m.FSType != tc.fstype || m.opt("vers") != tc.vers:
					t.Errorf("%s: %s vers=%s, want %s vers=%s (options %v)", tg, m.FSType, m.opt("vers"), tc.fstype, tc.vers, m.Options)
				case !m.has("rw"):
					t.Errorf("%s: not mounted rw: %v", tg, m.Options)
				}
			}
			// Idempotent: the same publish again succeeds and stacks nothing.
			publish(t, node.Node, vol, t1, c, false)

			mustWrite(t, filepath.Join(t1, "hello.txt"), "written through pod1 "+tc.flag)
			if got := mustRead(t, filepath.Join(t2, "hello.txt")); got != "written through pod1 "+tc.flag {
				t.Errorf("read through pod2: %q", got)
			}
			mustWrite(t, filepath.Join(t2, "sub", "back.txt"), "and back")
			if got := mustRead(t, filepath.Join(t1, "sub", "back.txt")); got != "and back" {
				t.Errorf("read through pod1: %q", got)
			}
			// The server holds exactly what was written, in the volume's directory.
			got := listing(t, filepath.Join(exportA, sub))
			if len(got) != 4 || got["hello.txt"].Size != int64(len("written through pod1 "+tc.flag)) || got["sub/back.txt"].Kind != "f" {
				t.Errorf("server: volume holds %v", got)
			}

			unpublish(t, node.Node, vol.GetVolumeId(), t1)
			if m := mountAt(t, t1); m != nil {
				t.Errorf("%s still mounted after unpublish: %v", t1, m)
			}
			if got := mustRead(t, filepath.Join(t2, "hello.txt")); got == "" {
				t.Errorf("pod2 lost the volume when pod1 unpublished")
			}
			unpublish(t, node.Node, vol.GetVolumeId(), t2)
			unpublish(t, node.Node, vol.GetVolumeId(), t2) // idempotent
			if m := mountAt(t, t2); m != nil {
				t.Errorf("%s still mounted after unpublish: %v", t2, m)
			}
			deleteVolume(t, ctrl.Controller, vol.GetVolumeId())
		})
	}
}
