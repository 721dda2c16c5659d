package share

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestScrub(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-s", "pvc-s", volume.OnDeleteDelete)
	e.create(v, CreateOptions{Mode: 0o2770&^0o2000 | os.ModeSetgid, UID: 1500, GID: 2500})
	other := vol("pvc-other", "pvc-other", volume.OnDeleteDelete)
	e.create(other, defaultOpts())
	e.write("pvc-other/secret", "other tenant")
	if err := os.WriteFile(e.outside+"/host-file", []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.write("pvc-s/a/b/c", "old tenant")
	e.write("pvc-s/.hidden", "dot file")
	for name, target := range map[string]string{
		"pvc-s/out-dir":      e.outside,
		"pvc-s/out-file":     e.outside + "/host-file",
		"pvc-s/a/out-dir":    e.outside,
		"pvc-s/to-other":     "../pvc-other",
		"pvc-s/to-other-abs": e.path("pvc-other"),
		"pvc-s/dangling":     "/nonexistent",
	} {
		if err := os.Symlink(target, e.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(e.path("pvc-s/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	outsideBefore := listing(t, e.outside)
	otherBefore := listing(t, e.path("pvc-other"))
	mode, uid, gid, ino := ownerOf(t, e.path("pvc-s"))

	if err := e.ws.Scrub(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if left := e.entries("pvc-s"); len(left) != 0 {
		t.Fatalf("volume after Scrub holds %v", left)
	}
	mode2, uid2, gid2, ino2 := ownerOf(t, e.path("pvc-s"))
	if mode2 != mode || uid2 != uid || gid2 != gid || ino2 != ino {
		t.Errorf("Scrub changed the directory: %v %d:%d ino %d -> %v %d:%d ino %d", mode, uid, gid, ino, mode2, uid2, gid2, ino2)
	}
	if c, err := e.claimOf("pvc-s"); err != nil || c.Name != "pvc-s" || c.State != "ready" {
		t.Errorf("claim after Scrub = %+v, %v", c, err)
	}
	bins := e.entries(trashDir)
	if len(bins) != 1 || !strings.Contains(bins[0], "scrub-pvc-s") {
		t.Fatalf("trash after Scrub = %v", bins)
	}
	if b, err := os.ReadFile(e.path(trashDir + "/" + bins[0] + "/a/b/c")); err != nil || string(b) != "old tenant" {
		t.Errorf("scrubbed content in the trash = %q, %v", b, err)
	}
	if _, err := e.ws.Reap(context.Background(), xp); err != nil {
		t.Fatal(err)
	}
	if left := e.entries(trashDir); len(left) != 0 {
		t.Fatalf("trash after Reap = %v", left)
	}
	if got := listing(t, e.outside); got != outsideBefore {
		t.Errorf("scrub and reap touched the directory outside the export:\n%s\n---\n%s", outsideBefore, got)
	}
	if got := listing(t, e.path("pvc-other")); got != otherBefore {
		t.Errorf("scrub and reap touched another volume:\n%s\n---\n%s", otherBefore, got)
	}
	// An empty volume scrubs to nothing; a second Scrub is a no-op.
	if err := e.ws.Scrub(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if n := len(e.entries(trashDir)); n != 0 {
		t.Errorf("scrub of an empty volume left %d trash entries", n)
	}
}

func TestScrubRefusals(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-owner", "owned", volume.OnDeleteDelete), defaultOpts())
	e.write("owned/f", "mine")
	e.mkdir("owned/sub", 0o755)
	e.write("afile", "file")
	if err := os.Symlink(e.outside, e.path("escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.outside+"/host", []byte("h"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		v      volume.Volume
		target error
	}{
		{"another volume's directory", vol("pvc-thief", "owned", volume.OnDeleteDelete), ErrConflict},
		{"inside another volume", vol("pvc-thief", "owned/sub", volume.OnDeleteDelete), ErrConflict},
		{"missing", vol("pvc-gone", "gone", volume.OnDeleteDelete), ErrNotFound},
		{"a file", vol("pvc-f", "afile", volume.OnDeleteDelete), ErrNotDir},
		{"a symlink out of the export", vol("pvc-e", "escape", volume.OnDeleteDelete), ErrNotDir},
		{"below a symlink out of the export", vol("pvc-e", "escape/x", volume.OnDeleteDelete), ErrNotDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, outside := listing(t, e.export), listing(t, e.outside)
			if err := e.ws.Scrub(context.Background(), tc.v); !isErr(err, tc.target) {
				t.Fatalf("Scrub = %v, want %v", err, tc.target)
			}
			if got := listing(t, e.export); got != before {
				t.Errorf("refused Scrub changed the export")
			}
			if got := listing(t, e.outside); got != outside {
				t.Errorf("refused Scrub changed the outside directory")
			}
		})
	}
}

// A static PV may name a directory with a long last component; the scrub bin must still fit in a
// file name.
func TestScrubLongDirectoryName(t *testing.T) {
	e := newEnv(t, nil)
	long := strings.Repeat("n", volume.MaxComponent)
	e.mkdir(long, 0o755)
	e.write(long+"/f", "x")
	v := vol(volume.StaticName(long), long, volume.OnDeleteRetain)
	if err := e.ws.Scrub(context.Background(), v); err != nil {
		t.Fatalf("Scrub of a %d-byte directory name = %v", len(long), err)
	}
	if left := e.entries(long); len(left) != 0 {
		t.Fatalf("volume after Scrub holds %v", left)
	}
}

// The reaper sweeps the trash while other volumes are scrubbed: a scrub must never report success
// while entries are still in the volume.
func TestScrubWhileReaping(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		for ctx.Err() == nil {
			_, _ = e.ws.Reap(ctx, xp)
		}
	}()
	v := vol("pvc-race", "pvc-race", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	for round := 0; round < 5; round++ {
		for i := 0; i < 500; i++ {
			e.write(fmt.Sprintf("pvc-race/f%04d", i), "x")
		}
		if err := e.ws.Scrub(context.Background(), v); err != nil {
			continue // a reported failure is fine: the caller retries
		}
		if left := e.entries("pvc-race"); len(left) != 0 {
			t.Fatalf("round %d: Scrub returned success with %d entries left in the volume", round, len(left))
		}
	}
	cancel()
	<-reaped
}

func TestReaperNeverFollowsSymlinks(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-v", "pvc-v", volume.OnDeleteDelete), defaultOpts())
	e.write("pvc-v/data", "volume data")
	for _, f := range []string{"a", "b/c", "b/d/e"} {
		p := e.outside + "/" + f
		if err := os.MkdirAll(p[:strings.LastIndex(p, "/")], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A trash tree full of links out of the export and into a live volume, at every level.
	entry := trashDir + "/" + trashName(e.clock.Now(), "pvc-gone")
	e.mkdir(entry+"/sub/deeper", 0o755)
	e.write(entry+"/sub/file", "trash")
	links := map[string]string{
		entry + "/out":                               e.outside,
		entry + "/sub/out":                           e.outside + "/b",
		entry + "/sub/deeper/out":                    e.outside + "/b/d",
		entry + "/sub/outfile":                       e.outside + "/a",
		entry + "/sub/volume":                        "../../../../pvc-v",
		trashDir + "/toplevel-link":                  e.outside,
		archiveDir + "/x@20200101T000000Z.1@until-1": e.outside + "/b",
	}
	for name, target := range links {
		if err := os.Symlink(target, e.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	outsideBefore, volBefore := listing(t, e.outside), listing(t, e.path("pvc-v"))
	if _, err := e.ws.Reap(context.Background(), xp); err != nil {
		t.Fatal(err)
	}
	if left := e.entries(trashDir); len(left) != 0 {
		t.Fatalf("trash after Reap = %v", left)
	}
	if left := e.entries(archiveDir); len(left) != 0 {
		t.Fatalf("expired archive link left: %v", left)
	}
	if got := listing(t, e.outside); got != outsideBefore {
		t.Fatalf("the reaper followed a symlink out of the export:\n%s\n---\n%s", outsideBefore, got)
	}
	if got := listing(t, e.path("pvc-v")); got != volBefore {
		t.Fatalf("the reaper followed a symlink into a live volume")
	}
}

func TestReaperRefusesSymlinkedMetadata(t *testing.T) {
	e := newEnv(t, nil)
	if err := os.WriteFile(e.outside+"/keep", []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A provisioned volume, so Delete has a claim and must use the trash.
	x := vol("pvc-x", "x", volume.OnDeleteDelete)
	e.create(x, defaultOpts())
	if err := os.Remove(e.path(trashDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.outside, e.path(trashDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ws.Reap(context.Background(), xp); !isErr(err, ErrNotDir) {
		t.Fatalf("Reap with a symlinked trash = %v, want ErrNotDir", err)
	}
	if err := e.ws.Delete(context.Background(), x); !isErr(err, ErrNotDir) {
		t.Fatalf("Delete with a symlinked trash = %v, want ErrNotDir", err)
	}
	if !exists(e.path("x")) {
		t.Fatal("volume moved although the trash is a symlink")
	}
	if !exists(e.outside + "/keep") {
		t.Fatal("outside file removed")
	}
}

// restartedWithTrash leaves one volume in the trash of a workspace that then "crashes" (goes away
// without reaping, its mount left behind), and starts a new one on the same work dir, with no trash
// grace and its reaper running (stopped at the end of the test).
func restartedWithTrash(t *testing.T) (*env, *Workspace) {
	t.Helper()
	e := newEnv(t, func(c *Config) { c.TrashGrace = 1000 * time.Hour })
	v := vol("pvc-r", "pvc-r", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	e.write("pvc-r/f", "x")
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if n := len(e.entries(trashDir)); n != 1 {
		t.Fatalf("trash holds %d entries", n)
	}
	cfg := e.cfg
	cfg.TrashGrace = 0
	ws2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ws2.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; ws2.Wait(); ws2.Close(context.Background()) })
	return e, ws2
}

// A new controller resumes reaping as soon as it learns the export (AddExports, from the cluster):
// nothing is read from the work dir.
func TestReaperResumesAfterRestart(t *testing.T) {
	e, ws2 := restartedWithTrash(t)
	if k := ws2.Known(); len(k) != 0 {
		t.Fatalf("the new workspace knows %v before it is told", k)
	}
	ws2.AddExports(xp)
	eventually(t, "the new workspace to empty the trash", func() bool { return len(e.entries(trashDir)) == 0 })
}

// Without the cluster (pure CSI use), a new controller resumes reaping an export on the first call
// that uses it: no AddExports, and no wait for ReapInterval.
func TestReaperResumesOnFirstCall(t *testing.T) {
	e, ws2 := restartedWithTrash(t)
	if _, err := ws2.Create(context.Background(), vol("pvc-s", "pvc-s", volume.OnDeleteDelete), defaultOpts()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first call's export to be swept", func() bool { return len(e.entries(trashDir)) == 0 })
}

func TestRunReapsOnKick(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.ws.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; e.ws.Wait() }()
	for i := 0; i < 3; i++ {
		v := vol(fmt.Sprintf("pvc-k%d", i), fmt.Sprintf("pvc-k%d", i), volume.OnDeleteDelete)
		e.create(v, defaultOpts())
		e.write(v.SubDir+"/f", "x")
		if err := e.ws.Delete(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the kicked reaper to empty the trash", func() bool { return len(e.entries(trashDir)) == 0 })
}
