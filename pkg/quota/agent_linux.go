//go:build linux

package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
)

// kernel is the project-quota interface of a filesystem: the one boundary the agent's logic
// crosses, so that the allocation rules can be unit-tested on any filesystem (xfsKernel is the real
// one; fd is any descriptor on the filesystem for the quota calls).
type kernel interface {
	project(fd int) (id uint32, inherit bool, err error)
	setProject(fd int, id uint32, inherit bool) error
	quota(fd int, id uint32) (Usage, error)
	setLimit(fd int, id uint32, l Limit) error
	enforced(fd int) error
	statfs(fd int) (total, free uint64, err error)
}

// RegistryDir is where the agent records the project IDs it handed out, relative to the root of
// the filesystem: inside the controller's own metadata directory, which no volume can be created in
// (volume.ValidateSubDir), and which the controller never lists.
const RegistryDir = ".paddock/quota/projects"

// recordGrace protects a record from garbage collection while another agent may still be between
// writing it and tagging its directory.
const recordGrace = time.Hour

// IDRange is the inclusive range of project IDs the agent hands out. Keep it clear of the IDs an
// administrator uses in /etc/projid.
type IDRange struct{ First, Last uint32 }

// DefaultIDRange starts far above hand-made project IDs.
var DefaultIDRange = IDRange{First: 1 << 20, Last: 1<<31 - 1}

// ParseIDRange reads "first-last".
func ParseIDRange(s string) (IDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(a, 10, 32)
	last, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil || first == 0 || first > last {
		return IDRange{}, fmt.Errorf("project ID range %q: want first-last, 0 < first <= last < 2^32", s)
	}
	return IDRange{First: uint32(first), Last: uint32(last)}, nil
}

// record is one handed-out project ID, in RegistryDir/<id>: which directory got it. The directory
// is named by its path from the filesystem root and its inode number, so a directory renamed or
// recreated under the same name is never mistaken for the one that got the ID.
type record struct {
	Path string `json:"path"`
	Ino  uint64 `json:"ino"`
}

// Agent sets XFS project quotas on volume directories beneath the export roots it owns. It is
// safe for concurrent use; two agents on one filesystem never hand one ID to two directories,
// because an ID is taken by creating its record with O_EXCL on the filesystem itself.
type Agent struct {
	k     kernel
	ids   IDRange
	roots []*exportRoot

	mu sync.Mutex // serializes changes to projects: allocation and tagging are read-modify-write
}

type exportRoot struct {
	path string // as configured and as clients mount it
	fd   int    // O_PATH descriptor of path
	fs   *filesystem
}

// filesystem is one XFS filesystem holding one or more export roots; project IDs are per
// filesystem, so it owns the registry and the allocation.
type filesystem struct {
	mountpoint string
	dev        uint64
	fd         int // O_PATH descriptor of the mount point: the quota calls' handle
	registry   int // descriptor of RegistryDir
	byIno      map[uint64]uint32
	next       uint32
}

// NewAgent opens the export roots (absolute local paths, equal to the paths clients mount) and the
// registry of each filesystem they live on. Every root must be on an XFS filesystem mounted with
// prjquota, mounted at its own root (not a bind mount of a subdirectory: two bind mounts would keep
// two registries for one set of IDs).
func NewAgent(roots []string, ids IDRange) (*Agent, error) {
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return newAgent(xfsKernel{}, roots, ids, mi)
}

func newAgent(k kernel, roots []string, ids IDRange, mi []mount.MountInfo) (*Agent, error) {
	if len(roots) == 0 {
		return nil, errors.New("no export roots configured")
	}
	if ids.First == 0 || ids.First > ids.Last {
		return nil, fmt.Errorf("bad project ID range %d-%d", ids.First, ids.Last)
	}
	a := &Agent{k: k, ids: ids}
	byDev := map[uint64]*filesystem{}
	for _, p := range roots {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			a.Close()
			return nil, fmt.Errorf("export root %q: must be a clean absolute path other than /", p)
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("export root %q: %w", p, err)
		}
		r := &exportRoot{path: p, fd: fd}
		a.roots = append(a.roots, r)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			a.Close()
			return nil, fmt.Errorf("export root %q: %w", p, err)
		}
		if fs := byDev[st.Dev]; fs != nil {
			r.fs = fs
			continue
		}
		fs, err := a.openFilesystem(p, st.Dev, mi)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("export root %q: %w", p, err)
		}
		byDev[st.Dev] = fs
		r.fs = fs
	}
	return a, nil
}

// openFilesystem finds the mount holding root, checks that it enforces project quotas and loads its
// registry.
func (a *Agent) openFilesystem(root string, dev uint64, mi []mount.MountInfo) (*filesystem, error) {
	var m *mount.MountInfo
	for i := range mi {
		mp := mi[i].MountPoint
		if (root == mp || strings.HasPrefix(root, strings.TrimSuffix(mp, "/")+"/")) &&
			unix.Mkdev(uint32(mi[i].Major), uint32(mi[i].Minor)) == dev &&
			(m == nil || len(mp) > len(m.MountPoint)) {
			m = &mi[i]
		}
	}
	if m == nil {
		return nil, fmt.Errorf("no mount found for it in mountinfo")
	}
	if m.Root != "/" {
		return nil, fmt.Errorf("it lies on a bind mount of %s; run the agent on the filesystem's own mount", m.Root)
	}
	fd, err := unix.Open(m.MountPoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening its mount point %s: %w", m.MountPoint, err)
	}
	fs := &filesystem{mountpoint: m.MountPoint, dev: dev, fd: fd, registry: -1, byIno: map[uint64]uint32{}, next: a.ids.First}
	if err := a.k.enforced(fd); err != nil {
		fs.close()
		return nil, fmt.Errorf("%s: %w", m.MountPoint, err)
	}
	if fs.registry, err = mkdirAllBeneath(fd, RegistryDir); err != nil {
		fs.close()
		return nil, fmt.Errorf("registry %s/%s: %w", m.MountPoint, RegistryDir, err)
	}
	if err := a.load(fs); err != nil {
		fs.close()
		return nil, err
	}
	klog.InfoS("Quota agent owns filesystem", "mountpoint", m.MountPoint, "projects", len(fs.byIno))
	return fs, nil
}

// load indexes the registry and collects records nobody uses any more: a record older than
// recordGrace whose directory is gone or carries another ID, and whose ID no file uses, is the
// remnant of an interrupted Set or a lost race between two agents.
func (a *Agent) load(fs *filesystem) error {
	f := os.NewFile(uintptr(dupFD(fs.registry)), RegistryDir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("listing the registry: %w", err)
	}
	for _, name := range names {
		id, err := strconv.ParseUint(name, 10, 32)
		if err != nil || strconv.FormatUint(id, 10) != name {
			continue
		}
		rec, mtime, err := readRecord(fs.registry, name)
		if err != nil {
			klog.InfoS("Unreadable quota record kept (its ID is never reused)", "id", name, "err", err)
			continue
		}
		if a.holds(fs, uint32(id), rec) {
			fs.byIno[rec.Ino] = uint32(id)
			// Allocation goes on after the highest ID in use rather than probing every taken one
			// from the start of the range again.
			if uint32(id) >= fs.next && uint32(id) < a.ids.Last {
				fs.next = uint32(id) + 1
			}
			continue
		}
		if time.Since(mtime) < recordGrace {
			continue
		}
		if u, err := a.k.quota(fs.fd, uint32(id)); err == nil && u.Bytes == 0 && u.Inodes == 0 {
			_ = a.k.setLimit(fs.fd, uint32(id), Limit{})
			_ = unix.Unlinkat(fs.registry, name, 0)
			klog.InfoS("Collected an unused quota record", "id", id, "path", rec.Path)
		}
	}
	return nil
}

// holds tells whether the record's directory exists and carries the record's ID.
func (a *Agent) holds(fs *filesystem, id uint32, rec record) bool {
	fd, err := openBeneath(fs.fd, rec.Path, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Ino != rec.Ino {
		return false
	}
	got, _, err := a.k.project(fd)
	return err == nil && got == id
}

// Close releases the descriptors.
func (a *Agent) Close() {
	seen := map[*filesystem]bool{}
	for _, r := range a.roots {
		unix.Close(r.fd)
		if r.fs != nil && !seen[r.fs] {
			seen[r.fs] = true
			r.fs.close()
		}
	}
}

func (fs *filesystem) close() {
	unix.Close(fs.fd)
	if fs.registry >= 0 {
		unix.Close(fs.registry)
	}
}

// target is a resolved Target: the open volume directory and where it lives.
type target struct {
	fs   *filesystem
	fd   int
	ino  uint64
	path string // from the filesystem root
}

func (t target) close() { unix.Close(t.fd) }

// rootOf finds the export root that owns export.
func (a *Agent) rootOf(export string) (*exportRoot, string, error) {
	if !filepath.IsAbs(export) || filepath.Clean(export) != export {
		return nil, "", fmt.Errorf("%w: export %q is not a clean absolute path", ErrInvalid, export)
	}
	for _, r := range a.roots {
		if export == r.path {
			return r, ".", nil
		}
		if rel, ok := strings.CutPrefix(export, r.path+"/"); ok {
			return r, rel, nil
		}
	}
	return nil, "", fmt.Errorf("%w: %s", ErrNotOwned, export)
}

// resolve opens the volume directory of t beneath its export root, following no symlink and
// crossing no mount.
func (a *Agent) resolve(t Target) (target, error) {
	if err := checkPath(t.Path); err != nil {
		return target{}, err
	}
	r, rel, err := a.rootOf(t.Export)
	if err != nil {
		return target{}, err
	}
	fd, err := openBeneath(r.fd, filepath.Join(rel, t.Path), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return target{}, fmt.Errorf("%w: %s/%s", ErrNotFound, t.Export, t.Path)
		}
		return target{}, fmt.Errorf("opening %s/%s: %w", t.Export, t.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return target{}, fmt.Errorf("stat %s/%s: %w", t.Export, t.Path, err)
	}
	full := filepath.Join(r.path, rel, t.Path)
	fromRoot, _ := filepath.Rel(r.fs.mountpoint, full)
	return target{fs: r.fs, fd: fd, ino: st.Ino, path: fromRoot}, nil
}

// checkPath refuses what a volume's subDir can never be: the export itself, an escape, the
// metadata directory.
func checkPath(p string) error {
	switch {
	case p == "" || p == ".":
		return fmt.Errorf("%w: path is empty: the export root itself never gets a quota", ErrInvalid)
	case filepath.IsAbs(p) || filepath.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("%w: path %q is not a clean relative path beneath the export", ErrInvalid, p)
	case p == ".paddock" || strings.HasPrefix(p, ".paddock/"):
		return fmt.Errorf("%w: path %q is inside the metadata directory", ErrInvalid, p)
	}
	return nil
}

// owned returns the ID the agent set up for the directory, or 0 if it has none: the directory
// carries an ID whose record names this very directory. An ID it merely inherited from a parent
// volume (nested directories) or got from an administrator does not count.
func (a *Agent) owned(t target) (uint32, error) {
	id, _, err := a.k.project(t.fd)
	if err != nil {
		return 0, err
	}
	if id != 0 {
		if rec, _, err := readRecord(t.fs.registry, strconv.FormatUint(uint64(id), 10)); err == nil && rec.Ino == t.ino && rec.Path == t.path {
			t.fs.byIno[t.ino] = id
			return id, nil
		}
	}
	return 0, nil
}

// open resolves t and finds the project the agent set up for it (0: none); the caller holds a.mu
// and closes the target.
func (a *Agent) open(t Target) (target, uint32, error) {
	tg, err := a.resolve(t)
	if err != nil {
		return target{}, 0, err
	}
	id, err := a.owned(tg)
	if err != nil {
		tg.close()
		return target{}, 0, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
	}
	return tg, id, nil
}

// Set implements Quotas. The order makes every interruption safe: the ID is taken (its record
// created), then limited, and only then given to the directory, so a directory never carries an ID
// without its limit; a retry finds the record by inode and carries on.
func (a *Agent) Set(ctx context.Context, t Target, l Limit) (Usage, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tg, id, err := a.open(t)
	if err != nil {
		return Usage{}, err
	}
	defer tg.close()
	if id == 0 {
		// A record made by an earlier, interrupted Set for this directory.
		if pending, ok := tg.fs.byIno[tg.ino]; ok {
			if rec, _, err := readRecord(tg.fs.registry, strconv.FormatUint(uint64(pending), 10)); err == nil && rec.Path == tg.path {
				id = pending
			}
		}
	}
	if id == 0 {
		if id, err = a.allocate(ctx, tg); err != nil {
			return Usage{}, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
		}
	}
	if err := a.k.setLimit(tg.fs.fd, id, l); err != nil {
		return Usage{}, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
	}
	if cur, _, err := a.k.project(tg.fd); err != nil || cur != id {
		// The directory is not tagged yet: what it already holds (a clone's copy, an adopted
		// directory's files) gets the ID first, so it counts against the limit. The directory itself
		// comes last, so an interrupted walk is walked again by the retry.
		if err := a.tagTree(ctx, tg.fd, tg.fs.dev, id); err != nil {
			return Usage{}, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
		}
	}
	if err := a.k.setProject(tg.fd, id, true); err != nil {
		return Usage{}, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
	}
	u, err := a.k.quota(tg.fs.fd, id)
	if err != nil {
		return Usage{}, fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
	}
	klog.V(2).InfoS("Quota set", "export", t.Export, "path", t.Path, "project", id, "bytes", l.Bytes, "inodes", l.Inodes)
	return u, nil
}

// tagTree gives every directory and regular file below the directory open as dirfd the project id
// (directories with PROJINHERIT), as xfs_quota's "project -s" does. It follows no symlink, crosses no
// mount and opens nothing but directories and regular files (a FIFO would block the open).
func (a *Agent) tagTree(ctx context.Context, dirfd int, dev uint64, id uint32) error {
	d := os.NewFile(uintptr(dupFD(dirfd)), "volume")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("listing for project %d: %w", id, err)
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if st.Dev != dev || !isDir && st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
		if isDir {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				continue // replaced meanwhile
			}
			return err
		}
		if isDir {
			err = a.tagTree(ctx, fd, dev, id)
		}
		if err == nil {
			err = a.k.setProject(fd, id, isDir)
		}
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// allocate takes a free ID for the directory: its record is created with O_EXCL (so no other agent
// can take it too), and an ID some file still uses (a released volume's trash or archive, or an
// administrator's project) is skipped.
func (a *Agent) allocate(ctx context.Context, tg target) (uint32, error) {
	fs := tg.fs
	data, _ := json.Marshal(record{Path: tg.path, Ino: tg.ino})
	span := uint64(a.ids.Last-a.ids.First) + 1
	id := fs.next
	for tried := uint64(0); tried < span; tried++ {
		if tried%1024 == 1023 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if id < a.ids.First || id > a.ids.Last {
			id = a.ids.First
		}
		cur := id
		id++
		name := strconv.FormatUint(uint64(cur), 10)
		fd, err := unix.Openat(fs.registry, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("creating quota record %d: %w", cur, err)
		}
		_, werr := unix.Write(fd, data)
		if werr == nil {
			werr = unix.Fsync(fd)
		}
		unix.Close(fd)
		u, qerr := a.k.quota(fs.fd, cur)
		if werr != nil || qerr != nil || u.Bytes != 0 || u.Inodes != 0 {
			_ = unix.Unlinkat(fs.registry, name, 0)
			if werr != nil {
				return 0, fmt.Errorf("writing quota record %d: %w", cur, werr)
			}
			if qerr != nil {
				return 0, qerr
			}
			continue // in use by files that outlived their volume
		}
		fs.byIno[tg.ino] = cur
		fs.next = id
		return cur, nil
	}
	return 0, ErrExhausted
}

// Release implements Quotas: the limit goes and the record with it, so the ID becomes free once the
// volume's files (renamed into the trash or an archive, still carrying it) are gone.
func (a *Agent) Release(ctx context.Context, t Target) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	tg, id, err := a.open(t)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer tg.close()
	if id == 0 {
		return nil
	}
	if err := a.k.setLimit(tg.fs.fd, id, Limit{}); err != nil {
		return fmt.Errorf("%s/%s: %w", t.Export, t.Path, err)
	}
	if err := unix.Unlinkat(tg.fs.registry, strconv.FormatUint(uint64(id), 10), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s/%s: removing quota record %d: %w", t.Export, t.Path, id, err)
	}
	delete(tg.fs.byIno, tg.ino)
	klog.V(2).InfoS("Quota released", "export", t.Export, "path", t.Path, "project", id)
	return nil
}

// Usage implements Quotas.
func (a *Agent) Usage(ctx context.Context, t Target) (Usage, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tg, id, err := a.open(t)
	if err != nil {
		return Usage{}, err
	}
	defer tg.close()
	if id == 0 {
		return Usage{}, fmt.Errorf("%w: %s/%s", ErrNoProject, t.Export, t.Path)
	}
	return a.k.quota(tg.fs.fd, id)
}

// Capacity implements Quotas: the filesystem's size and free space, and the sum of the limits of
// the projects this agent set up on it.
func (a *Agent) Capacity(ctx context.Context, export string) (Capacity, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, _, err := a.rootOf(export)
	if err != nil {
		return Capacity{}, err
	}
	total, free, err := a.k.statfs(r.fs.fd)
	if err != nil {
		return Capacity{}, err
	}
	c := Capacity{TotalBytes: total, FreeBytes: free}
	for _, id := range r.fs.byIno {
		u, err := a.k.quota(r.fs.fd, id)
		if err != nil {
			return Capacity{}, err
		}
		c.AllocatedBytes += u.Limit.Bytes
	}
	return c, nil
}

func readRecord(dir int, name string) (record, time.Time, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return record{}, time.Time{}, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return record{}, time.Time{}, err
	}
	var rec record
	if st.Size() > 4096 {
		return record{}, st.ModTime(), fmt.Errorf("record %s is %d bytes", name, st.Size())
	}
	if err := json.NewDecoder(f).Decode(&rec); err != nil {
		return record{}, st.ModTime(), fmt.Errorf("record %s: %w", name, err)
	}
	return rec, st.ModTime(), nil
}

// openBeneath opens p relative to dirfd, refusing symlinks, magic links, mount crossings and
// escapes anywhere on the way.
func openBeneath(dirfd int, p string, flags int) (int, error) {
	return unix.Openat2(dirfd, p, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
}

// mkdirAllBeneath creates the directories of p beneath dirfd as needed (mode 0700: only root
// reads the registry) and returns a descriptor of the last.
func mkdirAllBeneath(dirfd int, p string) (int, error) {
	fd := dupFD(dirfd)
	for _, c := range strings.Split(p, "/") {
		if err := unix.Mkdirat(fd, c, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, err
		}
		next, err := openBeneath(fd, c, unix.O_RDONLY|unix.O_DIRECTORY)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

func dupFD(fd int) int {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return n
}

var _ Quotas = (*Agent)(nil)
