package load

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTreeLayout(t *testing.T) {
	for _, tc := range []struct {
		files      int
		wantLeaves int
		wantDirs   int
		first      string
		last       string
	}{
		{1, 1, 1, "d00", "d00"},
		{100, 1, 1, "d00", "d00"},
		{101, 2, 2, "d00", "d01"},
		{10000, 100, 100, "d00", "d99"},
		{10001, 101, 103, "d00/d00", "d01/d00"}, // two top dirs + 101 leaves
		{12345, 124, 126, "d00/d00", "d01/d23"},
	} {
		leaves, dirs := treeLayout(tc.files)
		if len(leaves) != tc.wantLeaves || dirs != tc.wantDirs || leaves[0] != tc.first || leaves[len(leaves)-1] != tc.last {
			t.Errorf("treeLayout(%d) = %d leaves [%s..%s], %d dirs; want %d [%s..%s], %d",
				tc.files, len(leaves), leaves[0], leaves[len(leaves)-1], dirs, tc.wantLeaves, tc.first, tc.last, tc.wantDirs)
		}
	}
}

// countTree returns the files and directories below root.
func countTree(t *testing.T, root string) (files, dirs int) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if d.IsDir() {
			dirs++
		} else {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, dirs
}

func TestFloorMkdirChmod(t *testing.T) {
	for _, keep := range []bool{false, true} {
		dir := t.TempDir()
		rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorMkdirChmod, Dir: dir, N: 50, Workers: 3, Prefix: "mk", Keep: keep})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Ops) != 1 || rep.Ops[0].Op != "mkdir+chmod" || rep.Ops[0].Count != 50 || rep.Ops[0].Errors != 0 || rep.Ops[0].OpsPerS <= 0 {
			t.Fatalf("keep=%v ops %+v", keep, rep.Ops)
		}
		ents, _ := os.ReadDir(dir)
		if !keep && len(ents) != 0 {
			t.Errorf("left %d entries without -keep", len(ents))
		}
		if keep {
			if len(ents) != 50 {
				t.Fatalf("-keep left %d dirs, want 50", len(ents))
			}
			// chmod beats the umask: the mode is exactly 0777.
			fi, _ := os.Stat(filepath.Join(dir, "mk-0"))
			if fi.Mode().Perm() != 0o777 {
				t.Errorf("mode %v, want 0777", fi.Mode().Perm())
			}
		}
	}

	// Existing names are errors, counted, not fatal.
	dir := t.TempDir()
	for _, n := range []string{"dup-1", "dup-3"} {
		os.Mkdir(filepath.Join(dir, n), 0o755)
	}
	rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorMkdirChmod, Dir: dir, N: 5, Workers: 2, Prefix: "dup", Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Ops[0]; s.Count != 5 || s.Errors != 2 || !strings.Contains(s.FirstError, "file exists") {
		t.Errorf("stats with collisions %+v", s)
	}
}

func TestFloorRename(t *testing.T) {
	dir := t.TempDir()
	// Something of the user's in the directory must survive the cleanup.
	os.WriteFile(filepath.Join(dir, "keepme"), []byte("x"), 0o644)
	rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorRename, Dir: dir, N: 40, Workers: 2, Prefix: "rn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Ops) != 1 || rep.Ops[0].Op != "rename" || rep.Ops[0].Count != 40 || rep.Ops[0].Errors != 0 {
		t.Fatalf("ops %+v", rep.Ops)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "keepme" {
		t.Errorf("after cleanup: %v", ents)
	}

	dir = t.TempDir()
	if _, err := RunFloor(context.Background(), FloorOptions{Kind: FloorRename, Dir: dir, N: 3, Prefix: "k", Keep: true}); err != nil {
		t.Fatal(err)
	}
	moved, _ := os.ReadDir(filepath.Join(dir, ".trash-k"))
	if len(moved) != 3 {
		t.Errorf("-keep: %d dirs in the trash, want 3", len(moved))
	}
}

func TestFloorMakeTree(t *testing.T) {
	for _, files := range []int{1, 250, 1000} {
		dir := filepath.Join(t.TempDir(), "tree")
		rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorMakeTree, Dir: dir, Files: files, Workers: 2, Prefix: "t"})
		if err != nil {
			t.Fatal(err)
		}
		if got := opNames(rep); !reflect.DeepEqual(got, []string{"mkdir", "create", "make-tree"}) {
			t.Fatalf("ops %v", got)
		}
		_, wantDirs := treeLayout(files)
		if c := opByName(t, rep, "create"); c.Count != files || c.Errors != 0 {
			t.Errorf("create %+v", c)
		}
		if w := opByName(t, rep, "make-tree"); w.Count != 1 || w.Items != files+wantDirs || w.ItemsPerS <= 0 {
			t.Errorf("make-tree %+v", w)
		}
		gotFiles, gotDirs := countTree(t, dir)
		if gotFiles != files || gotDirs != wantDirs {
			t.Errorf("files=%d: tree has %d files %d dirs, want %d %d", files, gotFiles, gotDirs, files, wantDirs)
		}
		if rep.Config.Files != files || rep.Config.N != 0 {
			t.Errorf("config %+v", rep.Config)
		}
	}
	// Building over an existing tree collides on every file: counted.
	dir := filepath.Join(t.TempDir(), "tree")
	RunFloor(context.Background(), FloorOptions{Kind: FloorMakeTree, Dir: dir, Files: 10, Prefix: "t"})
	rep, _ := RunFloor(context.Background(), FloorOptions{Kind: FloorMakeTree, Dir: dir, Files: 10, Prefix: "t"})
	if c := opByName(t, rep, "create"); c.Errors != 10 {
		t.Errorf("second make-tree create %+v", c)
	}
	if w := opByName(t, rep, "make-tree"); w.Errors != 1 {
		t.Errorf("second make-tree whole %+v", w)
	}
}

func TestFloorRmRf(t *testing.T) {
	if _, err := exec.LookPath("rm"); err != nil {
		t.Skip("no rm in PATH")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keepme"), []byte("x"), 0o644)
	rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorRmRf, Dir: dir, Files: 300, Workers: 2, Prefix: "rr", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if got := opNames(rep); !reflect.DeepEqual(got, []string{"os.RemoveAll", "rm -rf"}) {
		t.Fatalf("ops %v", got)
	}
	_, dirs := treeLayout(300)
	for _, o := range rep.Ops {
		if o.Count != 1 || o.Errors != 0 || o.Items != 300+dirs+1 || o.MaxMs <= 0 || o.ItemsPerS <= 0 {
			t.Errorf("%+v", o)
		}
	}
	// Only the trees it built are gone.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "keepme" {
		t.Errorf("after rm-rf: %v", ents)
	}
	// It refuses to build over an existing path instead of removing it.
	os.Mkdir(filepath.Join(dir, "mine-rmrf"), 0o755)
	if _, err := RunFloor(context.Background(), FloorOptions{Kind: FloorRmRf, Dir: dir, Files: 5, Prefix: "mine"}); err == nil {
		t.Error("rm-rf over an existing tree did not refuse")
	}
	if _, err := os.Stat(filepath.Join(dir, "mine-rmrf")); err != nil {
		t.Errorf("existing dir touched: %v", err)
	}
}

func TestFloorValidate(t *testing.T) {
	for _, tc := range []struct {
		o    FloorOptions
		want string
	}{
		{FloorOptions{Kind: "nope", Prefix: "p"}, "unknown floor kind"},
		{FloorOptions{Kind: FloorMkdirChmod, N: 1, Prefix: "p"}, "-dir"},
		{FloorOptions{Kind: FloorRename, Dir: "/x", Prefix: "p"}, "-n"},
		{FloorOptions{Kind: FloorMountMkdirUmount, N: 1, Prefix: "p"}, "-source"},
		{FloorOptions{Kind: FloorMountUmount, N: 1, Source: "s:/e", Prefix: "p"}, "-target-dir"},
		{FloorOptions{Kind: FloorMakeTree, Dir: "/x", Prefix: "p"}, "-files"},
		{FloorOptions{Kind: FloorRmRf, Files: 1, Prefix: "p"}, "-dir"},
		{FloorOptions{Kind: FloorMkdirChmod, Dir: "/x", N: 1, Prefix: "../p"}, "prefix"},
	} {
		if _, err := RunFloor(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RunFloor(%+v) error %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestFloorMounts runs the two mount floors with tmpfs instead of NFS (the
// host kernel has no NFS client). It needs root and a mount(8) that works,
// and skips otherwise; the NFS numbers come from the VM testbed.
func TestFloorMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount in PATH")
	}
	probe := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "none", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs here: %v %s", err, out)
	}
	exec.Command("umount", probe).Run()

	targets := t.TempDir()
	rep, err := RunFloor(context.Background(), FloorOptions{Kind: FloorMountUmount, Source: "none", MountType: "tmpfs",
		MountOpts: "size=1m", N: 6, Workers: 2, TargetDir: targets, Prefix: "mu", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := opNames(rep); !reflect.DeepEqual(got, []string{"mount", "umount"}) {
		t.Fatalf("ops %v", got)
	}
	for _, o := range rep.Ops {
		if o.Count != 6 || o.Errors != 0 {
			t.Errorf("%+v", o)
		}
	}
	if ents, _ := os.ReadDir(targets); len(ents) != 0 {
		t.Errorf("targets left: %v", ents)
	}

	rep, err = RunFloor(context.Background(), FloorOptions{Kind: FloorMountMkdirUmount, Source: "none", MountType: "tmpfs",
		N: 4, TargetDir: targets, Prefix: "mmu", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := opNames(rep); !reflect.DeepEqual(got, []string{"mount", "mkdir", "umount", "mount+mkdir+umount"}) {
		t.Fatalf("ops %v", got)
	}
	for _, o := range rep.Ops {
		if o.Count != 4 || o.Errors != 0 {
			t.Errorf("%+v", o)
		}
	}

	// A mount that fails is counted with mount's own message, and nothing
	// is unmounted for it.
	rep, err = RunFloor(context.Background(), FloorOptions{Kind: FloorMountUmount, Source: "none", MountType: "nosuchfs",
		N: 2, TargetDir: targets, Prefix: "bad", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if m := opByName(t, rep, "mount"); m.Errors != 2 || !strings.Contains(m.FirstError, "mount -t nosuchfs") {
		t.Errorf("failing mount %+v", m)
	}
	if u := opByName(t, rep, "umount"); u.Count != 0 {
		t.Errorf("umount of failed mounts %+v", u)
	}
}
