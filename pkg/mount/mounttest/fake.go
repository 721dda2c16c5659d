// Package mounttest is a fake mount.Interface for tests: "mounting" an NFS source makes the target a
// symlink to a local directory that stands in for the export, so code that opens the target (os.Root)
// sees the export's files. Calls are counted, and the next call of an operation can be made to fail or
// to hang until released, like a call to a dead NFS server.
package mounttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
)

// Op names a mounter operation for counting and fault injection.
type Op string

const (
	OpMount     Op = "mount"
	OpBindMount Op = "bindMount"
	OpUnmount   Op = "unmount"
	OpMountedAt Op = "mountedAt"
	OpMountsOf  Op = "mountsOf"
)

// Fake implements mount.Interface on local directories.
type Fake struct {
	// Timeout, when positive, bounds Mount and Unmount with mount.Bounded as the real Mounter does:
	// a hung call returns mount.ErrTimeout at the deadline and is left behind until released.
	Timeout time.Duration

	mu      sync.Mutex
	exports map[string]string        // "server:/share" -> local directory
	mounts  map[string][]mount.Entry // target -> stacked mounts, top last
	calls   map[Op]int
	faults  map[Op][]*fault
	blocks  []*Block
}

type fault struct {
	err   error
	block *Block
}

// Block is a pending hang: the blocked call closes Entered when it starts hanging and returns when
// Release is called.
type Block struct {
	Entered chan struct{}
	release chan struct{}
	enter   sync.Once
	once    sync.Once
}

// Release lets the blocked call go on (idempotent).
func (b *Block) Release() { b.once.Do(func() { close(b.release) }) }

// New returns a fake with no exports.
func New() *Fake {
	return &Fake{exports: map[string]string{}, mounts: map[string][]mount.Entry{}, calls: map[Op]int{}, faults: map[Op][]*fault{}}
}

// AddExport makes source ("server:/share") resolve to dir; "server:/share/sub" resolves to dir/sub.
func (f *Fake) AddExport(source, dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exports[source] = dir
}

// FailNext makes the next call of op return err (queued: several calls fail in order).
func (f *Fake) FailNext(op Op, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], &fault{err: err})
}

// BlockNext makes the next call of op hang until the returned Block is released. Blocks still held
// when the test ends should be released (ReleaseAll) so no goroutine is left hanging.
func (f *Fake) BlockNext(op Op) *Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := &Block{Entered: make(chan struct{}), release: make(chan struct{})}
	f.faults[op] = append(f.faults[op], &fault{block: b})
	f.blocks = append(f.blocks, b)
	return b
}

// ReleaseAll releases every block ever handed out.
func (f *Fake) ReleaseAll() {
	f.mu.Lock()
	bs := slices.Clone(f.blocks)
	f.mu.Unlock()
	for _, b := range bs {
		b.Release()
	}
}

// Calls counts the calls of op so far (including failed and blocked ones).
func (f *Fake) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Mounted returns the top mount at target.
func (f *Fake) Mounted(target string) (mount.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.mounts[filepath.Clean(target)]
	if len(s) == 0 {
		return mount.Entry{}, false
	}
	return s[len(s)-1], true
}

// Targets lists every mounted target.
func (f *Fake) Targets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []string
	for t, s := range f.mounts {
		if len(s) > 0 {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	return ts
}

// begin counts a call and takes its fault, if one is queued.
func (f *Fake) begin(op Op) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	q := f.faults[op]
	if len(q) == 0 {
		return nil
	}
	f.faults[op] = q[1:]
	return q[0]
}

// apply hangs or fails as the fault says; nil means go on.
func (ft *fault) apply() error {
	if ft == nil {
		return nil
	}
	if ft.block != nil {
		ft.block.enter.Do(func() { close(ft.block.Entered) })
		<-ft.block.release
		return nil
	}
	return ft.err
}

func (f *Fake) bounded(ctx context.Context, what string, fn func() error) error {
	if f.Timeout > 0 {
		return mount.Bounded(ctx, f.Timeout, what, fn)
	}
	return fn()
}

// splitSource splits "server:/path" (server may be a bracketed IPv6 address).
func splitSource(s string) (server, p string, ok bool) {
	i := strings.Index(s, ":/")
	if i <= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// resolve finds the local directory for an NFS source: the longest export that is a prefix of it.
func (f *Fake) resolve(source string) (string, error) {
	server, p, ok := splitSource(source)
	if !ok {
		return "", fmt.Errorf("mount.nfs: %s: not an NFS source (server:/path)", source)
	}
	best, bestLen := "", -1
	for src, dir := range f.exports {
		xs, xp, ok := splitSource(src)
		if !ok || xs != server {
			continue
		}
		var rest string
		switch {
		case p == xp:
		case xp == "/" && strings.HasPrefix(p, "/"):
			rest = p[1:]
		case strings.HasPrefix(p, xp+"/"):
			rest = p[len(xp)+1:]
		default:
			continue
		}
		if len(xp) > bestLen {
			best, bestLen = filepath.Join(dir, filepath.FromSlash(rest)), len(xp)
		}
	}
	if bestLen < 0 {
		return "", fmt.Errorf("mount.nfs: access denied by server while mounting %s", source)
	}
	return best, nil
}

// Mount makes target (which must exist: an empty directory, or a symlink left by an earlier mount)
// a symlink to the local directory behind source. Unlike the kernel's, this is not atomic for someone
// looking at the target concurrently.
func (f *Fake) Mount(ctx context.Context, source, target string, options []string) error {
	ft := f.begin(OpMount)
	return f.bounded(ctx, "mount "+source, func() error {
		if err := ft.apply(); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		target = filepath.Clean(target)
		dir, err := f.resolve(source)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("mount.nfs: mounting %s failed, reason given by server: No such file or directory", source)
		}
		fi, err := os.Lstat(target)
		if err != nil {
			return fmt.Errorf("mount.nfs: mount point %s does not exist", target)
		}
		if fi.Mode()&os.ModeSymlink != 0 || fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return fmt.Errorf("fake mount: cannot replace %s (the fake only mounts on empty directories): %w", target, err)
			}
		} else {
			return fmt.Errorf("mount.nfs: mount point %s is not a directory", target)
		}
		if err := os.Symlink(dir, target); err != nil {
			return err
		}
		f.mounts[target] = append(f.mounts[target], mount.Entry{Source: source, FSType: "nfs4",
			ReadOnly: slices.Contains(options, "ro"), Options: slices.Clone(options)})
		return nil
	})
}

// BindMount makes target a symlink to whatever the mount at source points to, and records a mount
// at target with source's NFS source (as the kernel's mount table shows a bind of an NFS mount) and
// "bind" (plus "ro" when readOnly) in its options. Source must be a mounted target of this fake.
func (f *Fake) BindMount(ctx context.Context, source, target string, readOnly bool) error {
	ft := f.begin(OpBindMount)
	return f.bounded(ctx, "bind mount "+source, func() error {
		if err := ft.apply(); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		source, target = filepath.Clean(source), filepath.Clean(target)
		s := f.mounts[source]
		if len(s) == 0 {
			return fmt.Errorf("mount: %s: special device %s does not exist (the fake binds only its own mounts)", target, source)
		}
		dir, err := os.Readlink(source)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(target)
		if err != nil {
			return fmt.Errorf("mount: mount point %s does not exist", target)
		}
		if fi.Mode()&os.ModeSymlink == 0 && !fi.IsDir() {
			return fmt.Errorf("mount: mount point %s is not a directory", target)
		}
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("fake bind mount: cannot replace %s (the fake only mounts on empty directories): %w", target, err)
		}
		if err := os.Symlink(dir, target); err != nil {
			return err
		}
		top := s[len(s)-1]
		opts := []string{"bind"}
		if readOnly {
			opts = append(opts, "ro")
		}
		f.mounts[target] = append(f.mounts[target], mount.Entry{Source: top.Source, FSType: top.FSType,
			ReadOnly: readOnly || top.ReadOnly, Options: opts})
		return nil
	})
}

// Unmount removes every mount at target and puts an empty directory back. Nothing mounted is success.
func (f *Fake) Unmount(ctx context.Context, target string) error {
	ft := f.begin(OpUnmount)
	return f.bounded(ctx, "unmount "+target, func() error {
		if err := ft.apply(); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		target = filepath.Clean(target)
		if len(f.mounts[target]) == 0 {
			return nil
		}
		delete(f.mounts, target)
		if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return os.Mkdir(target, 0o750)
	})
}

// MountedAt reports the top mount at target, or nil.
func (f *Fake) MountedAt(target string) (*mount.Entry, error) {
	if err := f.begin(OpMountedAt).apply(); err != nil {
		return nil, err
	}
	e, ok := f.Mounted(target)
	if !ok {
		return nil, nil
	}
	e.Options = slices.Clone(e.Options)
	return &e, nil
}

// MountsOf lists the targets where source is mounted (anywhere in a stack), sorted.
func (f *Fake) MountsOf(source string) ([]string, error) {
	if err := f.begin(OpMountsOf).apply(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []string
	for t, s := range f.mounts {
		if slices.ContainsFunc(s, func(e mount.Entry) bool { return e.Source == source }) {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	return ts, nil
}

var _ mount.Interface = (*Fake)(nil)
