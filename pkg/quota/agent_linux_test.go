//go:build linux

package quota

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// fakeKernel keeps project IDs by inode and quotas by ID: the allocation rules run on any
// filesystem. The real XFS calls are proven in the guest (test/e2e/node quota tests).
type fakeKernel struct {
	mu       sync.Mutex
	projects map[uint64]uint32
	limits   map[uint32]Limit
	usage    map[uint32]Usage // extra usage by ID, as files in the trash would add
	failSet  int              // setProject fails this many more times
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{projects: map[uint64]uint32{}, limits: map[uint32]Limit{}, usage: map[uint32]Usage{}}
}

func ino(fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		panic(err)
	}
	return st.Ino
}

func (k *fakeKernel) project(fd int) (uint32, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id, ok := k.projects[ino(fd)]
	return id, ok, nil
}

func (k *fakeKernel) setProject(fd int, id uint32, inherit bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failSet > 0 {
		k.failSet--
		return errors.New("injected: agent killed before tagging")
	}
	k.projects[ino(fd)] = id
	return nil
}

func (k *fakeKernel) quota(fd int, id uint32) (Usage, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	u := k.usage[id]
	u.ProjectID = id
	for _, p := range k.projects {
		if p == id {
			u.Inodes++
		}
	}
	u.Limit = k.limits[id]
	return u, nil
}

func (k *fakeKernel) setLimit(fd int, id uint32, l Limit) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.limits[id] = l
	return nil
}

func (k *fakeKernel) enforced(fd int) error                 { return nil }
func (k *fakeKernel) statfs(fd int) (uint64, uint64, error) { return 1 << 30, 1 << 29, nil }

// testFS is a directory posing as the root of a filesystem, with export roots beneath it.
func testFS(t *testing.T) (string, []mount.MountInfo) {
	t.Helper()
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return dir, []mount.MountInfo{{MountPoint: dir, Root: "/", Major: int(unix.Major(st.Dev)), Minor: int(unix.Minor(st.Dev))}}
}

func mkdirs(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func newTestAgent(t *testing.T, k kernel, fsroot string, mi []mount.MountInfo, ids IDRange) *Agent {
	t.Helper()
	a, err := newAgent(k, []string{filepath.Join(fsroot, "export")}, ids, mi)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestSetAllocatesDistinctIDsAndIsIdempotent(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "v1"), filepath.Join(exp, "v2"))
	k := newFakeKernel()
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	ctx := context.Background()
	u1, err := a.Set(ctx, Target{Export: exp, Path: "v1"}, Limit{Bytes: 10 << 20})
	if err != nil {
		t.Fatal(err)
	}
	u2, err := a.Set(ctx, Target{Export: exp, Path: "v2"}, Limit{Bytes: 20 << 20, Inodes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if u1.ProjectID == u2.ProjectID || u1.ProjectID < 100 || u2.ProjectID > 200 {
		t.Fatalf("IDs %d and %d: want two distinct IDs in 100-200", u1.ProjectID, u2.ProjectID)
	}
	// Raising is a Set on the same directory: same ID, new limit.
	again, err := a.Set(ctx, Target{Export: exp, Path: "v1"}, Limit{Bytes: 30 << 20})
	if err != nil || again.ProjectID != u1.ProjectID || again.Limit.Bytes != 30<<20 {
		t.Fatalf("second Set: %+v, %v; want project %d with 30 MiB", again, err, u1.ProjectID)
	}
	// A restarted agent finds the same IDs in the registry, and goes on after them.
	b := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	for _, fs := range b.roots {
		if want := max(u1.ProjectID, u2.ProjectID) + 1; fs.fs.next != want {
			t.Errorf("restarted agent allocates from %d, want %d", fs.fs.next, want)
		}
	}
	u, err := b.Usage(ctx, Target{Export: exp, Path: "v2"})
	if err != nil || u.ProjectID != u2.ProjectID || u.Limit != (Limit{Bytes: 20 << 20, Inodes: 100}) {
		t.Fatalf("Usage after restart: %+v, %v", u, err)
	}
	c, err := b.Capacity(ctx, exp)
	if err != nil || c.AllocatedBytes != 50<<20 {
		t.Fatalf("Capacity: %+v, %v; want 50 MiB allocated", c, err)
	}
}

func TestInterruptedSetResumesWithTheSameID(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "v1"))
	k := newFakeKernel()
	k.failSet = 1
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	tg := Target{Export: exp, Path: "v1"}
	if _, err := a.Set(context.Background(), tg, Limit{Bytes: 1 << 20}); err == nil {
		t.Fatal("Set succeeded through an injected failure")
	}
	if _, err := a.Usage(context.Background(), tg); !errors.Is(err, ErrNoProject) {
		t.Fatalf("Usage of a half-set directory: %v, want ErrNoProject", err)
	}
	u, err := a.Set(context.Background(), tg, Limit{Bytes: 1 << 20})
	if err != nil || u.ProjectID != 100 {
		t.Fatalf("retry: %+v, %v; want the interrupted attempt's ID 100", u, err)
	}
	entries, _ := os.ReadDir(filepath.Join(fsroot, RegistryDir))
	if len(entries) != 1 {
		t.Fatalf("registry holds %d records after a retried Set, want 1", len(entries))
	}
}

func TestNestedDirectoryNeverKeepsItsParentsID(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "outer", "inner"))
	k := newFakeKernel()
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	ctx := context.Background()
	outer, err := a.Set(ctx, Target{Export: exp, Path: "outer"}, Limit{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// XFS's PROJINHERIT: the inner directory carries the outer one's ID.
	fd, _ := unix.Open(filepath.Join(exp, "outer", "inner"), unix.O_RDONLY, 0)
	_ = k.setProject(fd, outer.ProjectID, true)
	unix.Close(fd)
	if _, err := a.Usage(ctx, Target{Export: exp, Path: "outer/inner"}); !errors.Is(err, ErrNoProject) {
		t.Fatalf("Usage of an inheriting directory: %v, want ErrNoProject", err)
	}
	inner, err := a.Set(ctx, Target{Export: exp, Path: "outer/inner"}, Limit{Bytes: 2 << 20})
	if err != nil || inner.ProjectID == outer.ProjectID {
		t.Fatalf("inner got %+v, %v; outer has %d", inner, err, outer.ProjectID)
	}
	// Releasing the inner volume leaves the outer one's limit alone.
	if err := a.Release(ctx, Target{Export: exp, Path: "outer/inner"}); err != nil {
		t.Fatal(err)
	}
	if u, err := a.Usage(ctx, Target{Export: exp, Path: "outer"}); err != nil || u.Limit.Bytes != 1<<20 {
		t.Fatalf("outer after inner's release: %+v, %v", u, err)
	}
}

func TestReleasedIDIsReusedOnlyOnceNoFileCarriesIt(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "v1"), filepath.Join(exp, "v2"))
	k := newFakeKernel()
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 101})
	ctx := context.Background()
	v1 := Target{Export: exp, Path: "v1"}
	u1, err := a.Set(ctx, v1, Limit{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, v1); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	// v1 is in the trash now: its directory still carries the ID.
	if err := os.Rename(filepath.Join(exp, "v1"), filepath.Join(fsroot, "trash-v1")); err != nil {
		t.Fatal(err)
	}
	u2, err := a.Set(ctx, Target{Export: exp, Path: "v2"}, Limit{Bytes: 1 << 20})
	if err != nil || u2.ProjectID == u1.ProjectID {
		t.Fatalf("v2 got %+v, %v while v1's trash still carries %d", u2, err, u1.ProjectID)
	}
	mkdirs(t, filepath.Join(exp, "v3"))
	if _, err := a.Set(ctx, Target{Export: exp, Path: "v3"}, Limit{Bytes: 1 << 20}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("v3 in a full range: %v, want ErrExhausted", err)
	}
	// The trash is reaped: the ID is free again.
	if err := os.RemoveAll(filepath.Join(fsroot, "trash-v1")); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	for i, p := range k.projects {
		if p == u1.ProjectID {
			delete(k.projects, i)
		}
	}
	k.mu.Unlock()
	if u3, err := a.Set(ctx, Target{Export: exp, Path: "v3"}, Limit{Bytes: 1 << 20}); err != nil || u3.ProjectID != u1.ProjectID {
		t.Fatalf("v3 after the reap: %+v, %v; want %d", u3, err, u1.ProjectID)
	}
}

func TestTwoAgentsOnOneFilesystemNeverShareAnID(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	const n = 40
	for i := 0; i < n; i++ {
		mkdirs(t, filepath.Join(exp, fmt.Sprint("v", i)))
	}
	k := newFakeKernel()
	agents := []*Agent{newTestAgent(t, k, fsroot, mi, DefaultIDRange), newTestAgent(t, k, fsroot, mi, DefaultIDRange)}
	ids := make([]uint32, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			u, err := agents[i%2].Set(context.Background(), Target{Export: exp, Path: fmt.Sprint("v", i)}, Limit{Bytes: 1 << 20})
			if err != nil {
				errs <- err
			}
			ids[i] = u.ProjectID
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint32]int{}
	for i, id := range ids {
		if j, dup := seen[id]; dup {
			t.Fatalf("v%d and v%d both got project %d", i, j, id)
		}
		seen[id] = i
	}
}

func TestTargetsAreResolvedBeneathTheExportOnly(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "v1"), filepath.Join(fsroot, "outside"), filepath.Join(exp, ".paddock", "x"))
	if err := os.Symlink(filepath.Join(fsroot, "outside"), filepath.Join(exp, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("v1", filepath.Join(exp, "rel")); err != nil {
		t.Fatal(err)
	}
	a := newTestAgent(t, newFakeKernel(), fsroot, mi, DefaultIDRange)
	for _, tc := range []struct {
		name string
		t    Target
		want error
	}{
		{"export root itself", Target{Export: exp, Path: "."}, ErrInvalid},
		{"empty path", Target{Export: exp}, ErrInvalid},
		{"dotdot", Target{Export: exp, Path: "../outside"}, ErrInvalid},
		{"unclean", Target{Export: exp, Path: "v1/../v1"}, ErrInvalid},
		{"absolute", Target{Export: exp, Path: "/etc"}, ErrInvalid},
		{"metadata", Target{Export: exp, Path: ".paddock/x"}, ErrInvalid},
		{"not owned", Target{Export: filepath.Join(fsroot, "outside"), Path: "x"}, ErrNotOwned},
		{"prefix lookalike", Target{Export: exp + "2", Path: "x"}, ErrNotOwned},
		{"relative export", Target{Export: "export", Path: "v1"}, ErrInvalid},
		{"missing", Target{Export: exp, Path: "nope"}, ErrNotFound},
		// O_NOFOLLOW|O_DIRECTORY on a final symlink is ENOTDIR; RESOLVE_NO_SYMLINKS on the way, ELOOP.
		{"symlink out", Target{Export: exp, Path: "link"}, unix.ENOTDIR},
		{"symlink in", Target{Export: exp, Path: "rel"}, unix.ENOTDIR},
		{"through a symlink", Target{Export: exp, Path: "link/x"}, unix.ELOOP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Set(context.Background(), tc.t, Limit{Bytes: 1})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Set(%+v) = %v, want %v", tc.t, err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(filepath.Join(fsroot, RegistryDir)); len(entries) != 0 {
		t.Fatalf("refused targets left %d records", len(entries))
	}
}

func TestLoadCollectsOnlyOldUnusedRecords(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "v1"), filepath.Join(exp, "v2"))
	k := newFakeKernel()
	k.failSet = 2
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	for _, p := range []string{"v1", "v2"} {
		if _, err := a.Set(context.Background(), Target{Export: exp, Path: p}, Limit{Bytes: 1 << 20}); err == nil {
			t.Fatal("injected failure did not fail Set")
		}
	}
	// v1's record is old, v2's recent: another agent may still be about to tag v2.
	old := time.Now().Add(-2 * recordGrace)
	if err := os.Chtimes(filepath.Join(fsroot, RegistryDir, "100"), old, old); err != nil {
		t.Fatal(err)
	}
	newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	for name, want := range map[string]bool{"100": false, "101": true} {
		_, err := os.Stat(filepath.Join(fsroot, RegistryDir, name))
		if (err == nil) != want {
			t.Errorf("record %s exists=%v, want %v", name, err == nil, want)
		}
	}
}

func TestParseIDRange(t *testing.T) {
	for in, want := range map[string]bool{"1-2": true, "5-5": true, "0-5": false, "5-4": false, "x": false, "1-4294967296": false, "1-": false} {
		if _, err := ParseIDRange(in); (err == nil) != want {
			t.Errorf("ParseIDRange(%q) err=%v, want ok=%v", in, err, want)
		}
	}
}

func TestSetTagsWhatTheDirectoryAlreadyHolds(t *testing.T) {
	fsroot, mi := testFS(t)
	exp := filepath.Join(fsroot, "export")
	mkdirs(t, filepath.Join(exp, "clone", "sub"), filepath.Join(fsroot, "elsewhere"))
	for _, f := range []string{"clone/a", "clone/sub/b"} {
		if err := os.WriteFile(filepath.Join(exp, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(fsroot, "elsewhere"), filepath.Join(exp, "clone", "out")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(exp, "clone", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel()
	a := newTestAgent(t, k, fsroot, mi, IDRange{First: 100, Last: 200})
	u, err := a.Set(context.Background(), Target{Export: exp, Path: "clone"}, Limit{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// clone, sub, a, b: four inodes carry the ID; the symlink's target and the FIFO do not.
	if u.Inodes != 4 {
		t.Fatalf("%d inodes carry project %d, want 4 (the directory, sub, a, b)", u.Inodes, u.ProjectID)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(fsroot, "elsewhere"), &st); err != nil {
		t.Fatal(err)
	}
	if k.projects[st.Ino] != 0 {
		t.Fatal("the walk followed a symlink out of the volume")
	}
}

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"v1", "a/b", ".", "..", "../x", "a/../b", "/etc", ".paddock", ".paddock/quota", "x/.paddock", "a//b", "a/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkPath(p) != nil {
			return
		}
		if p == "" || filepath.IsAbs(p) || filepath.Clean(p) != p || p == "." {
			t.Fatalf("checkPath accepted %q", p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == ".." {
				t.Fatalf("checkPath accepted %q with a .. component", p)
			}
		}
		if first, _, _ := strings.Cut(p, "/"); first == ".paddock" {
			t.Fatalf("checkPath accepted %q in the metadata directory", p)
		}
	})
}

func FuzzParseIDRange(f *testing.F) {
	for _, s := range []string{"1-2", "1048576-2147483647", "0-1", "5-4", "-", "1-4294967295", "01-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseIDRange(s)
		if err == nil && (r.First == 0 || r.First > r.Last) {
			t.Fatalf("ParseIDRange(%q) = %+v", s, r)
		}
	})
}
