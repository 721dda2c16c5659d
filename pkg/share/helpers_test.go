package share

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

const (
	testServer = "nfs.example"
	testShare  = "/export"
	testSource = testServer + ":" + testShare
)

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t       *testing.T
	ws      *Workspace
	fake    *mounttest.Fake
	cfg     Config
	export  string // the local directory standing in for the export
	outside string // a directory outside the export that nothing may touch
	clock   *clock
}

// newEnv builds a workspace on a fake mounter whose export nfs.example:/export is a local directory.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, fake: mounttest.New(), export: filepath.Join(base, "export"), outside: filepath.Join(base, "outside"),
		clock: &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}}
	for _, d := range []string{e.export, e.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.fake.AddExport(testSource, e.export)
	e.cfg = Config{WorkDir: filepath.Join(base, "work"), IdleTimeout: time.Minute, FSTimeout: 10 * time.Second,
		Mounter: e.fake, Now: e.clock.Now, ReapInterval: time.Hour}
	if mod != nil {
		mod(&e.cfg)
	}
	ws, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.ws = ws
	t.Cleanup(func() {
		e.fake.ReleaseAll()
		ws.Close(context.Background())
	})
	return e
}

func vol(name, subDir string, od volume.OnDelete) volume.Volume {
	return volume.Volume{Server: testServer, Share: testShare, SubDir: subDir, Name: name, OnDelete: od}
}

var xp = Export{Server: testServer, Share: testShare}

func defaultOpts() CreateOptions { return CreateOptions{Mode: 0o777, UID: -1, GID: -1} }

func (e *env) create(v volume.Volume, o CreateOptions) {
	e.t.Helper()
	if _, err := e.ws.Create(context.Background(), v, o); err != nil {
		e.t.Fatalf("Create(%s, %s) = %v", v.Name, v.SubDir, err)
	}
}

func (e *env) path(rel string) string { return filepath.Join(e.export, filepath.FromSlash(rel)) }

func (e *env) write(rel, content string) {
	e.t.Helper()
	p := e.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) mkdir(rel string, mode os.FileMode) {
	e.t.Helper()
	if err := os.MkdirAll(e.path(rel), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(e.path(rel), mode); err != nil {
		e.t.Fatal(err)
	}
}

// claimOf reads the claim for subDir straight from the export.
func (e *env) claimOf(subDir string) (claim, error) {
	r, err := os.OpenRoot(e.export)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Close()
	return readClaim(r, subDir)
}

func (e *env) entries(rel string) []string {
	e.t.Helper()
	des, err := os.ReadDir(e.path(rel))
	if err != nil {
		e.t.Fatalf("reading %s: %v", rel, err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// listing describes every entry below dir (type, mode, owner, content or link target), so a test can
// assert that an operation changed nothing.
func listing(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// countFiles counts regular files below dir without following symlinks.
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ownerOf(t *testing.T, p string) (os.FileMode, uint32, uint32, uint64) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid, st.Ino
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }

// withRoot runs fn on x's root like every operation does (limiter, deadline, stale remount).
func (w *Workspace) withRoot(ctx context.Context, x Export, timeout time.Duration, what string, fn func(r *os.Root) error) error {
	return w.run(ctx, op{x: x, timeout: timeout, what: what}, func(c *call) error { return fn(c.r) })
}

// writeClaim replaces a claim through the export root (tests that forge or age claims).
func writeClaim(r *os.Root, c claim) error {
	d, err := r.Open(claimsDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return writeClaimAt(int(d.Fd()), c)
}
