// Package mount is Paddock's boundary to the operating system's mount table: NFS mounts through
// mount(8) (killed on timeout), bind mounts through k8s.io/mount-utils, unmounts that survive a dead server, and the checks that never touch a
// possibly-hung NFS path (the mount table is read from /proc, not by stat-ing the target).
package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mountutils "k8s.io/mount-utils"
)

// ErrTimeout is returned when an operation on NFS did not finish within its deadline (typically a dead
// or unreachable server). The operation may still be running in the kernel.
var ErrTimeout = errors.New("NFS operation timed out")

// Interface is what the rest of Paddock needs from the OS; tests use a fake.
type Interface interface {
	Mount(ctx context.Context, source, target string, options []string) error
	Unmount(ctx context.Context, target string) error
	// BindMount makes the directory tree mounted at source (a staged NFS mount) visible at target as
	// well, read-only at target when readOnly is set (a bind remount: the source stays writable).
	BindMount(ctx context.Context, source, target string, readOnly bool) error
	// MountedAt returns the mount at target, or nil when nothing is mounted there.
	MountedAt(target string) (*Entry, error)
	// MountsOf lists the mount points where source is mounted.
	MountsOf(source string) ([]string, error)
}

// Entry is one mount at a target, as the mount table shows it.
type Entry struct {
	Source   string
	Target   string
	FSType   string
	ReadOnly bool
	Options  []string
}

// Mounter mounts NFS with mount(8) and bind-mounts with k8s.io/mount-utils.
type Mounter struct {
	mu      mountutils.Interface
	timeout time.Duration
	// mountCmd is mount(8); tests put a stand-in here.
	mountCmd string
	// mountinfo is read instead of calling stat on targets, which blocks on a dead hard-mounted server.
	mountinfo string
}

// New returns a Mounter whose every blocking call gives up after timeout (unless ctx ends sooner).
func New(timeout time.Duration) *Mounter {
	// Without systemd: an NFS mount needs no transient scope, and the node image may have no systemd.
	return &Mounter{mu: mountutils.NewWithoutSystemd(""), timeout: timeout, mountCmd: "mount", mountinfo: "/proc/self/mountinfo"}
}

// Source is the mount source for a directory on a server, with IPv6 already bracketed by validation.
func Source(server, path string) string { return server + ":" + path }

// Bounded runs fn with a deadline: the smaller of ctx's and timeout. A call still blocked in the
// kernel is left behind (it cannot be interrupted) and the caller gets ErrTimeout at once.
func Bounded(ctx context.Context, timeout time.Duration, what string, fn func() error) error {
	_, err := BoundedValue(ctx, timeout, what, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// BoundedValue is Bounded for calls that return a value; the value is handed over through a channel so
// a call that finishes after the deadline writes nothing the caller can still see.
func BoundedValue[T any](ctx context.Context, timeout time.Duration, what string, fn func() (T, error)) (T, error) {
	return BoundedOwned(ctx, timeout, what, fn, nil)
}

// BoundedOwned is BoundedValue for calls that acquire something (a descriptor, a reference count):
// if the call succeeds only after the caller gave up, drop is called with its value, so what it
// acquired is released instead of leaked.
func BoundedOwned[T any](ctx context.Context, timeout time.Duration, what string, fn func() (T, error), drop func(T)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return boundedCall(ctx, timeout, what, fn, drop, nil, nil)
}

// boundedCall runs fn in a goroutine and waits for it until ctx ends. returned runs when fn has
// really returned (whatever the caller did), overran when the caller gives up on it first.
func boundedCall[T any](ctx context.Context, timeout time.Duration, what string, fn func() (T, error), drop func(T), returned, overran func()) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	var mu sync.Mutex
	gaveUp := false
	go func() {
		v, err := fn()
		if returned != nil {
			returned()
		}
		mu.Lock()
		defer mu.Unlock()
		if gaveUp {
			if err == nil && drop != nil {
				drop(v)
			}
			return
		}
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		if overran != nil {
			overran()
		}
		mu.Lock()
		gaveUp = true
		mu.Unlock()
		// The call may have finished as the deadline passed: then its result is waiting, and unused.
		select {
		case r := <-done:
			if r.err == nil && drop != nil {
				drop(r.v)
			}
		default:
		}
		var zero T
		return zero, fmt.Errorf("%s: %w after %v", what, ErrTimeout, timeout)
	}
}

// Mount mounts an NFS source at target (which must exist). mount(8) runs in a process group of its
// own, and when the deadline passes the whole group (mount and the mount.nfs it started) is killed
// and reaped: a mount left running against a dead server would hold its slot in the kernel and make
// later mounts to that server queue behind it. mount-utils' Mount takes no context, hence the exec here.
func (m *Mounter) Mount(ctx context.Context, source, target string, options []string) error {
	klog.FromContext(ctx).V(4).Info("Mounting", "source", source, "target", target, "options", options)
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	args := []string{"-t", "nfs"}
	if len(options) > 0 {
		args = append(args, "-o", strings.Join(options, ","))
	}
	args = append(args, source, target)
	return Bounded(ctx, m.timeout, "mount "+source, func() error {
		out, err := runGroup(ctx, m.mountCmd, args)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("mount %s at %s: %w: %s", source, target, err, strings.TrimSpace(string(out)))
		}
		return err
	})
}

// runGroup runs name in a new process group and, if ctx ends first, kills the group with SIGKILL and
// waits for the child (a process killed in an NFS call dies when the call returns; WaitDelay stops
// waiting for grandchildren holding the output pipe).
func runGroup(ctx context.Context, name string, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

// BindMount bind-mounts source at target (which must exist); with readOnly, mount-utils follows the
// bind with a remount "bind,ro", which makes only the new mount point read-only.
func (m *Mounter) BindMount(ctx context.Context, source, target string, readOnly bool) error {
	opts := []string{"bind"}
	if readOnly {
		opts = append(opts, "ro")
	}
	klog.FromContext(ctx).V(4).Info("Bind-mounting", "source", source, "target", target, "options", opts)
	return Bounded(ctx, m.timeout, "bind mount "+source, func() error {
		return m.mu.Mount(source, target, "", opts)
	})
}

// MountedAt reads the mount table; it never touches the target itself.
func (m *Mounter) MountedAt(target string) (*Entry, error) {
	infos, err := mountutils.ParseMountInfo(m.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	target = filepath.Clean(target)
	var found *Entry
	for _, mi := range infos { // the last entry for a path is the one on top
		if mi.MountPoint != target {
			continue
		}
		opts := append(slices.Clone(mi.MountOptions), mi.SuperOptions...)
		found = &Entry{Source: mi.Source, Target: mi.MountPoint, FSType: mi.FsType, Options: opts,
			ReadOnly: slices.Contains(mi.MountOptions, "ro")}
	}
	return found, nil
}

// MountsOf lists where source is mounted, from the mount table.
func (m *Mounter) MountsOf(source string) ([]string, error) {
	infos, err := mountutils.ParseMountInfo(m.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	var targets []string
	for _, mi := range infos {
		if mi.Source == source {
			targets = append(targets, mi.MountPoint)
		}
	}
	return targets, nil
}

// Unmount removes every mount stacked at target. A dead server cannot wedge it: a plain umount that
// does not finish in time is followed by a forced one (aborts in-flight NFS requests) and then a lazy
// one (detaches at once). Nothing mounted is success.
func (m *Mounter) Unmount(ctx context.Context, target string) error {
	log := klog.FromContext(ctx)
	for i := 0; i < 8; i++ {
		e, err := m.MountedAt(target)
		if err != nil {
			return err
		}
		if e == nil {
			return nil
		}
		step := m.timeout / 3
		if step < time.Second {
			step = time.Second
		}
		var lastErr error
		for _, args := range [][]string{{target}, {"-f", target}, {"-l", target}} {
			lastErr = runUmount(ctx, step, args)
			if lastErr == nil {
				break
			}
			log.Info("Unmount attempt failed, escalating", "target", target, "args", args, "err", lastErr)
		}
		if lastErr != nil {
			return fmt.Errorf("unmount %s: %w", target, lastErr)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 8 unmounts", target)
}

func runUmount(ctx context.Context, timeout time.Duration, args []string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "umount", args...)
	// The umount process can be stuck in uninterruptible sleep; don't wait on its pipes forever.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("umount %s: %w", strings.Join(args, " "), ErrTimeout)
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "not mounted") || strings.Contains(msg, "no mount point") {
			return nil
		}
		return fmt.Errorf("umount %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// IsStale tells whether err means the mount has lost its server-side object (a re-created export,
// a restarted server without stable handles) or its connection. Only those: mount-utils'
// IsCorruptedMnt also counts EACCES, EIO, EAGAIN and ENODEV, for which a remount fixes nothing and, on
// the controller's shared export mount, would abort the requests of every other call using it.
func IsStale(err error) bool {
	return errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.ENOTCONN)
}

// Stats are the filesystem figures NodeGetVolumeStats reports.
type Stats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// StatFS reads filesystem usage at path within the deadline.
func StatFS(ctx context.Context, timeout time.Duration, path string) (Stats, error) {
	return BoundedValue(ctx, timeout, "statfs "+path, func() (Stats, error) { return ReadStats(path) })
}

// ReadStats is statfs of path, without a deadline: it blocks as long as the filesystem does (run it
// under Bounded or a Limiter).
func ReadStats(path string) (Stats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Stats{}, err
	}
	bs := int64(st.Bsize)
	s := Stats{
		TotalBytes: int64(st.Blocks) * bs, AvailableBytes: int64(st.Bavail) * bs,
		TotalInodes: int64(st.Files), FreeInodes: int64(st.Ffree),
	}
	s.UsedBytes = (int64(st.Blocks) - int64(st.Bfree)) * bs
	s.UsedInodes = s.TotalInodes - s.FreeInodes
	return s, nil
}

// Lstat runs os.Lstat within the deadline.
func Lstat(ctx context.Context, timeout time.Duration, path string) (os.FileInfo, error) {
	return BoundedValue(ctx, timeout, "stat "+path, func() (os.FileInfo, error) { return os.Lstat(path) })
}
