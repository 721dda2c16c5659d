package share

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// ErrInProgress: another operation on the same volume (or snapshot) is still running, perhaps stuck
// on a dead server past its own deadline (CSI ABORTED: retry later).
var ErrInProgress = errors.New("another operation on it is still in progress")

// op describes one call on an export.
type op struct {
	keys    []string      // locks held while the work runs (volumes, snapshots); none for reads
	x       Export        // the export the work runs on
	timeout time.Duration // the work's deadline (the caller's, if sooner)
	what    string        // names the work in errors
}

// call is what the work of an op gets: the export, mounted and referenced, and its root.
type call struct {
	ctx  context.Context
	w    *Workspace
	e    *export
	r    *os.Root
	gen  int
	hold metaHold
}

// meta returns the export's metadata descriptors, creating the metadata area if needed.
func (c *call) meta() (*metaFDs, error) { return c.w.metaOf(c.ctx, &c.hold, c.e, c.r, c.gen) }

// metaRefresh opens the descriptors again (one of the directories was replaced).
func (c *call) metaRefresh() (*metaFDs, error) {
	return c.w.metaRefresh(c.ctx, &c.hold, c.e, c.r, c.gen)
}

// metaCached returns the descriptors only if they are open already (never creates anything).
func (c *call) metaCached() *metaFDs { return c.w.metaCached(c.ctx, &c.hold, c.e, c.gen) }

// run is how every call on an export runs. It takes the op's locks (in sorted order, waiting at most
// until the deadline), then does the work in a goroutine of its own that holds those locks, the
// export's mount reference and one of the server's limiter slots until the work has really stopped.
// The caller returns when the work ends or at the deadline, whichever is first. At the deadline the
// work's context ends, so loops that check it stop; a work stuck in the kernel keeps the volume
// locked, and a later call on the volume waits and then fails with ErrInProgress instead of running
// beside it. A dead server therefore costs one slot per stuck call, never more than the limiter's
// bound, and calls beyond it fail at once with mount.ErrBusy.
func (w *Workspace) run(ctx context.Context, o op, fn func(c *call) error) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	unlock, err := w.lockKeys(ctx, o.keys...)
	if err != nil {
		cancel()
		return fmt.Errorf("%s: %w (waited until: %w)", o.what, ErrInProgress, err)
	}
	var (
		mu      sync.Mutex
		slot    *mount.Slot
		overran bool
	)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		defer unlock()
		ctx := context.WithValue(ctx, inWorkKey{}, true)
		s, err := w.limiter.Acquire(ctx, o.x.Server)
		if err != nil {
			done <- fmt.Errorf("%s: %w", o.what, err)
			return
		}
		defer s.Release()
		mu.Lock()
		slot = s
		if overran {
			s.Overran()
		}
		mu.Unlock()
		done <- w.withExport(ctx, o, fn)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	mu.Lock()
	overran = true
	if slot != nil {
		slot.Overran()
	}
	mu.Unlock()
	select {
	case err := <-done: // finished as the deadline passed
		return err
	default:
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: %w", o.what, context.Canceled)
	}
	limit := fmt.Sprintf("the call's deadline (at most %v)", o.timeout)
	return fmt.Errorf("%s: %w: %s passed; the work goes on in the background and keeps its locks until it stops", o.what, mount.ErrTimeout, limit)
}

// withExport runs fn on the export's root, remounting once after a stale handle. It runs in run's
// goroutine, so it blocks for as long as the filesystem does.
func (w *Workspace) withExport(ctx context.Context, o op, fn func(c *call) error) error {
	e, err := w.acquire(ctx, o.x)
	if err != nil {
		return err
	}
	defer w.release(e)
	for attempt := 0; ; attempt++ {
		if err := e.mu.lock(ctx); err != nil {
			return err
		}
		root, gen := e.root, e.gen
		e.mu.unlock()
		if root == nil {
			return fmt.Errorf("export %s:%s is not mounted", o.x.Server, o.x.Share)
		}
		c := &call{ctx: ctx, w: w, e: e, r: root, gen: gen}
		err = fn(c)
		c.hold.release()
		if err == nil || !mount.IsStale(err) || attempt > 0 {
			return err
		}
		if rerr := w.ensureMounted(ctx, e, gen); rerr != nil {
			return fmt.Errorf("%w (remount after stale handle failed: %v)", err, rerr)
		}
	}
}

// read runs a call that changes nothing: no lock, but the limiter and the deadline all the same.
func (w *Workspace) read(ctx context.Context, x Export, what string, fn func(r *os.Root) error) error {
	return w.run(ctx, op{x: x, timeout: w.cfg.FSTimeout, what: what}, func(c *call) error { return fn(c.r) })
}

// inWorkKey marks the context of run's work goroutine, which holds a limiter slot and is abandoned by
// its caller at the deadline already.
type inWorkKey struct{}

// bounded runs fn under the server's limiter and the filesystem deadline (outside run: the reaper);
// a value that arrives after the caller gave up is dropped. Inside run's work it just calls fn: the
// work holds a slot and its caller is not waiting on it past the deadline.
func bounded[T any](ctx context.Context, w *Workspace, server string, timeout time.Duration, what string, fn func() (T, error), drop func(T)) (T, error) {
	if ctx.Value(inWorkKey{}) != nil {
		return fn()
	}
	return mount.LimitedOwned(w.limiter, ctx, server, timeout, what, fn, drop)
}

// volumeKey is the lock key of a volume directory: the server and the directory's path on it, so the
// same directory reached through two exports (one inside the other) or two NFS versions is one key.
func volumeKey(v volume.Volume) string { return v.Server + "\x00" + path.Join(v.Share, v.SubDir) }

// snapshotKey is the lock key of a snapshot; NUL never occurs in a path, so it cannot be a volume's.
func snapshotKey(s volume.Snapshot) string {
	return s.Server + "\x00\x00snapshot\x00" + path.Join(s.Share, s.Dir)
}

// lockKeys takes several locks in sorted order, so two calls that need the same pair never deadlock.
func (w *Workspace) lockKeys(ctx context.Context, keys ...string) (func(), error) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var unlocks []func()
	release := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	for _, k := range keys {
		u, err := w.locks.Lock(ctx, k)
		if err != nil {
			release()
			return nil, err
		}
		unlocks = append(unlocks, u)
	}
	return release, nil
}
