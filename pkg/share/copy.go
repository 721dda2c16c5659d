package share

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// copyWorkers bounds the files copied at once: each NFS create, open and close is a round trip, so a
// few in flight hide the latency; more only crowd the server.
const copyWorkers = 8

// copyTimeout bounds one copy (a snapshot, a restore, a clone): O(size), so far longer than a
// metadata step, but still finite so a dead server cannot hold a volume's lock for ever. The caller's
// own deadline (the CO's timeout) usually ends it first.
func (w *Workspace) copyTimeout() time.Duration { return 100 * w.cfg.FSTimeout }

// Source is the initial content of a new volume: a snapshot or another volume on the same export.
type Source struct {
	snapshot *volume.Snapshot
	volume   *volume.Volume
	id       string
}

// SnapshotSource fills a volume from the snapshot with this ID.
func SnapshotSource(s volume.Snapshot) *Source { return &Source{snapshot: &s, id: s.ID()} }

// VolumeSource fills a volume with a copy of another volume (a clone).
func VolumeSource(v volume.Volume) *Source { return &Source{volume: &v, id: v.ID()} }

func (s *Source) String() string {
	if s.snapshot != nil {
		return "snapshot:" + s.id
	}
	return "volume:" + s.id
}

func (s *Source) lockKey() string {
	if s.snapshot != nil {
		return snapshotKey(*s.snapshot)
	}
	return volumeKey(*s.volume)
}

// check refuses sources a copy cannot reach: Paddock copies inside one export (the same directory
// tree, whatever NFS version mounts it), never between servers.
func (s *Source) check(v volume.Volume) error {
	server, share := "", ""
	if s.snapshot != nil {
		server, share = s.snapshot.Server, s.snapshot.Share
	} else {
		server, share = s.volume.Server, s.volume.Share
		if s.volume.SubDir == v.SubDir {
			return fmt.Errorf("volume %s: %w: a volume cannot be cloned from its own directory", v.Name, ErrUnsupported)
		}
	}
	if server != v.Server || share != v.Share {
		return fmt.Errorf("volume %s on %s:%s: %w: its content source %s is on %s:%s, and copies between exports are not supported",
			v.Name, v.Server, v.Share, ErrUnsupported, s, server, share)
	}
	return nil
}

// dataDir is the directory whose content is copied.
func (s *Source) dataDir() string {
	if s.snapshot != nil {
		return snapshotData(s.snapshot.Dir)
	}
	return s.volume.SubDir
}

// resolve checks on the export that the source exists: a ready snapshot, or a volume whose directory
// its claim owns.
func (s *Source) resolve(r *os.Root) error {
	if s.snapshot != nil {
		rec, err := readSnapshotRecord(r, s.snapshot.Dir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: snapshot %s does not exist", ErrSourceNotFound, s.id)
		}
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", s.id, err)
		}
		if rec.State != stateReady {
			return fmt.Errorf("%w: snapshot %s is not ready (its copy did not finish)", ErrSourceNotFound, s.id)
		}
		return nil
	}
	if err := ownedDir(r, *s.volume, true); err != nil {
		return fmt.Errorf("%w: volume %s: %v", ErrSourceNotFound, s.id, err)
	}
	return nil
}

// copyTree copies the content of src into the existing directory dst, both relative to the export,
// and returns the bytes of regular files copied. Every entry is opened relative to its parent with
// O_NOFOLLOW: symlinks are copied as symlinks (their targets are never read or touched), directories
// are entered only if they are real directories, and a file swapped for a FIFO or device after it was
// listed is refused rather than opened. Modes (with setuid/setgid/sticky), owners and times are kept;
// hard links become separate files, extended attributes and ACLs are not copied. With rootAttrs the
// mode, owner and times of src itself are applied to dst too.
func copyTree(ctx context.Context, r *os.Root, src, dst string, rootAttrs bool) (int64, error) {
	sf, err := r.Open(src)
	if err != nil {
		return 0, err
	}
	defer sf.Close()
	df, err := r.Open(dst)
	if err != nil {
		return 0, err
	}
	defer df.Close()
	var sst, dst2 unix.Stat_t
	if err := unix.Fstat(int(sf.Fd()), &sst); err != nil {
		return 0, err
	}
	if err := unix.Fstat(int(df.Fd()), &dst2); err != nil {
		return 0, err
	}
	if sst.Mode&unix.S_IFMT != unix.S_IFDIR || dst2.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("copy %s to %s: %w", src, dst, ErrNotDir)
	}
	c := &copier{ctx: ctx, sem: make(chan struct{}, copyWorkers)}
	if err := c.entries(sf, df); err != nil {
		return c.size.Load(), err
	}
	if rootAttrs {
		err := setAttrsFd(int(df.Fd()), &sst)
		if err == nil {
			err = unix.Futimes(int(df.Fd()), []unix.Timeval{unix.NsecToTimeval(unix.TimespecToNsec(sst.Atim)),
				unix.NsecToTimeval(unix.TimespecToNsec(sst.Mtim))})
		}
		if err != nil {
			return c.size.Load(), fmt.Errorf("%s: %w", dst, err)
		}
	}
	return c.size.Load(), nil
}

type copier struct {
	ctx  context.Context
	sem  chan struct{}
	size atomic.Int64
}

// entries copies every entry of the open directory src into the open directory dst, fanning out over
// the copier's workers like the reaper's remover.
func (c *copier) entries(src, dst *os.File) error {
	names, err := src.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", src.Name(), err)
	}
	slices.Sort(names)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	for _, n := range names {
		if err := c.ctx.Err(); err != nil {
			fail(err)
			break
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		select {
		case c.sem <- struct{}{}:
			wg.Add(1)
			go func(n string) {
				defer wg.Done()
				defer func() { <-c.sem }()
				if err := c.entry(sfd, dfd, src.Name()+"/"+n, n); err != nil {
					fail(err)
				}
			}(n)
		default: // every worker busy: copy here, so deep trees never wait on themselves
			if err := c.entry(sfd, dfd, src.Name()+"/"+n, n); err != nil {
				fail(err)
			}
		}
	}
	wg.Wait()
	return firstErr
}

// entry copies one entry; rel names it in errors.
func (c *copier) entry(sfd, dfd int, rel, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed while the copy runs: a copy of a live volume is not atomic
		}
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
		s, err := openDirAt(sfd, name)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", rel, err)
		}
		defer s.Close()
		d, err := openDirAt(dfd, name)
		if err != nil {
			return fmt.Errorf("open copy of %s: %w", rel, err)
		}
		defer d.Close()
		if err := c.entries(s, d); err != nil {
			return err
		}
		// Attributes last: a read-only directory must first be filled.
		if err := setAttrsFd(int(d.Fd()), &st); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return setTimesAt(dfd, name, &st)
	case unix.S_IFREG:
		n, err := copyFile(sfd, dfd, name, &st)
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		c.size.Add(n)
		return nil
	case unix.S_IFLNK:
		target, err := readlinkAt(sfd, name)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("readlink %s: %w", rel, err)
		}
		if err := unix.Symlinkat(target, dfd, name); err != nil {
			return fmt.Errorf("symlink %s: %w", rel, err)
		}
		if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown symlink %s: %w", rel, err)
		}
		return setTimesAt(dfd, name, &st)
	default: // FIFO, socket, device: recreated, never opened
		if err := unix.Mknodat(dfd, name, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", rel, err)
		}
		if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
		// The node was just made in a directory nobody else writes yet, so fchmodat (which follows
		// symlinks) reaches it; chmod after chown, which clears setuid and setgid.
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", rel, err)
		}
		return setTimesAt(dfd, name, &st)
	}
}

func openDirAt(parent int, name string) (*os.File, error) {
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// copyFile copies one regular file. The source is opened O_NOFOLLOW|O_NONBLOCK and checked to still be
// the regular file that was listed: a FIFO swapped in would otherwise block the open for ever.
func copyFile(sfd, dfd int, name string, st *unix.Stat_t) (int64, error) {
	fd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	s := os.NewFile(uintptr(fd), name)
	defer s.Close()
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return 0, err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || now.Dev != st.Dev {
		return 0, fmt.Errorf("changed while being copied")
	}
	dfdFile, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, err
	}
	d := os.NewFile(uintptr(dfdFile), name)
	// io.Copy between files uses copy_file_range, which an NFSv4.2 server may do on its side.
	n, err := io.Copy(d, s)
	if err == nil {
		err = setAttrsFd(dfdFile, &now)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	return n, setTimesAt(dfd, name, &now)
}

func readlinkAt(dfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// setAttrsFd applies owner, then mode (chown clears setuid and setgid) to an open file. Times are set
// by name afterwards, once nothing writes to the file any more (an NFS close flushes writes, which
// would move the modification time again).
func setAttrsFd(fd int, st *unix.Stat_t) error {
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown to %d:%d: %w", st.Uid, st.Gid, err)
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func setTimesAt(dfd int, name string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}
