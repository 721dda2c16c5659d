package share

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/paddock-csi/paddock/pkg/mount"
)

// metaFDs are descriptors of the export root and its metadata directories, held for one mount
// generation. Every name used with them is a single component (a claim's hash, a trash entry), so
// an *at call on them resolves nothing: one round trip, and no symlink anywhere on the way can
// redirect it.
//
// Callers use raw descriptor numbers, so a set is closed only when it is retired (replaced or
// unmounted) and no call holds it any more: a number closed under a running call could be reused by
// another open and redirect that call.
type metaFDs struct {
	root, claims, trash, archive *os.File

	mu      sync.Mutex
	refs    int
	retired bool
}

// metaHold collects the sets a call acquired, to release them all when it returns.
type metaHold []*metaFDs

func (h *metaHold) add(m *metaFDs) *metaFDs {
	*h = append(*h, m)
	return m
}

func (h *metaHold) release() {
	for _, m := range *h {
		m.release()
	}
	*h = nil
}

func (m *metaFDs) acquire() *metaFDs {
	m.mu.Lock()
	m.refs++
	m.mu.Unlock()
	return m
}

func (m *metaFDs) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs--
	if m.refs == 0 && m.retired {
		m.closeFiles()
	}
}

// retire closes the set once nobody holds it.
func (m *metaFDs) retire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.retired {
		m.retired = true
		if m.refs == 0 {
			m.closeFiles()
		}
	}
}

func (m *metaFDs) closeFiles() {
	for _, f := range []*os.File{m.root, m.claims, m.trash, m.archive} {
		if f != nil {
			_ = f.Close()
		}
	}
}

func (m *metaFDs) rootFD() int    { return int(m.root.Fd()) }
func (m *metaFDs) claimsFD() int  { return int(m.claims.Fd()) }
func (m *metaFDs) trashFD() int   { return int(m.trash.Fd()) }
func (m *metaFDs) archiveFD() int { return int(m.archive.Fd()) }

// metaOf returns the export's metadata descriptors for mount generation gen, creating the metadata
// area (ensureMeta) and opening them the first time in each generation. A remount (new generation)
// checks and opens them again. The caller must release the set it gets.
func (w *Workspace) metaOf(ctx context.Context, h *metaHold, e *export, r *os.Root, gen int) (*metaFDs, error) {
	if err := e.metaMu.lock(ctx); err != nil {
		return nil, err
	}
	defer e.metaMu.unlock()
	if e.meta != nil && e.metaGen == gen {
		return h.add(e.meta.acquire()), nil
	}
	if err := ensureMeta(r); err != nil {
		return nil, err
	}
	m := &metaFDs{}
	for _, d := range []struct {
		f    **os.File
		name string
	}{{&m.root, "."}, {&m.claims, claimsDir}, {&m.trash, trashDir}, {&m.archive, archiveDir}} {
		// os.Root refuses a symlink leading out of the export; ensureMeta refused symlinks here at all.
		f, err := r.Open(d.name)
		if err != nil {
			m.closeFiles()
			return nil, err
		}
		*d.f = f
	}
	if e.meta != nil {
		e.meta.retire()
	}
	e.meta, e.metaGen = m, gen
	return h.add(m.acquire()), nil
}

// boundedMeta runs open (metaOf or metaRefresh) under the filesystem deadline for a caller that is
// not already inside one. open acquires into a hold of its own, which joins h only if it came in time;
// one that comes later is released (mount.BoundedOwned).
func (w *Workspace) boundedMeta(ctx context.Context, h *metaHold, open func(*metaHold) (*metaFDs, error)) (*metaFDs, error) {
	type acquired struct {
		m   *metaFDs
		own metaHold
	}
	a, err := mount.BoundedOwned(ctx, w.cfg.FSTimeout, "metadata", func() (acquired, error) {
		var own metaHold
		m, err := open(&own)
		if err != nil {
			own.release()
			return acquired{}, err
		}
		return acquired{m, own}, nil
	}, func(a acquired) { a.own.release() })
	if err != nil {
		return nil, err
	}
	*h = append(*h, a.own...)
	return a.m, nil
}

// metaRefresh drops the descriptors of generation gen and opens them again (ensureMeta included): for
// when one of the directories they hold was removed or replaced behind Paddock's back, which a local
// filesystem reports as ENOENT rather than NFS's ESTALE.
func (w *Workspace) metaRefresh(ctx context.Context, h *metaHold, e *export, r *os.Root, gen int) (*metaFDs, error) {
	if err := e.metaMu.lock(ctx); err != nil {
		return nil, err
	}
	if e.meta != nil && e.metaGen == gen {
		e.meta.retire()
		e.meta = nil
	}
	e.metaMu.unlock()
	return w.metaOf(ctx, h, e, r, gen)
}

// metaCached returns the descriptors if they are already open for generation gen, else nil; it never
// creates anything (DeleteVolume must not make a metadata area on an export that has none). The
// caller must release a set it gets.
func (w *Workspace) metaCached(ctx context.Context, h *metaHold, e *export, gen int) *metaFDs {
	if err := e.metaMu.lock(ctx); err != nil {
		return nil
	}
	defer e.metaMu.unlock()
	if e.meta != nil && e.metaGen == gen {
		return h.add(e.meta.acquire())
	}
	return nil
}

// dropMeta closes the descriptors (unmount, remount); callers hold e.mu.
func (e *export) dropMeta(ctx context.Context) {
	if err := e.metaMu.lock(ctx); err != nil {
		return // a call stuck on a dead server holds them; the next generation replaces them
	}
	defer e.metaMu.unlock()
	if e.meta != nil {
		e.meta.retire()
		e.meta = nil
	}
}

// Claims are stored as symlinks whose target is the encoded record: one SYMLINK round trip creates a
// complete claim atomically (failing with EEXIST if there is one), one READLINK reads it, and a claim
// is never half written. The target is never followed by Paddock; resolving it would fail at its
// first component, a file name that does not exist. Claims written by earlier releases are regular
// files and are still read.

func claimName(subDir string) string { return strings.TrimPrefix(claimPath(subDir), claimsDir+"/") }

// readClaimBytes reads the claim named file in the claims directory open as dfd.
func readClaimBytes(dfd int, file string) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, file, buf)
	if err == nil {
		return buf[:n], nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, &fs.PathError{Op: "readlink", Path: claimsDir + "/" + file, Err: err}
	}
	// A regular file: a claim written by an earlier release.
	fd, err := unix.Openat(dfd, file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: claimsDir + "/" + file, Err: err}
	}
	f := os.NewFile(uintptr(fd), file)
	defer f.Close()
	b, err := readAllLimited(f, 64<<10)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: claimsDir + "/" + file, Err: err}
	}
	return b, nil
}

func readAllLimited(f *os.File, limit int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(f, limit))
}

func (m *metaFDs) readClaim(subDir string) (claim, error) {
	b, err := readClaimBytes(m.claimsFD(), claimName(subDir))
	if err != nil {
		return claim{}, err
	}
	return parseClaim(b, subDir)
}

// createClaim writes a new claim, failing with fs.ErrExist if there is one.
func (m *metaFDs) createClaim(c claim) error {
	name := claimName(c.SubDir)
	err := unix.Symlinkat(string(c.encode()), m.claimsFD(), name)
	if errors.Is(err, unix.ENAMETOOLONG) {
		return createClaimFile(m.claimsFD(), name, c)
	}
	if err != nil {
		return &fs.PathError{Op: "symlink", Path: claimsDir + "/" + name, Err: err}
	}
	return nil
}

// writeClaim replaces a claim atomically (a new symlink renamed over it).
func (m *metaFDs) writeClaim(c claim) error {
	return writeClaimAt(m.claimsFD(), c)
}

func writeClaimAt(dfd int, c claim) error {
	name := claimName(c.SubDir)
	tmp := name + ".tmp"
	err := unix.Symlinkat(string(c.encode()), dfd, tmp)
	if errors.Is(err, unix.EEXIST) { // left by a crash
		if err := unix.Unlinkat(dfd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &fs.PathError{Op: "remove", Path: claimsDir + "/" + tmp, Err: err}
		}
		err = unix.Symlinkat(string(c.encode()), dfd, tmp)
	}
	if errors.Is(err, unix.ENAMETOOLONG) {
		_ = unix.Unlinkat(dfd, tmp, 0)
		if err := createClaimFile(dfd, tmp, c); err != nil {
			return err
		}
		err = nil
	}
	if err != nil {
		return &fs.PathError{Op: "symlink", Path: claimsDir + "/" + tmp, Err: err}
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return &fs.PathError{Op: "rename", Path: claimsDir + "/" + tmp, Err: err}
	}
	return nil
}

// createClaimFile is the fallback for a record too long for a symlink: a regular file, O_EXCL.
func createClaimFile(dfd int, name string, c claim) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &fs.PathError{Op: "create", Path: claimsDir + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(c.encode())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (m *metaFDs) removeClaim(subDir string) error {
	name := claimName(subDir)
	if err := unix.Unlinkat(m.claimsFD(), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: claimsDir + "/" + name, Err: err}
	}
	return nil
}

// processUmask is the umask this process creates files with (read once, from /proc, without
// changing it). Create skips the chmod after mkdir when the umask cannot have stripped the mode.
var processUmask = sync.OnceValue(func() os.FileMode {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o777 // unknown: always chmod
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				break
			}
			return os.FileMode(n) & os.ModePerm
		}
	}
	return 0o777
})

// specialBits are the mode bits mkdir may not set (and the mode that must match after it).
const specialBits = os.ModeSetuid | os.ModeSetgid | os.ModeSticky

func modeBits(m os.FileMode) os.FileMode { return m & (os.ModePerm | specialBits) }

// mkdirIsExact reports whether Mkdir(mode.Perm()) alone gives exactly mode.
func mkdirIsExact(mode os.FileMode) bool {
	return mode&specialBits == 0 && mode.Perm()&umaskNow() == 0
}

// Replaced by tests.
var (
	umaskNow = processUmask
	lchown   = func(r *os.Root, name string, uid, gid int) error { return r.Lchown(name, uid, gid) }
)
