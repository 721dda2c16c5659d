//go:build e2e

package node

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Scenario 2: read-only access modes and readonly:true mount "ro"; a write fails with EROFS and the
// server's copy is untouched, while a read works.
func TestReadOnly(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	vol := createVolume(t, p.Controller, uniq("ro"), class(exportA))
	sub := subDirOf(t, vol)
	mustWrite(t, filepath.Join(exportA, sub, "data.txt"), "server data")
	before := listing(t, filepath.Join(exportA, sub))
	dir := newDir(t, "ro")

	for _, tc := range []struct {
		name     string
		c        *csi.VolumeCapability
		readonly bool
	}{
		{"MULTI_NODE_READER_ONLY", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY), false},
		{"SINGLE_NODE_READER_ONLY", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), false},
		{"readonly-with-MULTI_NODE_MULTI_WRITER", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), true},
		{"readonly-with-SINGLE_NODE_WRITER-and-rw-flag", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "rw"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(dir, tc.name)
			publish(t, p.Node, vol, target, tc.c, tc.readonly)
			m := mountAt(t, target)
			if m == nil {
				t.Fatalf("nothing mounted at %s", target)
			}
			if !m.has("ro") || m.has("rw") {
				t.Errorf("%s: mounted %v, want ro", target, m.Options)
			}
			if got := mustRead(t, filepath.Join(target, "data.txt")); got != "server data" {
				t.Errorf("read: %q", got)
			}
			err := os.WriteFile(filepath.Join(target, "data.txt"), []byte("overwrite"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("overwrite through a read-only publish: %v, want EROFS", err)
			}
			err = os.WriteFile(filepath.Join(target, "new.txt"), []byte("new"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("create through a read-only publish: %v, want EROFS", err)
			}
			if err := os.Mkdir(filepath.Join(target, "newdir"), 0o755); !errors.Is(err, syscall.EROFS) {
				t.Errorf("mkdir through a read-only publish: %v, want EROFS", err)
			}
			unpublish(t, p.Node, vol.GetVolumeId(), target)
			if m := mountAt(t, target); m != nil {
				t.Errorf("still mounted after unpublish: %v", m)
			}
		})
	}
	assertSame(t, "after read-only publishes", before, listing(t, filepath.Join(exportA, sub)))
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}
