package share

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestCreateModeOwnerAndIdempotence(t *testing.T) {
	tests := []struct {
		name    string
		subDir  string
		opts    CreateOptions
		wantUID uint32
		wantGID uint32
	}{
		{"default", "pvc-1", CreateOptions{Mode: 0o777, UID: -1, GID: -1, Capacity: 1 << 30}, 0, 0},
		{"owner and setgid", "pvc-2", CreateOptions{Mode: 0o770 | os.ModeSetgid, UID: 1234, GID: 5678, Capacity: 5}, 1234, 5678},
		{"sticky, uid only", "pvc-3", CreateOptions{Mode: 0o1777&^0o1000 | os.ModeSticky, UID: 4321, GID: -1}, 4321, 0},
		{"gid only, tight mode", "pvc-4", CreateOptions{Mode: 0o700, UID: -1, GID: 99}, 0, 99},
		{"nested template dir", "team-a/data/pvc-5", CreateOptions{Mode: 0o750, UID: 1000, GID: 1000, Capacity: 7}, 1000, 1000},
	}
	e := newEnv(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := vol(tc.name+"-vol", tc.subDir, volume.OnDeleteDelete)
			got, err := e.ws.Create(context.Background(), v, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.opts.Capacity {
				t.Errorf("Create returned capacity %d, want %d", got, tc.opts.Capacity)
			}
			mode, uid, gid, ino := ownerOf(t, e.path(tc.subDir))
			if !mode.IsDir() || mode&(os.ModePerm|os.ModeSetgid|os.ModeSetuid|os.ModeSticky) != tc.opts.Mode {
				t.Errorf("mode = %v, want dir %v", mode, tc.opts.Mode)
			}
			if uid != tc.wantUID || gid != tc.wantGID {
				t.Errorf("owner = %d:%d, want %d:%d", uid, gid, tc.wantUID, tc.wantGID)
			}
			c, err := e.claimOf(tc.subDir)
			if err != nil || c.State != "ready" || c.Name != v.Name || c.Adopted || c.Capacity != tc.opts.Capacity {
				t.Errorf("claim = %+v, %v", c, err)
			}
			// A repeat with another owner or mode is another volume's arguments (CSI ALREADY_EXISTS).
			other := tc.opts
			other.Mode, other.UID, other.GID = 0o700, 1, 1
			if _, err := e.ws.Create(context.Background(), v, other); !errors.Is(err, ErrIncompatible) {
				t.Fatalf("Create with another mode and owner = %v, want ErrIncompatible", err)
			}
			// A repeat (even asking for another size) changes nothing and returns the stored capacity.
			again, err := e.ws.Create(context.Background(), v, CreateOptions{Mode: tc.opts.Mode, UID: tc.opts.UID, GID: tc.opts.GID, Capacity: tc.opts.Capacity + 100})
			if err != nil {
				t.Fatalf("repeated Create = %v", err)
			}
			if again != tc.opts.Capacity {
				t.Errorf("repeated Create returned capacity %d, want the stored %d", again, tc.opts.Capacity)
			}
			mode2, uid2, gid2, ino2 := ownerOf(t, e.path(tc.subDir))
			if mode2 != mode || uid2 != uid || gid2 != gid || ino2 != ino {
				t.Errorf("repeat changed the directory: %v %d:%d ino %d -> %v %d:%d ino %d", mode, uid, gid, ino, mode2, uid2, gid2, ino2)
			}
		})
	}
	// Parents a template creates are plain 0755 directories, not volumes.
	if mode, _, _, _ := ownerOf(t, e.path("team-a/data")); mode.Perm() != 0o755 {
		t.Errorf("parent mode %v, want 0755", mode)
	}
	if _, err := e.claimOf("team-a"); err == nil {
		t.Errorf("a template parent got a claim")
	}
	if err := e.ws.Stat(context.Background(), vol("default-vol", "pvc-1", volume.OnDeleteDelete)); err != nil {
		t.Errorf("Stat of a created volume = %v", err)
	}
	// A forged ID naming this directory under another volume's name is not that volume.
	if err := e.ws.Stat(context.Background(), vol("x", "pvc-1", volume.OnDeleteDelete)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of pvc-1 as volume x = %v, want ErrNotFound", err)
	}
	if err := e.ws.Stat(context.Background(), vol("x", "nope", volume.OnDeleteDelete)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a missing volume = %v, want ErrNotFound", err)
	}
}

func TestCreateExistingDirectory(t *testing.T) {
	e := newEnv(t, nil)
	e.mkdir("legacy", 0o700)
	e.write("legacy/data.txt", "old data")
	if err := os.Chown(e.path("legacy"), 42, 43); err != nil {
		t.Fatal(err)
	}
	before := listing(t, e.path("legacy"))
	v := vol("pvc-legacy", "legacy", volume.OnDeleteDelete)

	_, err := e.ws.Create(context.Background(), v, CreateOptions{Mode: 0o777, UID: 1, GID: 1})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an unclaimed directory = %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), "reuseExisting") {
		t.Errorf("error %q does not say how to adopt it", err)
	}
	if _, err := e.claimOf("legacy"); err == nil {
		t.Fatal("a refused Create left a claim behind")
	}
	if got := listing(t, e.path("legacy")); got != before {
		t.Fatalf("refused Create changed the directory:\n%s\n---\n%s", before, got)
	}

	// With reuse it is adopted as it is: mode, owner and content untouched.
	if _, err := e.ws.Create(context.Background(), v, CreateOptions{Mode: 0o777, UID: 1, GID: 1, Reuse: true}); err != nil {
		t.Fatalf("Create with Reuse = %v", err)
	}
	if got := listing(t, e.path("legacy")); got != before {
		t.Fatalf("adoption changed the directory:\n%s\n---\n%s", before, got)
	}
	c, err := e.claimOf("legacy")
	if err != nil || !c.Adopted || c.State != "ready" || c.Name != "pvc-legacy" {
		t.Fatalf("claim after adoption = %+v, %v", c, err)
	}
	// Another volume cannot adopt it now, reuse or not.
	for _, reuse := range []bool{false, true} {
		_, err := e.ws.Create(context.Background(), vol("pvc-other", "legacy", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: reuse})
		if !errors.Is(err, ErrConflict) {
			t.Errorf("second adopter (reuse=%t) = %v, want ErrConflict", reuse, err)
		}
	}
	// A file or a symlink where the directory should be is never adopted.
	e.write("afile", "x")
	if err := os.Symlink(e.outside, e.path("alink")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"afile", "alink"} {
		for _, reuse := range []bool{false, true} {
			_, err := e.ws.Create(context.Background(), vol("pvc-"+name, name, volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: reuse})
			if !errors.Is(err, ErrExists) {
				t.Errorf("Create over %s (reuse=%t) = %v, want ErrExists", name, reuse, err)
			}
		}
	}
	if ents, _ := os.ReadDir(e.outside); len(ents) != 0 {
		t.Errorf("something was created outside the export: %v", ents)
	}
}

func TestCreateConflicts(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-a", "a", volume.OnDeleteDelete), defaultOpts())
	e.create(vol("pvc-deep", "x/y", volume.OnDeleteDelete), defaultOpts())
	e.write("plainfile", "f")
	if err := os.Symlink(e.outside, e.path("escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", e.path("to-a")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		v      volume.Volume
		reuse  bool
		target error
	}{
		{"claimed by another volume", vol("pvc-b", "a", volume.OnDeleteDelete), false, ErrConflict},
		{"claimed by another volume, reuse", vol("pvc-b", "a", volume.OnDeleteDelete), true, ErrConflict},
		{"nested inside a volume", vol("pvc-n", "a/inner", volume.OnDeleteDelete), false, ErrConflict},
		{"deeply nested inside a volume", vol("pvc-n", "a/b/c", volume.OnDeleteDelete), false, ErrConflict},
		{"adopting a parent of a volume", vol("pvc-x", "x", volume.OnDeleteDelete), true, ErrConflict},
		{"parent of a volume without reuse", vol("pvc-x", "x", volume.OnDeleteDelete), false, ErrConflict},
		{"parent is a symlink out of the export", vol("pvc-e", "escape/vol", volume.OnDeleteDelete), false, ErrNotDir},
		{"parent is a symlink into a volume", vol("pvc-t", "to-a/vol", volume.OnDeleteDelete), false, ErrNotDir},
		{"parent is a file", vol("pvc-f", "plainfile/vol", volume.OnDeleteDelete), false, ErrNotDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, e.export)
			_, err := e.ws.Create(context.Background(), tc.v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Reuse: tc.reuse})
			if !errors.Is(err, tc.target) {
				t.Fatalf("Create = %v, want %v", err, tc.target)
			}
			if got := listing(t, e.export); got != before {
				t.Errorf("refused Create changed the export:\n%s\n---\n%s", before, got)
			}
			if ents, _ := os.ReadDir(e.outside); len(ents) != 0 {
				t.Errorf("something was created outside the export: %v", ents)
			}
		})
	}
}

func TestCreateCrashRecovery(t *testing.T) {
	opts := CreateOptions{Mode: 0o750 | os.ModeSetgid, UID: 2000, GID: 3000, Capacity: 100}
	check := func(t *testing.T, e *env, subDir string) {
		t.Helper()
		mode, uid, gid, _ := ownerOf(t, e.path(subDir))
		if !mode.IsDir() || mode.Perm() != 0o750 || mode&os.ModeSetgid == 0 || uid != 2000 || gid != 3000 {
			t.Errorf("after the retry: %v %d:%d, want drwxr-s--- 2000:3000", mode, uid, gid)
		}
		c, err := e.claimOf(subDir)
		if err != nil || c.State != "ready" || c.Name != "pvc-c" || c.Capacity != 100 {
			t.Errorf("claim after the retry = %+v, %v", c, err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env, r *os.Root)
	}{
		{"claim pending, no directory", func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claim{Name: "pvc-c", SubDir: "vol", State: "pending", Capacity: 100})
		}},
		{"claim pending, directory made but mode and owner not applied", func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claim{Name: "pvc-c", SubDir: "vol", State: "pending", Capacity: 100})
			e.mkdir("vol", 0o700)
		}},
		{"leftover temporary claim file", func(t *testing.T, e *env, r *os.Root) {
			if err := r.WriteFile(claimPath("vol")+".tmp", []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			r := metaRoot(t, e)
			tc.setup(t, e, r)
			if _, err := e.ws.Create(context.Background(), vol("pvc-c", "vol", volume.OnDeleteDelete), opts); err != nil {
				t.Fatalf("retried Create = %v", err)
			}
			check(t, e, "vol")
		})
	}

	t.Run("pending claim of another volume blocks the directory", func(t *testing.T) {
		e := newEnv(t, nil)
		mustWriteClaim(t, metaRoot(t, e), claim{Name: "pvc-other", SubDir: "vol", State: "pending"})
		if _, err := e.ws.Create(context.Background(), vol("pvc-c", "vol", volume.OnDeleteDelete), opts); !errors.Is(err, ErrConflict) {
			t.Fatalf("Create = %v, want ErrConflict", err)
		}
		if exists(e.path("vol")) {
			t.Fatal("directory created despite another volume's claim")
		}
	})

	t.Run("claim ready, directory missing", func(t *testing.T) {
		// The directory vanished behind Paddock's back: Create must not hand out an empty
		// replacement as if nothing happened; Delete of the volume converges.
		e := newEnv(t, nil)
		mustWriteClaim(t, metaRoot(t, e), claim{Name: "pvc-c", SubDir: "vol", State: "ready", Capacity: 100})
		if _, err := e.ws.Create(context.Background(), vol("pvc-c", "vol", volume.OnDeleteDelete), opts); err == nil {
			t.Fatal("Create with a ready claim and no directory succeeded")
		}
		if exists(e.path("vol")) {
			t.Fatal("Create silently re-created a vanished volume directory")
		}
		if err := e.ws.Delete(context.Background(), vol("pvc-c", "vol", volume.OnDeleteDelete)); err != nil {
			t.Fatalf("Delete = %v", err)
		}
		if _, err := e.claimOf("vol"); err == nil {
			t.Fatal("claim left after Delete")
		}
	})

	for _, od := range []volume.OnDelete{volume.OnDeleteDelete, volume.OnDeleteArchive} {
		t.Run("delete crashed after the rename, "+string(od), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.TrashGrace = time.Hour })
			v := vol("pvc-c", "vol", od)
			e.create(v, opts)
			e.write("vol/data", "payload")
			// The rename happened, the claim removal did not.
			area := trashDir
			if od == volume.OnDeleteArchive {
				area = archiveDir
			}
			if err := os.Rename(e.path("vol"), e.path(area+"/"+trashName(e.clock.Now(), "pvc-c"))); err != nil {
				t.Fatal(err)
			}
			before := listing(t, e.path(area))
			for i := 0; i < 2; i++ {
				if err := e.ws.Delete(context.Background(), v); err != nil {
					t.Fatalf("retried Delete #%d = %v", i, err)
				}
			}
			if _, err := e.claimOf("vol"); err == nil {
				t.Fatal("claim left after the retried Delete")
			}
			if got := listing(t, e.path(area)); got != before {
				t.Errorf("the retry touched the moved directory:\n%s\n---\n%s", before, got)
			}
			if exists(e.path("vol")) {
				t.Error("the directory came back")
			}
		})
	}
}

func metaRoot(t *testing.T, e *env) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(e.export)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := ensureMeta(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func mustWriteClaim(t *testing.T, r *os.Root, c claim) {
	t.Helper()
	if err := writeClaim(r, c); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteToTrashThenReap(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-d", "team/pvc-d", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	e.write("team/pvc-d/a/b/c.txt", "deep")
	e.write("team/pvc-d/top.txt", "top")
	_, _, _, ino := ownerOf(t, e.path("team/pvc-d"))
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if exists(e.path("team/pvc-d")) {
		t.Fatal("directory still in place after Delete")
	}
	if !exists(e.path("team")) {
		t.Error("Delete removed the template parent")
	}
	if _, err := e.claimOf("team/pvc-d"); err == nil {
		t.Fatal("claim left after Delete")
	}
	trash := e.entries(trashDir)
	if len(trash) != 1 || !strings.Contains(trash[0], "pvc-d") {
		t.Fatalf("trash = %v, want one entry named after the volume", trash)
	}
	entry := trashDir + "/" + trash[0]
	if _, _, _, got := ownerOf(t, e.path(entry)); got != ino {
		t.Errorf("trash entry is inode %d, the volume was %d: not a rename", got, ino)
	}
	if b, err := os.ReadFile(e.path(entry + "/a/b/c.txt")); err != nil || string(b) != "deep" {
		t.Errorf("content in the trash = %q, %v", b, err)
	}
	// Deleting again is a no-op.
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatalf("second Delete = %v", err)
	}
	if n := len(e.entries(trashDir)); n != 1 {
		t.Fatalf("second Delete changed the trash: %d entries", n)
	}
	next, err := e.ws.Reap(context.Background(), xp)
	if err != nil {
		t.Fatal(err)
	}
	if !next.IsZero() {
		t.Errorf("Reap with nothing left returned next %v", next)
	}
	if left := e.entries(trashDir); len(left) != 0 {
		t.Fatalf("trash after Reap = %v", left)
	}
	// The volume's name and directory are free for a new volume.
	e.create(vol("pvc-d2", "team/pvc-d", volume.OnDeleteDelete), defaultOpts())
}

func TestTrashGrace(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TrashGrace = time.Hour })
	v := vol("pvc-g", "pvc-g", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	e.write("pvc-g/f", "keep me for an hour")
	deletedAt := e.clock.Now()
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(59 * time.Minute)
	next, err := e.ws.Reap(context.Background(), xp)
	if err != nil {
		t.Fatal(err)
	}
	if want := deletedAt.Add(time.Hour); !next.Equal(want) {
		t.Errorf("Reap returned next %v, want %v", next, want)
	}
	trash := e.entries(trashDir)
	if len(trash) != 1 {
		t.Fatalf("trash within the grace period = %v, want the entry kept", trash)
	}
	if b, err := os.ReadFile(e.path(trashDir + "/" + trash[0] + "/f")); err != nil || string(b) != "keep me for an hour" {
		t.Fatalf("content in the trash = %q, %v", b, err)
	}
	e.clock.Add(time.Minute)
	if next, err := e.ws.Reap(context.Background(), xp); err != nil || !next.IsZero() {
		t.Fatalf("Reap after the grace = %v, %v", next, err)
	}
	if left := e.entries(trashDir); len(left) != 0 {
		t.Fatalf("trash after the grace period = %v", left)
	}
}

func TestDeleteBigTreeIsOneRename(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TrashGrace = time.Hour })
	v := vol("pvc-big", "pvc-big", volume.OnDeleteDelete)
	e.create(v, defaultOpts())
	const files = 20000
	for d := 0; d < 100; d++ {
		dir := e.path(fmt.Sprintf("pvc-big/d%03d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < files/100; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, _, _, ino := ownerOf(t, e.path("pvc-big"))
	start := time.Now()
	if err := e.ws.Delete(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	trash := e.entries(trashDir)
	if len(trash) != 1 {
		t.Fatalf("trash = %v", trash)
	}
	entry := e.path(trashDir + "/" + trash[0])
	if _, _, _, got := ownerOf(t, entry); got != ino {
		t.Fatalf("trash entry inode %d != volume inode %d: the tree was not moved by one rename", got, ino)
	}
	if n := countFiles(t, entry); n != files {
		t.Fatalf("trash holds %d files, want %d intact", n, files)
	}
	if took > 5*time.Second {
		t.Errorf("Delete of a %d-file tree took %v", files, took)
	}
	e.clock.Add(2 * time.Hour)
	if _, err := e.ws.Reap(context.Background(), xp); err != nil {
		t.Fatal(err)
	}
	if left := e.entries(trashDir); len(left) != 0 {
		t.Fatalf("trash after Reap = %v", left)
	}
}

func TestDeleteArchive(t *testing.T) {
	t.Run("kept for ever", func(t *testing.T) {
		e := newEnv(t, nil)
		v := vol("pvc-ar", "ns/pvc-ar", volume.OnDeleteArchive)
		e.create(v, defaultOpts())
		e.write("ns/pvc-ar/db/data", "precious")
		before := listing(t, e.path("ns/pvc-ar"))
		if err := e.ws.Delete(context.Background(), v); err != nil {
			t.Fatal(err)
		}
		if exists(e.path("ns/pvc-ar")) {
			t.Fatal("archived directory still in place")
		}
		arch := e.entries(archiveDir)
		if len(arch) != 1 || !strings.HasPrefix(arch[0], "ns%2Fpvc-ar@") || strings.Contains(arch[0], "@until-") {
			t.Fatalf("archive = %v, want one ns%%2Fpvc-ar@<time> entry without expiry", arch)
		}
		if got := listing(t, e.path(archiveDir+"/"+arch[0])); got != before {
			t.Fatalf("archive content differs:\n%s\n---\n%s", before, got)
		}
		if _, err := e.claimOf("ns/pvc-ar"); err == nil {
			t.Fatal("claim left after archiving")
		}
		e.clock.Add(100 * 365 * 24 * time.Hour)
		if _, err := e.ws.Reap(context.Background(), xp); err != nil {
			t.Fatal(err)
		}
		if n := len(e.entries(archiveDir)); n != 1 {
			t.Fatalf("an archive without retention was reaped")
		}
	})
	t.Run("with retention", func(t *testing.T) {
		e := newEnv(t, nil)
		v := vol("pvc-ret", "pvc-ret", volume.OnDeleteArchive)
		v.ArchiveRetention = 24 * time.Hour
		e.create(v, defaultOpts())
		e.write("pvc-ret/f", "for a day")
		archivedAt := e.clock.Now()
		if err := e.ws.Delete(context.Background(), v); err != nil {
			t.Fatal(err)
		}
		arch := e.entries(archiveDir)
		if len(arch) != 1 || !strings.HasPrefix(arch[0], "pvc-ret@") || !strings.Contains(arch[0], "@until-") {
			t.Fatalf("archive = %v", arch)
		}
		e.clock.Add(23 * time.Hour)
		next, err := e.ws.Reap(context.Background(), xp)
		if err != nil {
			t.Fatal(err)
		}
		if want := archivedAt.Add(24 * time.Hour); !next.Equal(want) {
			t.Errorf("Reap next = %v, want %v", next, want)
		}
		if b, err := os.ReadFile(e.path(archiveDir + "/" + arch[0] + "/f")); err != nil || string(b) != "for a day" {
			t.Fatalf("archive before expiry: %q, %v", b, err)
		}
		e.clock.Add(time.Hour + time.Second)
		if _, err := e.ws.Reap(context.Background(), xp); err != nil {
			t.Fatal(err)
		}
		if left := e.entries(archiveDir); len(left) != 0 {
			t.Fatalf("archive after expiry = %v", left)
		}
	})
}

func TestDeleteRetain(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-keep", "pvc-keep", volume.OnDeleteRetain)
	e.create(v, CreateOptions{Mode: 0o700, UID: 7, GID: 8})
	e.write("pvc-keep/f", "kept")
	before := listing(t, e.path("pvc-keep"))
	for i := 0; i < 2; i++ {
		if err := e.ws.Delete(context.Background(), v); err != nil {
			t.Fatalf("Delete #%d = %v", i, err)
		}
	}
	if got := listing(t, e.path("pvc-keep")); got != before {
		t.Fatalf("retain changed the directory:\n%s\n---\n%s", before, got)
	}
	if _, err := e.claimOf("pvc-keep"); err == nil {
		t.Fatal("claim left after retain")
	}
	if n := len(e.entries(trashDir)) + len(e.entries(archiveDir)); n != 0 {
		t.Fatalf("retain moved something into trash or archive")
	}
}

func TestDeleteOfAnotherVolumesDirectoryTouchesNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-owner", "owned", volume.OnDeleteDelete), defaultOpts())
	e.write("owned/f", "mine")
	e.mkdir("unclaimed", 0o755)
	e.write("unclaimed/g", "not Paddock's")
	tests := []struct {
		name   string
		v      volume.Volume
		target error
	}{
		{"missing directory", vol("pvc-gone", "gone", volume.OnDeleteDelete), nil},
		{"missing directory, archive", vol("pvc-gone", "gone", volume.OnDeleteArchive), nil},
		// Not this volume's directory: the volume no longer exists, so Delete succeeds and touches nothing.
		{"unclaimed directory", vol("pvc-x", "unclaimed", volume.OnDeleteDelete), nil},
		{"unclaimed directory, archive", vol("pvc-x", "unclaimed", volume.OnDeleteArchive), nil},
		{"unclaimed directory, retain", vol("pvc-x", "unclaimed", volume.OnDeleteRetain), nil},
		{"another volume's directory", vol("pvc-thief", "owned", volume.OnDeleteDelete), nil},
		{"another volume's directory, archive", vol("pvc-thief", "owned", volume.OnDeleteArchive), nil},
		{"another volume's directory, retain", vol("pvc-thief", "owned", volume.OnDeleteRetain), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, e.export)
			err := e.ws.Delete(context.Background(), tc.v)
			if !errors.Is(err, tc.target) || (tc.target == nil) != (err == nil) {
				t.Fatalf("Delete = %v, want %v", err, tc.target)
			}
			if got := listing(t, e.export); got != before {
				t.Errorf("Delete changed the export:\n%s\n---\n%s", before, got)
			}
		})
	}
	if err := e.ws.SetCapacity(context.Background(), vol("pvc-thief", "owned", volume.OnDeleteDelete), 10, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetCapacity by a non-owner = %v, want ErrNotFound", err)
	}
	if err := e.ws.SetCapacity(context.Background(), vol("pvc-x", "unclaimed", volume.OnDeleteDelete), 10, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetCapacity of an unclaimed dir = %v, want ErrNotFound", err)
	}
}

func TestSetCapacity(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-cap", "pvc-cap", volume.OnDeleteDelete)
	if _, err := e.ws.Create(context.Background(), v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ set, want int64 }{{20, 20}, {15, 20}, {30, 30}} {
		if err := e.ws.SetCapacity(context.Background(), v, tc.set, nil); err != nil {
			t.Fatal(err)
		}
		got, err := e.ws.Create(context.Background(), v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Capacity: 1})
		if err != nil || got != tc.want {
			t.Errorf("after SetCapacity(%d) Create returned %d, %v; want %d (never shrinks)", tc.set, got, err, tc.want)
		}
	}
}

// A forged ID naming a directory Paddock never provisioned (an export reached through its parent
// path, say) must be refused or be a no-op, and must leave no metadata area behind.
func TestDeleteOfUnprovisionedCreatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		present bool
		od      volume.OnDelete
		wantErr error
	}{
		{"absent, delete", false, volume.OnDeleteDelete, nil},
		{"absent, archive", false, volume.OnDeleteArchive, nil},
		{"present, delete", true, volume.OnDeleteDelete, nil},
		{"present, archive", true, volume.OnDeleteArchive, nil},
		{"present, retain", true, volume.OnDeleteRetain, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if tc.present {
				if err := os.MkdirAll(e.path("foreign/data"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := listing(t, e.export)
			err := e.ws.Delete(context.Background(), vol("pvc-forged", "foreign", tc.od))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !isErr(err, tc.wantErr) {
				t.Fatalf("Delete = %v, want %v", err, tc.wantErr)
			}
			if after := listing(t, e.export); after != before {
				t.Fatalf("export changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
