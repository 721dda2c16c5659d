//go:build e2e

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// fillThroughMount publishes the volume, writes a small tree through the mount as a pod would, and
// unpublishes it; it returns the server's listing of the volume directory.
func fillThroughMount(t *testing.T, p *Paddock, vol *csi.Volume) map[string]fileInfo {
	t.Helper()
	target := filepath.Join(newDir(t, "fill"), "mount")
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	for i := 0; i < 5; i++ {
		mustWrite(t, filepath.Join(target, fmt.Sprintf("dir%d/file%d.bin", i%2, i)), strings.Repeat(fmt.Sprintf("%d:%s;", i, vol.GetVolumeId()), 100*(i+1)))
	}
	if err := os.Symlink("dir0/file0.bin", filepath.Join(target, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(target, "dir1"), 0o700); err != nil {
		t.Fatal(err)
	}
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	return listing(t, filepath.Join(exportA, subDirOf(t, vol)))
}

// Scenario 3a: onDelete=delete moves the directory out of its place at once, and the reaper removes
// it from the trash.
func TestDeleteMovesToTrashThenReaps(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all") // --trash-grace=0: reap at once
	name := uniq("del")
	vol := createVolume(t, p.Controller, name, class(exportA, "onDelete", "delete"))
	sub := subDirOf(t, vol)
	fillThroughMount(t, p, vol)

	deleteVolume(t, p.Controller, vol.GetVolumeId())
	if _, err := os.Lstat(filepath.Join(exportA, sub)); !os.IsNotExist(err) {
		t.Errorf("server: %s still in place right after DeleteVolume (lstat: %v)", sub, err)
	}
	if !waitFor(60*time.Second, func() bool { return len(trashEntries(exportA, name)) == 0 }) {
		t.Errorf("server: trash still holds %v 60s after DeleteVolume", trashEntries(exportA, name))
	}
	// Idempotent: a retried DeleteVolume of a gone volume succeeds and changes nothing.
	before := listing(t, exportA)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
	assertSame(t, "second DeleteVolume", before, listing(t, exportA))
}

// Scenario 3b: with the reaper held back, DeleteVolume of a 50 000-file tree only renames it: it
// returns fast, and the tree sits intact and complete in the trash.
func TestDeleteLargeTreeOnlyMoves(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all", "--trash-grace=1h")
	name := uniq("big")
	vol := createVolume(t, p.Controller, name, class(exportA))
	sub := subDirOf(t, vol)
	root := filepath.Join(exportA, sub)

	const dirs, perDir = 100, 500
	start := time.Now()
	for d := 0; d < dirs; d++ {
		dd := filepath.Join(root, fmt.Sprintf("d%03d", d))
		if err := os.Mkdir(dd, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < perDir; f++ {
			if err := os.WriteFile(filepath.Join(dd, fmt.Sprintf("f%03d", f)), []byte(fmt.Sprintf("%d/%d", d, f)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	created := time.Since(start)

	start = time.Now()
	deleteVolume(t, p.Controller, vol.GetVolumeId())
	latency := time.Since(start)
	t.Logf("50 000-file tree: created on the server in %v; DeleteVolume returned in %v (ratio %.4f)",
		created.Round(time.Millisecond), latency.Round(time.Microsecond), latency.Seconds()/created.Seconds())

	if _, err := os.Lstat(root); !os.IsNotExist(err) {
		t.Errorf("server: %s still in place after DeleteVolume (lstat: %v)", sub, err)
	}
	entries := trashEntries(exportA, name)
	if len(entries) != 1 {
		t.Fatalf("server: trash entries for %s: %v, want exactly 1", name, entries)
	}
	trashed := filepath.Join(exportA, ".paddock/trash", entries[0])
	start = time.Now()
	files, nd := 0, 0
	for d := 0; d < dirs; d++ {
		dd := filepath.Join(trashed, fmt.Sprintf("d%03d", d))
		es, err := os.ReadDir(dd)
		if err != nil {
			t.Fatalf("server: trashed tree: %v", err)
		}
		nd++
		for _, e := range es {
			var dn, fn int
			fmt.Sscanf(e.Name(), "f%03d", &fn)
			dn = d
			b, err := os.ReadFile(filepath.Join(dd, e.Name()))
			if err != nil || string(b) != fmt.Sprintf("%d/%d", dn, fn) {
				t.Fatalf("server: trashed %s/%s: %q %v", dd, e.Name(), b, err)
			}
			files++
		}
	}
	if files != dirs*perDir || nd != dirs || len(names(trashed)) != dirs {
		t.Errorf("server: trashed tree has %d files in %d dirs (top level %d), want %d in %d", files, nd, len(names(trashed)), dirs*perDir, dirs)
	}
	t.Logf("trashed tree verified complete (%d files) in %v", files, time.Since(start).Round(time.Millisecond))

	// The reaper resumes with the grace lifted and removes the whole tree over NFS. This controller has
	// no API access (pure CSI): it knows an export again once a call uses it, and sweeps it at once.
	start = time.Now()
	p.Stop()
	p.Start("--trash-grace=0")
	after := uniq("after")
	deleteVolume(t, p.Controller, createVolume(t, p.Controller, after, class(exportA, "subDir", "${pv.metadata.name}")).GetVolumeId())
	if !waitFor(10*time.Minute, func() bool { return len(trashEntries(exportA, name)) == 0 }) {
		t.Fatalf("server: reaper did not remove the 50 000-file tree within 10 minutes")
	}
	t.Logf("reaper (8 workers, over NFS) removed the 50 000-file tree in %v after restart", time.Since(start).Round(time.Millisecond))
}

// Scenario 3c: onDelete=archive renames the directory into .paddock/archive with its content
// byte-identical.
func TestDeleteArchive(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	name := uniq("arch")
	vol := createVolume(t, p.Controller, name, class(exportA, "onDelete", "archive", "subDir", "e2e-team/${pv.metadata.name}"))
	sub := subDirOf(t, vol)
	if sub != "e2e-team/"+name {
		t.Fatalf("subDir %q, want e2e-team/%s", sub, name)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(exportA, "e2e-team")) })
	want := fillThroughMount(t, p, vol)
	archBefore := names(exportA + "/.paddock/archive")

	deleteVolume(t, p.Controller, vol.GetVolumeId())
	if _, err := os.Lstat(filepath.Join(exportA, sub)); !os.IsNotExist(err) {
		t.Errorf("server: %s still in place after DeleteVolume (lstat: %v)", sub, err)
	}
	var added []string
	for _, n := range names(exportA + "/.paddock/archive") {
		if !contains(archBefore, n) {
			added = append(added, n)
		}
	}
	if len(added) != 1 || !strings.HasPrefix(added[0], "e2e-team%2F"+name+"@") {
		t.Fatalf("server: archive gained %v, want one entry e2e-team%%2F%s@<time>", added, name)
	}
	t.Logf("archived as .paddock/archive/%s", added[0])
	assertSame(t, "archived content", want, listing(t, filepath.Join(exportA, ".paddock/archive", added[0])))
	// The reaper leaves archives without retention alone.
	time.Sleep(2 * time.Second)
	if _, err := os.Lstat(filepath.Join(exportA, ".paddock/archive", added[0])); err != nil {
		t.Errorf("archive vanished: %v", err)
	}
}

// Scenario 3d: onDelete=retain leaves the directory and its content as they are.
func TestDeleteRetain(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	name := uniq("ret")
	vol := createVolume(t, p.Controller, name, class(exportA, "onDelete", "retain"))
	sub := subDirOf(t, vol)
	want := fillThroughMount(t, p, vol)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
	assertSame(t, "retained volume", want, listing(t, filepath.Join(exportA, sub)))
	if e := trashEntries(exportA, name); len(e) != 0 {
		t.Errorf("server: retained volume has trash entries %v", e)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
