// Package share is the controller's view of NFS exports: each export is mounted once and reused
// (ref-counted, unmounted when idle, remounted after a stale handle), and volume directories are
// created, moved to trash, archived and scrubbed inside it. Every path is resolved through os.Root, so
// nothing outside the export is ever reached, whatever symlinks the export holds.
package share

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/keylock"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Config tunes a Workspace.
type Config struct {
	WorkDir     string        // export mount points live in WorkDir/exports
	IdleTimeout time.Duration // unmount an export nobody used for this long
	FSTimeout   time.Duration // deadline for one filesystem step on the export
	// TrashGrace keeps trash entries this long before the reaper removes them (0: at once). It is a
	// window to recover from a mistaken delete, and lets tests hold the reaper back.
	TrashGrace   time.Duration
	ReapInterval time.Duration // how often known exports are swept for trash and expired archives
	ReapWorkers  int
	// ReapDebounce gathers Kicks: the first one starts a sweep after this delay, and later ones until
	// then ride along, so a burst of deletes costs one sweep, not one each (0: 500ms; negative: none).
	ReapDebounce time.Duration
	Mounter      mount.Interface
	Now          func() time.Time
	// Limiter bounds the calls in flight per NFS server, so a dead server costs a fixed number of
	// threads (nil: a limiter of its own with the default bound).
	Limiter *mount.Limiter
}

// Export names one NFS export and how the controller mounts it.
type Export struct {
	Server  string
	Share   string
	NFSVers string
	// Options are the controller's mount options (volume.MountOptions.ControllerString), without the
	// version. "" means "as this export was last known to be mounted" (learned from classes, PVs and
	// calls), or by default with nolock only.
	Options string
}

func exportOf(v volume.Volume) Export {
	return Export{Server: v.Server, Share: v.Share, NFSVers: v.NFSVers, Options: v.MountOptions}
}

// Place is the export without its options: what it is, not how it is mounted. Volumes, claims and
// the reaper's sweeps belong to the place; held mounts to the place and the options.
func (x Export) Place() Export {
	x.Options = ""
	return x
}

func (x Export) place() string { return x.Server + "\x00" + x.Share + "\x00" + x.NFSVers }

func (x Export) key() string { return x.place() + "\x00" + x.Options }

// defaultOptions mount an export no class or PV has said anything about.
var defaultOptions = func() string {
	m, _ := volume.ParseMountOptions(nil)
	return m.ControllerString()
}()

func (x Export) options() []string {
	opts := strings.Split(x.Options, ",")
	if x.NFSVers != "" {
		opts = append(opts, "nfsvers="+x.NFSVers)
	}
	return opts
}

// Workspace holds the controller's export mounts.
type Workspace struct {
	cfg     Config
	locks   keylock.Locks // per volume directory and snapshot: the one layer that serializes them
	limiter *mount.Limiter

	mu      sync.Mutex
	exports map[string]*export
	// known holds every export in use, by place, with the options it was last mounted or configured
	// with: the reaper sweeps them and listings read them. It lives in memory only; a new controller
	// learns it again from the cluster (AddExports) and from the calls it serves.
	known    map[string]Export
	knownGen int // bumped when known grows
	kick     chan Export
	sweep    chan struct{} // a new export is known: sweep every known one
	wg       sync.WaitGroup
	closed   bool
}

type export struct {
	x     Export
	path  string
	refs  int
	timer *time.Timer

	mu      ctxMutex // guards root and mounted; held while (re)mounting, so waiters honour their deadline
	root    *os.Root
	mounted bool
	gen     int // bumped on every remount so concurrent stale errors remount once

	// The metadata area, checked (ensureMeta) and opened once per mount generation: claims and trash
	// are then reached by one *at call on a held descriptor instead of a walk from the export root,
	// which on NFS costs a LOOKUP/GETATTR round trip per component.
	metaMu     ctxMutex
	meta       *metaFDs
	metaGen    int
	markers    map[string]bool // shares of the exports inside this one whose roots are marked; under metaMu
	markersGen int             // the knownGen the markers were checked at
}

// New creates a workspace. Call Run to start the reaper.
func New(cfg Config) (*Workspace, error) {
	if cfg.Mounter == nil {
		return nil, errors.New("share: no mounter")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FSTimeout <= 0 {
		cfg.FSTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = time.Hour
	}
	if cfg.ReapWorkers <= 0 {
		cfg.ReapWorkers = 8
	}
	if cfg.Limiter == nil {
		cfg.Limiter = mount.NewLimiter(0)
	}
	if cfg.ReapDebounce == 0 {
		cfg.ReapDebounce = 500 * time.Millisecond
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, "exports"), 0o700); err != nil {
		return nil, fmt.Errorf("creating work dir: %w", err)
	}
	w := &Workspace{cfg: cfg, limiter: cfg.Limiter, exports: map[string]*export{}, known: map[string]Export{},
		kick: make(chan Export, 64), sweep: make(chan struct{}, 1)}
	return w, nil
}

// acquire returns the export mounted, with a reference the caller must release. An export without
// options is mounted as it was last known to be.
func (w *Workspace) acquire(ctx context.Context, x Export) (*export, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errors.New("share: workspace is shut down")
	}
	if x.Options == "" {
		x.Options = defaultOptions
		if k, ok := w.known[x.place()]; ok {
			x.Options = k.Options
		}
	}
	e := w.exports[x.key()]
	if e == nil {
		sum := sha256.Sum256([]byte(x.key()))
		e = &export{x: x, path: filepath.Join(w.cfg.WorkDir, "exports", hex.EncodeToString(sum[:10])), mu: make(ctxMutex, 1),
			metaMu: make(ctxMutex, 1)}
		w.exports[x.key()] = e
	}
	e.refs++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	w.mu.Unlock()

	if err := w.ensureMounted(ctx, e, -1); err != nil {
		w.release(e)
		return nil, err
	}
	return e, nil
}

func (w *Workspace) release(e *export) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.refs--
	if e.refs > 0 || w.closed {
		return
	}
	e.timer = time.AfterFunc(w.cfg.IdleTimeout, func() { w.idleUnmount(e) })
}

// idleUnmount unmounts an export nobody has used for IdleTimeout. It holds the export's mutex while
// it checks that nobody took a reference and unmounts, and the export stays in the map: a call that
// arrives meanwhile waits in ensureMounted and mounts again afterwards, never using a mount that is
// being taken away.
func (w *Workspace) idleUnmount(e *export) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*w.cfg.FSTimeout)
	defer cancel()
	if err := e.mu.lock(ctx); err != nil {
		return // busy (a mount in progress): the next release starts the timer again
	}
	defer e.mu.unlock()
	w.mu.Lock()
	idle := e.refs == 0 && w.exports[e.x.key()] == e && !w.closed
	w.mu.Unlock()
	if !idle || !e.mounted {
		return
	}
	w.unmountLocked(ctx, e)
	klog.InfoS("Unmounted idle export", "server", e.x.Server, "share", e.x.Share)
}

func (w *Workspace) unmount(ctx context.Context, e *export) {
	if err := e.mu.lock(ctx); err != nil {
		klog.ErrorS(err, "Export busy; leaving it mounted", "server", e.x.Server, "share", e.x.Share)
		return
	}
	defer e.mu.unlock()
	w.unmountLocked(ctx, e)
}

// unmountLocked unmounts e; the caller holds e.mu.
func (w *Workspace) unmountLocked(ctx context.Context, e *export) {
	if e.root != nil {
		_ = e.root.Close()
		e.root = nil
	}
	e.dropMeta(ctx)
	if e.mounted {
		metrics.ExportsMounted.Dec()
	}
	e.mounted = false
	if err := w.cfg.Mounter.Unmount(ctx, e.path); err != nil {
		klog.ErrorS(err, "Unmounting export", "server", e.x.Server, "share", e.x.Share)
	}
}

// ensureMounted mounts the export if needed. With staleGen >= 0 it remounts, unless another caller
// already did since generation staleGen.
func (w *Workspace) ensureMounted(ctx context.Context, e *export, staleGen int) error {
	if err := e.mu.lock(ctx); err != nil {
		return fmt.Errorf("waiting for export %s:%s (a mount is in progress): %w", e.x.Server, e.x.Share, err)
	}
	defer e.mu.unlock()
	if staleGen >= 0 && e.gen != staleGen {
		return nil
	}
	if e.mounted && staleGen < 0 {
		return nil
	}
	log := klog.FromContext(ctx).WithValues("server", e.x.Server, "share", e.x.Share)
	reason := "first"
	if staleGen >= 0 {
		reason = "stale"
		log.Info("Export handle is stale, remounting")
		if e.root != nil {
			_ = e.root.Close()
			e.root = nil
		}
		e.dropMeta(ctx)
		if err := w.cfg.Mounter.Unmount(ctx, e.path); err != nil {
			return fmt.Errorf("unmounting stale export %s:%s: %w", e.x.Server, e.x.Share, err)
		}
		if e.mounted {
			metrics.ExportsMounted.Dec()
		}
		e.mounted = false
	}
	if err := os.MkdirAll(e.path, 0o700); err != nil {
		return err
	}
	source := mount.Source(e.x.Server, e.x.Share)
	cur, err := w.cfg.Mounter.MountedAt(e.path)
	if err != nil {
		return err
	}
	if cur != nil && cur.Source != source {
		// Left by an earlier run with a different export hashed to the same place: never reuse it.
		if err := w.cfg.Mounter.Unmount(ctx, e.path); err != nil {
			return err
		}
		cur = nil
	}
	if cur == nil {
		if err := w.cfg.Mounter.Mount(ctx, source, e.path, e.x.options()); err != nil {
			return fmt.Errorf("mounting export %s: %w", source, err)
		}
		metrics.ExportMounts.WithLabelValues(reason).Inc()
	}
	root, err := bounded(ctx, w, e.x.Server, w.cfg.FSTimeout, "open export "+source, func() (*os.Root, error) {
		return os.OpenRoot(e.path)
	}, func(r *os.Root) { _ = r.Close() })
	if err != nil {
		return fmt.Errorf("opening export %s: %w", source, err)
	}
	e.root = root
	e.mounted = true
	e.gen++
	metrics.ExportsMounted.Inc()
	return nil
}

func (w *Workspace) knownGeneration() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.knownGen
}

// AddExports makes exports known before any call uses them: the reaper sweeps them (a new one at
// once), ListVolumes reads them, calls that carry no options of their own mount them with these
// options, and an export that lies inside another one of the same server gets its root marked in the
// outer one's claims, so no volume of the outer export can ever be that root, above it or below it.
// The controller passes the exports it learns from the cluster (StorageClasses and PVs).
func (w *Workspace) AddExports(xs ...Export) {
	for _, x := range xs {
		if x.Options == "" {
			x.Options = defaultOptions
		}
		w.remember(x)
	}
}

// remember records x as known, with its options as the latest way to mount its place. A new place
// gets a sweep at once (Run), so trash and archives an earlier run left behind are handled as soon as
// the export is known, whether from the cluster or from a call. Only AddExports and calls that found
// or made the export's metadata area call it, so a forged volume ID names no export the reaper will
// sweep.
func (w *Workspace) remember(x Export) {
	w.mu.Lock()
	_, had := w.known[x.place()]
	w.known[x.place()] = x
	if !had {
		w.knownGen++
	}
	w.mu.Unlock()
	if !had {
		select {
		case w.sweep <- struct{}{}:
		default: // a sweep of every known export is already due
		}
	}
}

// Close stops the reaper and unmounts every export.
func (w *Workspace) Close(ctx context.Context) {
	w.mu.Lock()
	w.closed = true
	list := make([]*export, 0, len(w.exports))
	for _, e := range w.exports {
		if e.timer != nil {
			e.timer.Stop()
		}
		list = append(list, e)
	}
	w.exports = map[string]*export{}
	w.mu.Unlock()
	for _, e := range list {
		w.unmount(ctx, e)
	}
}

// MountedExports reports how many exports are mounted now (metrics and tests).
func (w *Workspace) MountedExports() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.exports {
		if e.mu.tryLock() {
			if e.mounted {
				n++
			}
			e.mu.unlock()
		}
	}
	return n
}

// ctxMutex is a mutex whose waiters give up when their context ends: a mount hung on a dead server
// must not hold every other caller past its own deadline.
type ctxMutex chan struct{}

func (m ctxMutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m ctxMutex) tryLock() bool {
	select {
	case m <- struct{}{}:
		return true
	default:
		return false
	}
}

func (m ctxMutex) unlock() { <-m }
