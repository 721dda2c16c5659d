package share

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// populate fills a volume directory with every kind of entry a copy must handle, including symlinks
// that point out of the volume and out of the export.
func (e *env) populate(subDir string) {
	e.t.Helper()
	e.write(subDir+"/a.txt", "alpha")
	e.write(subDir+"/dir/b.txt", "bravo")
	e.write(subDir+"/dir/deep/c.txt", "charlie")
	must(e.t, os.Chmod(e.path(subDir+"/a.txt"), 0o4751))
	must(e.t, os.Chmod(e.path(subDir+"/dir/deep"), 0o555))
	must(e.t, os.Lchown(e.path(subDir+"/dir/b.txt"), 1234, 5678))
	must(e.t, os.Symlink("/etc/passwd", e.path(subDir+"/abs-link")))
	must(e.t, os.Symlink("../../outside", e.path(subDir+"/rel-link")))
	must(e.t, os.Symlink(e.outside, e.path(subDir+"/dir/outside-link")))
	must(e.t, os.Lchown(e.path(subDir+"/abs-link"), 42, 43))
	must(e.t, unix.Mkfifo(e.path(subDir+"/fifo"), 0o640))
	must(e.t, os.Mkdir(e.path(subDir+"/empty"), 0o1777))
	must(e.t, os.Chmod(e.path(subDir+"/empty"), 0o1777))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(e.t, os.Chtimes(e.path(subDir+"/dir/b.txt"), old, old))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tree is listing plus modification times, for files whose content and metadata must match.
func tree(t *testing.T, dir string) string {
	t.Helper()
	l := listing(t, dir)
	var lines []string
	for _, line := range strings.Split(l, "\n") {
		rel, _, _ := strings.Cut(line, " ")
		fi, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if rel == "." { // the volume root's own attributes come from its class, not the copy
			continue
		}
		if fi.Mode().IsRegular() || fi.Mode()&os.ModeSymlink != 0 {
			line += " @" + fi.ModTime().UTC().Format(time.RFC3339Nano)
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

func TestSnapshotCopyAndRestore(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	src := vol("pvc-src", "pvc-src", volume.OnDeleteDelete)
	e.create(src, defaultOpts())
	e.populate("pvc-src")
	outsideBefore := listing(t, e.outside)
	want := tree(t, e.path("pvc-src"))

	info, err := e.ws.CreateSnapshot(ctx, src, "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	if !info.Ready || info.SourceVolumeID != src.ID() || info.Name != "snap-1" || info.Created.IsZero() {
		t.Fatalf("snapshot info %+v", info)
	}
	if info.Size != int64(len("alpha")+len("bravo")+len("charlie")) {
		t.Fatalf("size %d, want the sum of regular file sizes", info.Size)
	}
	data := e.path(snapshotData("snap-1"))
	if got := tree(t, data); got != want {
		t.Fatalf("snapshot differs from its source:\n got %s\nwant %s", got, want)
	}
	// Symlinks are copied as symlinks: their targets outside the volume are never read or changed.
	if target, err := os.Readlink(filepath.Join(data, "rel-link")); err != nil || target != "../../outside" {
		t.Fatalf("rel-link = %q, %v", target, err)
	}
	if got := listing(t, e.outside); got != outsideBefore {
		t.Fatalf("the copy touched a directory outside the export:\n%s\n%s", got, outsideBefore)
	}

	// Later writes to the source do not reach the snapshot.
	e.write("pvc-src/a.txt", "changed")
	e.write("pvc-src/new.txt", "new")
	must(t, os.Remove(e.path("pvc-src/dir/b.txt")))
	if got := tree(t, data); got != want {
		t.Fatalf("snapshot changed after writes to its source:\n got %s\nwant %s", got, want)
	}

	// Idempotent by name and source; a different source under the same name is refused.
	again, err := e.ws.CreateSnapshot(ctx, src, "snap-1")
	if err != nil || again != info {
		t.Fatalf("repeat CreateSnapshot = %+v, %v; want %+v", again, err, info)
	}
	other := vol("pvc-other", "pvc-other", volume.OnDeleteDelete)
	e.create(other, defaultOpts())
	if _, err := e.ws.CreateSnapshot(ctx, other, "snap-1"); !isErr(err, ErrIncompatible) {
		t.Fatalf("same name, other source: %v, want ErrIncompatible", err)
	}

	// Restore: a new volume with the snapshot's content; its root keeps the class's mode.
	s := volume.SnapshotOf(src, "snap-1")
	restored := vol("pvc-restored", "pvc-restored", volume.OnDeleteDelete)
	o := CreateOptions{Mode: 0o770 | os.ModeSetgid, UID: -1, GID: -1, Source: SnapshotSource(s)}
	if _, err := e.ws.Create(ctx, restored, o); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, e.path("pvc-restored")); got != want {
		t.Fatalf("restored volume differs from the snapshot:\n got %s\nwant %s", got, want)
	}
	if mode, _, _, _ := ownerOf(t, e.path("pvc-restored")); mode != os.ModeDir|os.ModeSetgid|0o770 {
		t.Fatalf("restored root mode %v", mode)
	}
	// A retry is idempotent; the same name from another source is refused.
	if _, err := e.ws.Create(ctx, restored, o); err != nil {
		t.Fatalf("repeat restore: %v", err)
	}
	if _, err := e.ws.Create(ctx, restored, defaultOpts()); !isErr(err, ErrIncompatible) {
		t.Fatalf("same volume without a source: %v, want ErrIncompatible", err)
	}

	// Clone the (now changed) source.
	clone := vol("pvc-clone", "pvc-clone", volume.OnDeleteDelete)
	if _, err := e.ws.Create(ctx, clone, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: VolumeSource(src)}); err != nil {
		t.Fatal(err)
	}
	if got, want := tree(t, e.path("pvc-clone")), tree(t, e.path("pvc-src")); got != want {
		t.Fatalf("clone differs from its source:\n got %s\nwant %s", got, want)
	}

	// Delete moves the snapshot into the trash; a second delete is a no-op.
	if err := e.ws.DeleteSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	if exists(e.path(snapshotPath("snap-1"))) {
		t.Fatal("snapshot still in place after delete")
	}
	if err := e.ws.DeleteSnapshot(ctx, s); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := e.ws.GetSnapshot(ctx, s); !isErr(err, ErrSnapshotNotFound) {
		t.Fatalf("GetSnapshot after delete: %v", err)
	}
	// The restored volume is a copy and survives.
	if b, err := os.ReadFile(e.path("pvc-restored/a.txt")); err != nil || string(b) != "alpha" {
		t.Fatalf("restored a.txt = %q, %v", b, err)
	}
	if got := listing(t, e.outside); got != outsideBefore {
		t.Fatal("something outside the export changed")
	}
}

func TestCreateFromMissingSource(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	src := vol("pvc-src", "pvc-src", volume.OnDeleteDelete)
	e.create(src, defaultOpts())
	for name, o := range map[string]*Source{
		"unknown snapshot":      SnapshotSource(volume.SnapshotOf(src, "nope")),
		"unknown volume":        VolumeSource(vol("pvc-gone", "pvc-gone", volume.OnDeleteDelete)),
		"volume forged by name": VolumeSource(vol("pvc-thief", "pvc-src", volume.OnDeleteDelete)),
	} {
		t.Run(name, func(t *testing.T) {
			v := vol("pvc-new", "pvc-new", volume.OnDeleteDelete)
			_, err := e.ws.Create(ctx, v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: o})
			if !isErr(err, ErrSourceNotFound) {
				t.Fatalf("Create = %v, want ErrSourceNotFound", err)
			}
			if exists(e.path("pvc-new")) {
				t.Fatal("a failed create left a directory")
			}
			if _, err := e.claimOf("pvc-new"); err == nil {
				t.Fatal("a failed create left a claim")
			}
		})
	}
	if _, err := e.ws.CreateSnapshot(ctx, vol("pvc-gone", "pvc-gone", volume.OnDeleteDelete), "s"); !isErr(err, ErrSourceNotFound) {
		t.Fatalf("snapshot of a missing volume: %v", err)
	}
	if exists(e.path(snapshotPath("s"))) {
		t.Fatal("a failed snapshot left a directory")
	}
	// Across exports: refused before anything is touched.
	far := src
	far.Server = "other.example"
	if _, err := e.ws.Create(ctx, vol("pvc-x", "pvc-x", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: VolumeSource(far)}); !isErr(err, ErrUnsupported) {
		t.Fatalf("clone across exports: %v", err)
	}
}

// A crash mid-copy leaves a pending record (or pending claim); the retry starts the copy again.
func TestSnapshotAndRestoreRetryAfterCrash(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	src := vol("pvc-src", "pvc-src", volume.OnDeleteDelete)
	e.create(src, defaultOpts())
	e.write("pvc-src/f", "content")

	// A half-made snapshot: pending record, stray partial data.
	e.mkdir(snapshotData("snap"), 0o700)
	e.write(snapshotData("snap")+"/junk", "partial")
	r, err := os.OpenRoot(e.export)
	must(t, err)
	defer r.Close()
	must(t, writeSnapshotRecord(r, "snap", snapshotRecord{Name: "snap", Source: src.ID(), State: "pending", Created: 1}))
	s := volume.SnapshotOf(src, "snap")
	if list, err := e.ws.ListSnapshots(ctx, nil); err != nil || len(list) != 0 {
		t.Fatalf("a pending snapshot is listed: %v %v", list, err)
	}
	info, err := e.ws.CreateSnapshot(ctx, src, "snap")
	if err != nil || !info.Ready {
		t.Fatalf("retry: %+v %v", info, err)
	}
	if got := e.entries(snapshotData("snap")); fmt.Sprint(got) != "[f]" {
		t.Fatalf("snapshot data after retry: %v", got)
	}

	// A half-made restore: pending claim, partial content.
	v := vol("pvc-r", "pvc-r", volume.OnDeleteDelete)
	c := claimOf(v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: SnapshotSource(s)})
	must(t, writeClaim(r, c))
	e.mkdir("pvc-r", 0o777)
	e.write("pvc-r/partial", "x")
	if _, err := e.ws.Create(ctx, v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: SnapshotSource(s)}); err != nil {
		t.Fatal(err)
	}
	if got := e.entries("pvc-r"); fmt.Sprint(got) != "[f]" {
		t.Fatalf("restored volume after retry: %v", got)
	}
}

func TestSnapshotIDsCannotEscape(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	src := vol("pvc-src", "pvc-src", volume.OnDeleteDelete)
	e.create(src, defaultOpts())
	e.write("pvc-src/keep", "keep")
	e.write("other-dir/keep", "keep")
	before := listing(t, filepath.Dir(e.export))
	for _, id := range []string{
		"1s##nfs.example#/export#..", "1s##nfs.example#/export#.", "1s##nfs.example#/export#../trash",
		"1s##nfs.example#/export#..%2F..", "1s##nfs.example#/export#", "1s##nfs.example#/export#.paddock",
		"1s##nfs.example#/export#pvc-src/..",
	} {
		s, err := volume.ParseSnapshotID(id)
		if err == nil {
			// Decodes: it may only name an entry of .paddock/snapshots, which does not exist.
			if err := e.ws.DeleteSnapshot(ctx, s); err != nil {
				t.Fatalf("DeleteSnapshot(%q) = %v", id, err)
			}
			continue
		}
	}
	// A snapshot directory name that is a volume's name is still only looked up in the snapshot area.
	s := volume.Snapshot{Server: testServer, Share: testShare, Dir: "pvc-src"}
	if err := e.ws.DeleteSnapshot(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ws.Create(ctx, vol("pvc-n", "pvc-n", volume.OnDeleteDelete), CreateOptions{Mode: 0o777, UID: -1, GID: -1, Source: SnapshotSource(s)}); !isErr(err, ErrSourceNotFound) {
		t.Fatalf("restore from a snapshot ID naming a volume dir: %v", err)
	}
	after := listing(t, filepath.Dir(e.export))
	// Only metadata (and the refused volume's nothing) may differ.
	strip := func(l string) string {
		var keep []string
		for _, line := range strings.Split(l, "\n") {
			if !strings.Contains(line, ".paddock") && !strings.HasPrefix(line, "work") {
				keep = append(keep, line)
			}
		}
		return strings.Join(keep, "\n")
	}
	if strip(after) != strip(before) {
		t.Fatalf("forged snapshot IDs changed data:\nbefore %s\nafter %s", strip(before), strip(after))
	}
}

func TestListVolumesAndSnapshots(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	var want []string
	for i := 0; i < 5; i++ {
		v := vol(fmt.Sprintf("pvc-%d", i), fmt.Sprintf("ns/pvc-%d", i), volume.OnDeleteDelete)
		if i == 2 {
			v.OnDelete, v.ArchiveRetention = volume.OnDeleteArchive, time.Hour
		}
		if _, err := e.ws.Create(ctx, v, CreateOptions{Mode: 0o777, UID: -1, GID: -1, Capacity: int64(i)}); err != nil {
			t.Fatal(err)
		}
		want = append(want, v.ID())
	}
	list, err := e.ws.ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, lv := range list {
		got = append(got, lv.ID)
		if _, err := volume.ParseID(lv.ID); err != nil {
			t.Fatalf("listed ID %q does not parse: %v", lv.ID, err)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(sortedCopy(want)) {
		t.Fatalf("ListVolumes = %v, want %v", got, sortedCopy(want))
	}
	// An older claim without the ID fields is left out until Create sees the volume again.
	r, err := os.OpenRoot(e.export)
	must(t, err)
	defer r.Close()
	legacy := vol("pvc-legacy", "pvc-legacy", volume.OnDeleteRetain)
	e.mkdir("pvc-legacy", 0o777)
	must(t, writeClaim(r, claim{Name: "pvc-legacy", SubDir: "pvc-legacy", State: "ready", Capacity: 7}))
	if list, _ := e.ws.ListVolumes(ctx); len(list) != 5 {
		t.Fatalf("legacy claim listed: %d entries", len(list))
	}
	if got, err := e.ws.Create(ctx, legacy, defaultOpts()); err != nil || got != 7 {
		t.Fatalf("Create on a legacy claim = %d, %v", got, err)
	}
	list, _ = e.ws.ListVolumes(ctx)
	found := false
	for _, lv := range list {
		found = found || lv.ID == legacy.ID()
	}
	if !found || len(list) != 6 {
		t.Fatalf("legacy volume not listed after Create: %v", list)
	}
	// Deleted volumes disappear.
	must(t, e.ws.Delete(ctx, legacy))
	if list, _ := e.ws.ListVolumes(ctx); len(list) != 5 {
		t.Fatalf("deleted volume still listed: %d", len(list))
	}

	// Snapshots of two volumes, listed sorted.
	v0 := vol("pvc-0", "ns/pvc-0", volume.OnDeleteDelete)
	v1 := vol("pvc-1", "ns/pvc-1", volume.OnDeleteDelete)
	for _, n := range []string{"b", "a", "c"} {
		if _, err := e.ws.CreateSnapshot(ctx, v0, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ws.CreateSnapshot(ctx, v1, "d"); err != nil {
		t.Fatal(err)
	}
	snaps, err := e.ws.ListSnapshots(ctx, nil)
	if err != nil || len(snaps) != 4 {
		t.Fatalf("ListSnapshots = %v, %v", snaps, err)
	}
	for i := 1; i < len(snaps); i++ {
		if snaps[i-1].ID >= snaps[i].ID {
			t.Fatalf("not sorted: %v", snaps)
		}
	}

	// Health: a claimed directory that vanished is reported.
	sick, err := e.ws.ListVolumeHealth(ctx)
	if err != nil || len(sick) != 0 {
		t.Fatalf("ListVolumeHealth = %v, %v", sick, err)
	}
	must(t, os.RemoveAll(e.path("ns/pvc-3")))
	sick, _ = e.ws.ListVolumeHealth(ctx)
	if len(sick) != 1 || sick[0].Problem != ProblemMissing {
		t.Fatalf("ListVolumeHealth after rm = %+v", sick)
	}
	if p, err := e.ws.VolumeHealth(ctx, vol("pvc-3", "ns/pvc-3", volume.OnDeleteDelete)); err != nil || p != ProblemMissing {
		t.Fatalf("VolumeHealth = %q, %v", p, err)
	}
	if _, err := e.ws.VolumeHealth(ctx, vol("pvc-thief", "ns/pvc-1", volume.OnDeleteDelete)); !isErr(err, ErrNotFound) {
		t.Fatalf("VolumeHealth of a forged ID = %v", err)
	}
	if avail, err := e.ws.Available(ctx, xp); err != nil || avail <= 0 {
		t.Fatalf("Available = %d, %v", avail, err)
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// A copy that runs out of time stops, leaves no ready snapshot, and the retry copies everything.
func TestSnapshotDeadlineThenRetry(t *testing.T) {
	e := newEnv(t, nil)
	src := vol("pvc-big", "pvc-big", volume.OnDeleteDelete)
	e.create(src, defaultOpts())
	for i := 0; i < 400; i++ {
		e.write(fmt.Sprintf("pvc-big/d%d/f%d", i%20, i), strings.Repeat("x", i))
	}
	want := tree(t, e.path("pvc-big"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
	defer cancel()
	if _, err := e.ws.CreateSnapshot(ctx, src, "big"); err == nil {
		t.Log("the copy beat a 2ms deadline; only the retry path is checked")
	} else if info, gerr := e.ws.GetSnapshot(context.Background(), volume.SnapshotOf(src, "big")); gerr == nil && info.Ready {
		t.Fatalf("a copy that failed (%v) left a ready snapshot", err)
	}
	info, err := e.ws.CreateSnapshot(context.Background(), src, "big")
	if err != nil || !info.Ready {
		t.Fatalf("retry: %+v, %v", info, err)
	}
	if got := tree(t, e.path(snapshotData("big"))); got != want {
		t.Fatal("snapshot after retry differs from its source")
	}
	var sum int64
	for i := 0; i < 400; i++ {
		sum += int64(i)
	}
	if info.Size != sum {
		t.Fatalf("size %d, want %d", info.Size, sum)
	}
}
