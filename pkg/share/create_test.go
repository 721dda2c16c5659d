package share

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// The controller runs with umask 0 (cmd/paddock), so a plain volume's mkdir sets the exact mode and
// its claim is written once, ready. Tests run the same way; TestCreateWithUmask covers the other case.
func TestMain(m *testing.M) {
	unix.Umask(0)
	os.Exit(m.Run())
}

func isSymlink(t *testing.T, p string) bool {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()&os.ModeSymlink != 0
}

// Crash and conflict states around the single-write create of a plain volume (no uid/gid, no special
// bits, no content source): what a retry finds and what it must do.
func TestCreatePlainVolumeStates(t *testing.T) {
	plain := CreateOptions{Mode: 0o750, UID: -1, GID: -1, Capacity: 42}
	v := vol("pvc-p", "vol", volume.OnDeleteDelete)
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env, r *os.Root)
		wantErr error // nil: success, and the volume must be complete
		wantDir bool  // with wantErr: whether a directory may exist afterwards
	}{
		{name: "nothing there (first call)", setup: func(t *testing.T, e *env, r *os.Root) {}},
		{name: "ready claim, no directory (crash between claim and mkdir)", setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, func() claim { c := claimOf(v, plain); c.State = stateReady; return c }())
		}},
		{name: "pending claim, no directory (claim of an older release)", setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claimOf(v, plain))
		}},
		{name: "pending claim, directory with the wrong mode", setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claimOf(v, plain))
			e.mkdir("vol", 0o700)
		}},
		{name: "old-format claim file, ready, with its directory", setup: func(t *testing.T, e *env, r *os.Root) {
			c := claim{Name: "pvc-p", SubDir: "vol", State: stateReady, Capacity: 42}
			if err := r.WriteFile(claimPath("vol"), c.encode(), 0o600); err != nil {
				t.Fatal(err)
			}
			e.mkdir("vol", 0o750)
		}},
		{name: "leftover temporary claim symlink", setup: func(t *testing.T, e *env, r *os.Root) {
			if err := r.Symlink("garbage", claimPath("vol")+".tmp"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "foreign directory, no claim", wantErr: ErrExists, wantDir: true, setup: func(t *testing.T, e *env, r *os.Root) {
			e.mkdir("vol", 0o755)
		}},
		{name: "foreign file, no claim", wantErr: ErrExists, wantDir: true, setup: func(t *testing.T, e *env, r *os.Root) {
			e.write("vol", "x")
		}},
		{name: "ready claim of another volume, no directory", wantErr: ErrConflict, setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claim{Name: "pvc-other", SubDir: "vol", State: stateReady})
		}},
		{name: "ready claim of another volume, with directory", wantErr: ErrConflict, wantDir: true, setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claim{Name: "pvc-other", SubDir: "vol", State: stateReady})
			e.mkdir("vol", 0o755)
		}},
		{name: "adopted claim, directory vanished", wantErr: fs.ErrNotExist, setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, claim{Name: "pvc-p", SubDir: "vol", State: stateReady, Adopted: true})
		}},
		{name: "our ready claim, a symlink where the directory should be", wantErr: ErrNotDir, wantDir: true, setup: func(t *testing.T, e *env, r *os.Root) {
			mustWriteClaim(t, r, func() claim { c := claimOf(v, plain); c.State = stateReady; return c }())
			if err := os.Symlink(e.outside, e.path("vol")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			tc.setup(t, e, metaRoot(t, e))
			outside := listing(t, e.outside)
			claimBefore, claimErrBefore := e.claimOf("vol")
			got, err := e.ws.Create(context.Background(), v, plain)
			if got := listing(t, e.outside); got != outside {
				t.Fatal("Create touched a directory outside the export")
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Create = %v, want %v", err, tc.wantErr)
				}
				if !tc.wantDir && exists(e.path("vol")) {
					t.Fatal("a directory was made despite the error")
				}
				c, cerr := e.claimOf("vol")
				if (cerr == nil) != (claimErrBefore == nil) || c != claimBefore {
					t.Fatalf("the claim changed on a refused create: %+v,%v -> %+v,%v", claimBefore, claimErrBefore, c, cerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create = %v", err)
			}
			if got != 42 {
				t.Errorf("capacity = %d, want 42", got)
			}
			mode, _, _, ino := ownerOf(t, e.path("vol"))
			if !mode.IsDir() || modeBits(mode) != 0o750 {
				t.Errorf("directory mode = %v, want drwxr-x---", mode)
			}
			c, err := e.claimOf("vol")
			if err != nil || c.State != stateReady || c.Name != "pvc-p" || !c.HasID {
				t.Fatalf("claim = %+v, %v", c, err)
			}
			// Idempotent: a second call changes nothing.
			if _, err := e.ws.Create(context.Background(), v, plain); err != nil {
				t.Fatalf("repeated Create = %v", err)
			}
			if _, _, _, ino2 := ownerOf(t, e.path("vol")); ino2 != ino {
				t.Error("the repeat replaced the directory")
			}
			var claims []string
			for _, n := range e.entries(claimsDir) {
				if !strings.HasSuffix(n, ".tmp") { // a crash's leftover is harmless and may stay
					claims = append(claims, n)
				}
			}
			if len(claims) != 1 {
				t.Errorf("claims dir = %v, want just the claim", claims)
			}
			// And Delete takes it away whatever the claim's format.
			if err := e.ws.Delete(context.Background(), v); err != nil {
				t.Fatalf("Delete = %v", err)
			}
			if exists(e.path("vol")) || exists(e.path(claimPath("vol"))) {
				t.Error("Delete left the directory or the claim")
			}
			if n := len(e.entries(trashDir)); n != 1 {
				t.Errorf("trash holds %d entries, want 1", n)
			}
		})
	}
}

// A new plain volume's claim is one symlink whose target is the record, written ready.
func TestPlainCreateWritesOneReadySymlinkClaim(t *testing.T) {
	e := newEnv(t, nil)
	v := vol("pvc-s", "a/b/pvc-s", volume.OnDeleteArchive)
	e.create(v, CreateOptions{Mode: 0o770, UID: -1, GID: -1, Capacity: 9})
	if !isSymlink(t, e.path(claimPath(v.SubDir))) {
		t.Fatal("the claim is not a symlink")
	}
	target, err := os.Readlink(e.path(claimPath(v.SubDir)))
	if err != nil || !strings.HasPrefix(target, "paddock-claim v1\n") || !strings.Contains(target, "\nstate=ready\n") {
		t.Fatalf("claim target = %q, %v", target, err)
	}
	if mode, _, _, _ := ownerOf(t, e.path(v.SubDir)); modeBits(mode) != 0o770 {
		t.Errorf("mode = %v", mode)
	}
	// ListVolumes reads symlink claims.
	list, err := e.ws.ListVolumes(context.Background())
	if err != nil || len(list) != 1 || list[0].Volume.Name != "pvc-s" || list[0].Capacity != 9 {
		t.Fatalf("ListVolumes = %+v, %v", list, err)
	}
}

// With a umask that strips bits, the mode is still exact (pending claim, chmod, ready).
func TestCreateWithUmask(t *testing.T) {
	old := unix.Umask(0o027)
	defer unix.Umask(old)
	saved := umaskNow
	umaskNow = func() os.FileMode { return 0o027 }
	defer func() { umaskNow = saved }()
	e := newEnv(t, nil)
	for i, m := range []os.FileMode{0o777, 0o750, 0o2775, 0o1777} {
		v := vol("pvc-u"+string(rune('a'+i)), "u"+string(rune('a'+i)), volume.OnDeleteDelete)
		e.create(v, CreateOptions{Mode: m, UID: -1, GID: -1})
		if mode, _, _, _ := ownerOf(t, e.path(v.SubDir)); modeBits(mode) != modeBits(m) {
			t.Errorf("mode %v: got %v", m, mode)
		}
		if c, err := e.claimOf(v.SubDir); err != nil || c.State != stateReady {
			t.Errorf("claim = %+v, %v", c, err)
		}
	}
}

// A root_squash export refuses chown: the error names uid/gid and the cause, and nothing is left
// behind, so a retry with the export fixed, or another class, goes through.
func TestCreateChownRefusedBySquash(t *testing.T) {
	saved := lchown
	defer func() { lchown = saved }()
	squash := true
	lchown = func(r *os.Root, name string, uid, gid int) error {
		if squash {
			return &fs.PathError{Op: "lchownat", Path: name, Err: syscall.EPERM}
		}
		return saved(r, name, uid, gid)
	}
	for _, subDir := range []string{"vol", "team/vol"} {
		t.Run(subDir, func(t *testing.T) {
			squash = true
			e := newEnv(t, nil)
			v := vol("pvc-q", subDir, volume.OnDeleteDelete)
			opts := CreateOptions{Mode: 0o770, UID: 1000, GID: 2000}
			_, err := e.ws.Create(context.Background(), v, opts)
			if !errors.Is(err, ErrRootSquashed) {
				t.Fatalf("Create = %v, want ErrRootSquashed", err)
			}
			for _, s := range []string{"uid", "gid", "root_squash", "no_root_squash", "1000", "2000"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if exists(e.path(subDir)) {
				t.Error("the directory was left behind")
			}
			if _, err := e.claimOf(subDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("claim left behind: %v", err)
			}
			// Another class without uid/gid, for the same directory, works.
			e.create(v, defaultOpts())
			if err := e.ws.Delete(context.Background(), v); err != nil {
				t.Fatal(err)
			}
			// And so does a retry once the export no longer squashes root.
			squash = false
			e.create(v, opts)
			if _, uid, gid, _ := ownerOf(t, e.path(subDir)); uid != 1000 || gid != 2000 {
				t.Errorf("owner = %d:%d", uid, gid)
			}
		})
	}
}

// The descriptors held for the metadata area follow a directory replaced behind Paddock's back.
func TestMetadataReplacedWhileHeld(t *testing.T) {
	e := newEnv(t, nil)
	e.create(vol("pvc-1", "one", volume.OnDeleteDelete), defaultOpts())
	// Someone removes the claims and trash directories and makes new, empty ones (volume one's claim
	// is kept aside).
	if err := os.Rename(e.path(claimPath("one")), e.path(volume.MetaDir+"/one.claim")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{claimsDir, trashDir} {
		if err := os.Remove(e.path(d)); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(e.path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	two := vol("pvc-2", "two", volume.OnDeleteDelete)
	e.create(two, defaultOpts())
	if !exists(e.path(claimPath("two"))) {
		t.Fatal("the new claim is not in the current claims directory")
	}
	if err := e.ws.Delete(context.Background(), two); err != nil {
		t.Fatal(err)
	}
	if n := len(e.entries(trashDir)); n != 1 {
		t.Fatalf("current trash holds %d entries, want 1", n)
	}
	// Volume one's claim is gone from the claims directory: it is not owned any more, so for CSI the
	// volume no longer exists (OK), and its directory is not touched.
	if err := e.ws.Delete(context.Background(), vol("pvc-1", "one", volume.OnDeleteDelete)); err != nil {
		t.Fatalf("Delete of a volume whose claim moved away = %v, want nil (nothing to delete)", err)
	}
	if !exists(e.path("one")) {
		t.Fatal("volume one moved")
	}
}

// Delete's round trips on a held export: it must not walk the metadata area by path once open. The
// metadata directory is moved away (the held descriptors follow it, a path walk would not): Delete
// still succeeds, the volume lands in the held trash, and nothing is made at the old path.
func TestDeleteUsesHeldDescriptors(t *testing.T) {
	e := newEnv(t, nil)
	a := vol("pvc-a", "a", volume.OnDeleteDelete)
	e.create(a, defaultOpts())
	if err := os.Rename(e.path(volume.MetaDir), e.path("moved-meta")); err != nil {
		t.Fatal(err)
	}
	if err := e.ws.Delete(context.Background(), a); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if exists(e.path("a")) {
		t.Fatal("volume still in place after Delete")
	}
	if exists(e.path(volume.MetaDir)) {
		t.Fatal("Delete walked the metadata path (it made a new metadata area)")
	}
	trash := strings.TrimPrefix(trashDir, volume.MetaDir+"/")
	if n := len(e.entries("moved-meta/" + trash)); n != 1 {
		t.Fatalf("held trash holds %d entries, want the deleted volume", n)
	}
}
