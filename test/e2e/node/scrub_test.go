//go:build e2e

package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Scenario 4: Scrub (the Recycle primitive), through the Go API on a real NFS mount of the export:
// the volume's contents go, the directory with its owner and mode stays, and symlinks inside the
// volume that point out of it (elsewhere on the export, and to /etc on the host) are moved, never
// followed, by the scrub and by the reaper that then empties the trash.
func TestScrub(t *testing.T) {
	guardExport(t, exportA)
	p := startPaddock(t, "all")
	name := uniq("scrub")
	vol := createVolume(t, p.Controller, name, class(exportA, "mode", "0750", "uid", "1000", "gid", "1000"))
	sub := subDirOf(t, vol)
	vdir := filepath.Join(exportA, sub)

	// Outside the volume: a directory elsewhere on the export and one in the host's /etc.
	outside := filepath.Join(exportA, uniq("scrub-outside"))
	mustWrite(t, filepath.Join(outside, "secret.txt"), "another tenant's data")
	mustWrite(t, filepath.Join(outside, "deep", "more.txt"), "more")
	etc := "/etc/" + uniq("scrub-canary")
	mustWrite(t, filepath.Join(etc, "canary.txt"), "host file")
	t.Cleanup(func() { os.RemoveAll(etc) })
	outBefore, etcBefore := listing(t, outside), listing(t, etc)

	// Inside the volume: ordinary content and hostile symlinks, written through a publish as a pod would.
	target := filepath.Join(newDir(t, "scrub"), "mount")
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	mustWrite(t, filepath.Join(target, "a.txt"), "a")
	mustWrite(t, filepath.Join(target, "dir", "b.txt"), "b")
	mustWrite(t, filepath.Join(target, ".hidden"), "h")
	for link, to := range map[string]string{
		"to-outside-file":          "../" + filepath.Base(outside) + "/secret.txt",
		"to-outside-dir":           "../" + filepath.Base(outside),
		"to-etc":                   etc,
		"to-etc-file":              etc + "/canary.txt",
		"dir/deeper/to-outside":    "../../../" + filepath.Base(outside),
		"dir/deeper/to-etc":        etc,
		"dir/deeper/abs-to-export": outside,
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(target, link)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(to, filepath.Join(target, link)); err != nil {
			t.Fatal(err)
		}
	}
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	if n := len(listing(t, vdir)); n < 10 {
		t.Fatalf("server: volume holds only %d entries before scrub", n)
	}
	dirBefore := describe(t, vdir)
	if dirBefore.Mode.Perm() != 0o750 || dirBefore.UID != 1000 || dirBefore.GID != 1000 {
		t.Fatalf("server: volume dir is %v, want 0750 1000:1000", dirBefore)
	}

	// A workspace of our own, with the real mounter and the reaper running (no grace).
	v, err := volume.ParseID(vol.GetVolumeId())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := share.New(share.Config{WorkDir: filepath.Join(newDir(t, "ws"), "work"), FSTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, Mounter: mount.New(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { ws.Run(ctx); close(runDone) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
		ws.Wait()
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		ws.Close(cctx)
	})

	sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
	defer scancel()
	if err := ws.Scrub(sctx, v); err != nil {
		t.Fatalf("Scrub: %v", err)
	}
	got := listing(t, vdir)
	if len(got) != 1 {
		t.Errorf("server: volume not empty after Scrub: %v", got)
	}
	if after := describe(t, vdir); after != dirBefore {
		t.Errorf("server: volume dir changed by Scrub: %v => %v", dirBefore, after)
	}
	assertSame(t, "outside dir on the export after Scrub", outBefore, listing(t, outside))
	assertSame(t, "/etc canary after Scrub", etcBefore, listing(t, etc))

	// The reaper empties the scrub bins without following the symlinks either.
	bins := func() []string {
		var b []string
		for _, n := range names(exportA + "/.paddock/trash") {
			if strings.Contains(n, "-scrub-"+filepath.Base(sub)) {
				b = append(b, n)
			}
		}
		return b
	}
	if !waitFor(60*time.Second, func() bool { return len(bins()) == 0 }) {
		t.Errorf("server: scrub bins %v still in the trash after 60s", bins())
	}
	assertSame(t, "outside dir on the export after the reaper", outBefore, listing(t, outside))
	assertSame(t, "/etc canary after the reaper", etcBefore, listing(t, etc))
	if after := describe(t, vdir); after != dirBefore {
		t.Errorf("server: volume dir changed after reaping: %v => %v", dirBefore, after)
	}

	// Scrubbing an empty volume is a no-op; the volume still publishes and works.
	if err := ws.Scrub(sctx, v); err != nil {
		t.Errorf("second Scrub: %v", err)
	}
	publish(t, p.Node, vol, target, mountCap(rwx), false)
	mustWrite(t, filepath.Join(target, "reused.txt"), "recycled volume in use")
	unpublish(t, p.Node, vol.GetVolumeId(), target)
	deleteVolume(t, p.Controller, vol.GetVolumeId())
}
