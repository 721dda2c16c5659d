package share

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/volume"
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
	root, claims, trash, archive, names *os.File

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
	for _, f := range []*os.File{m.root, m.claims, m.trash, m.archive, m.names} {
		if f != nil {
			_ = f.Close()
		}
	}
}

func (m *metaFDs) rootFD() int    { return int(m.root.Fd()) }
func (m *metaFDs) claimsFD() int  { return int(m.claims.Fd()) }
func (m *metaFDs) trashFD() int   { return int(m.trash.Fd()) }
func (m *metaFDs) archiveFD() int { return int(m.archive.Fd()) }
func (m *metaFDs) namesFD() int   { return int(m.names.Fd()) }

// metaOf returns the export's metadata descriptors for mount generation gen, creating the metadata
// area (ensureMeta) and opening them the first time in each generation. A remount (new generation)
// checks and opens them again. The caller must release the set it gets.
func (w *Workspace) metaOf(ctx context.Context, h *metaHold, e *export, r *os.Root, gen int) (*metaFDs, error) {
	if err := e.metaMu.lock(ctx); err != nil {
		return nil, err
	}
	defer e.metaMu.unlock()
	if e.meta != nil && e.metaGen == gen {
		if kg := w.knownGeneration(); e.markersGen != kg {
			w.markInnerExports(e, e.meta)
			e.markersGen = kg
		}
		return h.add(e.meta.acquire()), nil
	}
	if err := ensureMeta(r); err != nil {
		return nil, err
	}
	m := &metaFDs{}
	for _, d := range []struct {
		f    **os.File
		name string
	}{{&m.root, "."}, {&m.claims, claimsDir}, {&m.trash, trashDir}, {&m.archive, archiveDir}, {&m.names, namesDir}} {
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
	e.markers = nil // a new generation checks the markers again
	w.remember(e.x)
	w.markInnerExports(e, m)
	e.markersGen = w.knownGeneration()
	return h.add(m.acquire()), nil
}

// markInnerExports marks, in e's claims, the root of every known export of the same server that lies
// inside e: a marker claim there, pinned like a volume, so no volume of e can be that directory, lie
// above it or below it. Each is done once per mount generation; the caller holds e.metaMu.
func (w *Workspace) markInnerExports(e *export, m *metaFDs) {
	for _, y := range w.Known() {
		rel, ok := innerPath(e.x, y)
		if !ok || e.markers[y.Share] {
			continue
		}
		c, err := m.readClaim(rel)
		if err == nil && c.isMarker() {
			e.markers = markerSet(e.markers, y.Share)
			continue
		}
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			if err == nil {
				err = fmt.Errorf("%w: it is already %s", ErrConflict, c.owner())
			}
			klog.ErrorS(err, "The root of an export lies inside another export and cannot be protected there; do not use both",
				"server", e.x.Server, "outer", e.x.Share, "inner", y.Share)
			continue
		}
		fresh, ex, err := m.reserve(claim{SubDir: rel, Export: y.Share, Token: newToken()})
		if err == nil && (fresh || ex.isMarker()) {
			e.markers = markerSet(e.markers, y.Share)
			continue
		}
		if err == nil {
			err = fmt.Errorf("%w: it is already %s", ErrConflict, ex.owner())
		}
		klog.ErrorS(err, "The root of an export lies inside another export and cannot be protected there; do not use both",
			"server", e.x.Server, "outer", e.x.Share, "inner", y.Share)
	}
}

func markerSet(m map[string]bool, share string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[share] = true
	return m
}

// innerPath is the path of y's root relative to x when y is another export of the same server whose
// root lies strictly inside x.
func innerPath(x, y Export) (string, bool) {
	if x.Server != y.Server || x.Share == y.Share {
		return "", false
	}
	prefix := strings.TrimSuffix(x.Share, "/") + "/"
	rel, ok := strings.CutPrefix(y.Share, prefix)
	if !ok || volume.ValidateSubDir(rel) != nil {
		return "", false
	}
	return rel, true
}

// boundedMeta runs open (metaOf or metaRefresh) under the filesystem deadline for a caller that is
// not already inside one. open acquires into a hold of its own, which joins h only if it came in time;
// one that comes later is released (mount.BoundedOwned).
func (w *Workspace) boundedMeta(ctx context.Context, server string, h *metaHold, open func(*metaHold) (*metaFDs, error)) (*metaFDs, error) {
	type acquired struct {
		m   *metaFDs
		own metaHold
	}
	a, err := bounded(ctx, w, server, w.cfg.FSTimeout, "metadata", func() (acquired, error) {
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

// Claims are stored as symlinks whose target is the encoded record (claim.go): one SYMLINK round
// trip creates a complete claim atomically, one READLINK reads it. The target is never followed by
// Paddock. Claims written by earlier releases are regular files and are still read.

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
