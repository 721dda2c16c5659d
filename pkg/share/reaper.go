package share

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Kick asks the reaper to sweep an export soon. It never blocks.
func (w *Workspace) Kick(x Export) {
	select {
	case w.kick <- x:
	default: // a sweep is already queued; it will see this entry too
	}
}

// Run is the reaper: it sweeps every known export at start and whenever AddExports makes a new one
// known (so removal resumes on a new controller as soon as it has learned the exports from the
// cluster), on every Kick, and every ReapInterval (archive retention), until ctx ends. Each export
// (place) has at most one sweep running, so a dead server stalls only its own export.
func (w *Workspace) Run(ctx context.Context) {
	var (
		mu      sync.Mutex
		running = map[string]bool{}
		again   = map[string]bool{}
	)
	var start func(x Export)
	start = func(x Export) {
		mu.Lock()
		if running[x.place()] {
			again[x.place()] = true
			mu.Unlock()
			return
		}
		running[x.place()] = true
		mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			next, err := w.Reap(ctx, x)
			if err != nil && ctx.Err() == nil {
				metrics.ReaperErrors.Inc()
				klog.ErrorS(err, "Reaper sweep failed; will retry", "server", x.Server, "share", x.Share)
				next = time.Now().Add(time.Minute)
			}
			mu.Lock()
			delete(running, x.place())
			rerun := again[x.place()]
			delete(again, x.place())
			mu.Unlock()
			if rerun && ctx.Err() == nil {
				start(x)
			} else if !next.IsZero() && ctx.Err() == nil {
				time.AfterFunc(time.Until(next), func() { w.Kick(x) })
			}
		}()
	}
	sweepAll := func() {
		w.mu.Lock()
		list := make([]Export, 0, len(w.known))
		for _, x := range w.known {
			list = append(list, x)
		}
		w.mu.Unlock()
		for _, x := range list {
			start(x)
		}
	}
	// Kicks are gathered per export for ReapDebounce: one sweep serves a burst of deletes.
	waiting := map[string]bool{}
	fire := make(chan Export, 64)
	kicked := func(x Export) {
		if w.cfg.ReapDebounce < 0 {
			start(x)
			return
		}
		if waiting[x.place()] {
			return
		}
		waiting[x.place()] = true
		time.AfterFunc(w.cfg.ReapDebounce, func() {
			select {
			case fire <- x:
			case <-ctx.Done():
			}
		})
	}
	sweepAll()
	t := time.NewTicker(w.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case x := <-w.kick:
			kicked(x)
		case x := <-fire:
			delete(waiting, x.place())
			start(x)
		case <-t.C:
			sweepAll()
		case <-w.sweep:
			sweepAll()
		}
	}
}

// Wait waits for running sweeps to return (after Run's context ended).
func (w *Workspace) Wait() { w.wg.Wait() }

// Reap sweeps one export now: trash entries past the grace period and archives past their retention
// are removed. It returns when the next entry becomes due (zero if none is waiting).
func (w *Workspace) Reap(ctx context.Context, x Export) (time.Time, error) {
	e, err := w.acquire(ctx, x)
	if err != nil {
		return time.Time{}, err
	}
	defer w.release(e)
	if err := e.mu.lock(ctx); err != nil {
		return time.Time{}, err
	}
	r, gen := e.root, e.gen
	e.mu.unlock()
	if r == nil {
		return time.Time{}, errors.New("export not mounted")
	}
	// Each sweep checks the metadata area again and reopens the descriptors that Create and Delete
	// use, so a directory replaced behind Paddock's back (a symlink put in its place) is refused here.
	// An export without a metadata area has nothing to reap, and the reaper must not make one: a
	// known export is one Paddock used, but the area may have been removed by hand since.
	if _, err := bounded(ctx, w, x.Server, w.cfg.FSTimeout, "stat "+volume.MetaDir, func() (fs.FileInfo, error) { return r.Lstat(volume.MetaDir) }, nil); errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	var h metaHold
	defer h.release()
	m, err := w.boundedMeta(ctx, x.Server, &h, func(own *metaHold) (*metaFDs, error) { return w.metaRefresh(ctx, own, e, r, gen) })
	if err != nil {
		return time.Time{}, err
	}
	now := w.cfg.Now()
	var next time.Time
	due := func(t time.Time) bool {
		if !t.After(now) {
			return true
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
		return false
	}
	for _, area := range []struct {
		dir, kind string
		fd        func() int
		when      func(string) (time.Time, bool)
	}{
		{trashDir, "trash", m.trashFD, func(n string) (time.Time, bool) {
			t, ok := trashTime(n)
			if !ok {
				return time.Time{}, true // not named by Paddock, but in the trash all the same
			}
			return t.Add(w.cfg.TrashGrace), true
		}},
		{archiveDir, "archive", m.archiveFD, archiveExpiry},
	} {
		names, err := w.list(ctx, x.Server, m, area.fd, area.dir)
		if err != nil {
			return next, err
		}
		var victims []string
		for _, n := range names {
			if t, ok := area.when(n); ok && due(t) {
				victims = append(victims, n)
			}
		}
		if len(victims) == 0 {
			continue
		}
		if err := w.removeEntries(ctx, x.Server, m, area.fd, area.dir, victims); err != nil {
			return next, err
		}
		metrics.ReaperRemoved.WithLabelValues(area.kind).Add(float64(len(victims)))
		klog.V(2).InfoS("Reaped", "area", area.kind, "entries", len(victims), "server", x.Server, "share", x.Share)
	}
	return next, nil
}

// list reads the names in the directory open as dfd (the trash or the archive), through a fresh
// descriptor of it so that concurrent sweeps never share a directory offset.
// The closure holds its own reference to m: abandoned at the deadline, it may run after Reap returns.
func (w *Workspace) list(ctx context.Context, server string, m *metaFDs, dfd func() int, dir string) ([]string, error) {
	m.acquire()
	return bounded(ctx, w, server, w.cfg.FSTimeout, "list "+dir, func() ([]string, error) {
		defer m.release()
		fd, err := unix.Openat(dfd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
		}
		f := os.NewFile(uintptr(fd), dir)
		defer f.Close()
		return f.Readdirnames(-1)
	}, nil)
}

// removeEntries removes whole trees in the directory open as dfd. Directories are opened relative to
// their parent with O_NOFOLLOW, so a symlink anywhere in a tree is unlinked, never followed; work fans
// out over ReapWorkers goroutines because each NFS unlink is a round trip.
func (w *Workspace) removeEntries(ctx context.Context, server string, m *metaFDs, dfd func() int, dir string, names []string) error {
	sem := make(chan struct{}, w.cfg.ReapWorkers)
	m.acquire()
	// The whole removal may take long for a big tree; it is bounded generously and, if the server
	// dies, abandoned to finish or fail in the background (it owns its descriptors) while the next
	// sweep retries.
	_, err := bounded(ctx, w, server, 1000*w.cfg.FSTimeout, "remove "+dir, func() (struct{}, error) {
		fd, err := unix.Openat(dfd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		m.release() // from here on the removal owns its descriptors
		if err != nil {
			return struct{}{}, &fs.PathError{Op: "open", Path: dir, Err: err}
		}
		d := os.NewFile(uintptr(fd), dir)
		defer d.Close()
		return struct{}{}, removeAll(ctx, int(d.Fd()), names, sem, true)
	}, nil)
	return err
}

// top marks the entries of the trash or archive themselves (deleted volumes, often empty).
func removeAll(ctx context.Context, parent int, names []string, sem chan struct{}, top bool) error {
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
	for _, n := range names {
		if ctx.Err() != nil {
			fail(ctx.Err())
			break
		}
		// Everything but a directory (files, symlinks, FIFOs...) is unlinked right here: one syscall,
		// never a goroutine per file, which costs more than the unlink on a slow CPU.
		err := unix.Unlinkat(parent, n, 0)
		if err == nil || errors.Is(err, unix.ENOENT) {
			continue
		}
		if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
			fail(fmt.Errorf("unlink %s: %w", n, err))
			continue
		}
		// A directory: a free worker takes it, else it is done here. Subtrees run in parallel.
		select {
		case sem <- struct{}{}:
			wg.Add(1)
			go func(n string) {
				defer wg.Done()
				defer func() { <-sem }()
				if err := removeDir(ctx, parent, n, sem, top); err != nil {
					fail(err)
				}
			}(n)
		default:
			if err := removeDir(ctx, parent, n, sem, top); err != nil {
				fail(err)
			}
		}
	}
	wg.Wait()
	return firstErr
}

// removeDir removes the directory name (its unlink failed with EISDIR) in the directory open as
// parent, recursively. It is opened O_DIRECTORY|O_NOFOLLOW relative to parent, so a symlink put in its
// place is never followed.
func removeDir(ctx context.Context, parent int, name string, sem chan struct{}, top bool) error {
	if top {
		// A deleted volume is often empty: one rmdir instead of open, list and rmdir.
		err := unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
	}
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		children, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			return fmt.Errorf("read %s: %w", name, err)
		}
		err = removeAll(ctx, int(f.Fd()), children, sem, false)
		f.Close()
		if err != nil {
			return err
		}
		err = unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		// NFS readdir can miss entries that move during the listing: list again a few times.
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) || attempt >= 3 {
			return fmt.Errorf("rmdir %s: %w", name, err)
		}
	}
}
