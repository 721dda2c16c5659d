package share

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// Errors the driver maps to gRPC codes.
var (
	// ErrConflict: the directory is claimed by a different volume.
	ErrConflict = errors.New("directory belongs to another volume")
	// ErrExists: the directory exists but Paddock did not create it for this volume.
	ErrExists = errors.New("directory already exists and was not created by Paddock for this volume")
	// ErrNotFound: the volume directory does not exist.
	ErrNotFound = errors.New("volume directory not found")
	// ErrNotDir: something other than a real directory sits where the volume should be.
	ErrNotDir = errors.New("not a directory")
	// ErrIncompatible: the volume (or snapshot) exists with different arguments (CSI ALREADY_EXISTS).
	ErrIncompatible = errors.New("exists with different arguments")
	// ErrSourceNotFound: a content source (snapshot or volume) does not exist.
	ErrSourceNotFound = errors.New("content source not found")
	// ErrUnsupported: a request Paddock cannot honour by design (CSI INVALID_ARGUMENT).
	ErrUnsupported = errors.New("not supported")
	// ErrInUse: the volume is still controller-published (CSI FAILED_PRECONDITION).
	ErrInUse = errors.New("volume in use")
	// ErrRootSquashed: the export squashes root, so the class's uid/gid cannot be applied (CSI
	// FAILED_PRECONDITION: the export or the class must change, a retry alone will not help).
	ErrRootSquashed = errors.New("the export squashes root")
)

const (
	claimsDir  = volume.MetaDir + "/claims"
	trashDir   = volume.MetaDir + "/trash"
	archiveDir = volume.MetaDir + "/archive"
	snapsDir   = volume.MetaDir + "/snapshots"
	namesDir   = volume.MetaDir + "/names"
)

// CreateOptions shape a new volume directory.
type CreateOptions struct {
	Mode     os.FileMode
	UID, GID int   // -1 leaves it as created
	Reuse    bool  // adopt an existing directory that no volume claims
	Capacity int64 // recorded in the claim: NFS has no quota, but CSI idempotency compares sizes
	// Source, when set, fills the new volume with a copy of a snapshot or another volume.
	Source *Source
	// Enforce, when set, runs under the volume's lock once the volume is complete, on every call (a
	// repeat or a retry too), with the volume's recorded capacity: the class's capacity limit (package quota). Its failure fails the Create,
	// so a volume of an enforcing class is never returned without its limit.
	Enforce func(ctx context.Context, capacity int64) error
}

func (o CreateOptions) sourceString() string {
	if o.Source == nil {
		return ""
	}
	return o.Source.String()
}

// ensureMeta creates the metadata area, refusing one that is a symlink (it would redirect trash).
func ensureMeta(r *os.Root) error {
	for _, d := range []string{volume.MetaDir, claimsDir, trashDir, archiveDir, snapsDir, namesDir} {
		fi, err := r.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) {
			if err := r.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s on the export is not a directory: %w", d, ErrNotDir)
		}
	}
	return nil
}

// Create makes the volume's directory with the given ownership and returns the capacity recorded
// when the volume was first created. It is idempotent: a retry after a crash at any step, a repeated
// call, or the same call from a second controller at the same time, ends in the same state. The same
// name with other arguments is ErrIncompatible. A directory that exists without this volume's claim
// is refused (ErrExists) unless o.Reuse is set; a directory that is another volume, lies inside one,
// holds one, or is an export root, always is (ErrConflict).
//
// With o.Source the volume is filled with a copy of a snapshot or another volume on the same export
// before its claim turns ready, so a crash during the copy is redone from scratch on retry; the copy is
// O(size) and runs with a longer deadline than other steps.
func (w *Workspace) Create(ctx context.Context, v volume.Volume, o CreateOptions) (int64, error) {
	keys := []string{volumeKey(v)}
	timeout := w.cfg.FSTimeout
	if o.Source != nil {
		if err := o.Source.check(v); err != nil {
			return 0, err
		}
		keys = append(keys, o.Source.lockKey())
		timeout = w.copyTimeout()
	}
	var capacity int64
	err := w.run(ctx, op{keys: keys, x: exportOf(v), timeout: timeout, what: "create " + v.SubDir}, func(c *call) error {
		cr := &creation{c: c, v: v, o: o, capacity: o.Capacity,
			simple: o.Source == nil && o.UID < 0 && o.GID < 0 && mkdirIsExact(o.Mode)}
		err := cr.run()
		capacity = cr.capacity
		if err == nil && o.Enforce != nil {
			err = o.Enforce(c.ctx, capacity)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return capacity, nil
}

// creation is one Create call's state machine:
//
//	new directory:      name entry -> pins -> claim ("ready" for a plain volume, else "pending")
//	                    -> mkdir [-> chown, chmod, copy -> claim "ready"]
//	existing directory: its claim says whose it is: this volume's (a repeat or a retry: resume
//	                    where it stopped), another's (refused), or none (adopt, if allowed)
//
// A plain volume (no owner to set, no special bits the umask or mkdir could drop, no content to copy)
// is complete the moment its directory exists, so its claim is written once, already "ready", before
// the mkdir: a crash in between leaves a ready claim without a directory, which a retry completes
// with the same mkdir.
type creation struct {
	c        *call
	m        *metaFDs
	v        volume.Volume
	o        CreateOptions
	simple   bool
	capacity int64
	// parentsExist: fresh saw every parent as a real directory, so build skips MkdirAll (if one was
	// removed meanwhile, the mkdir fails ENOENT and build makes the parents then).
	parentsExist bool
}

func (cr *creation) run() error {
	m, err := cr.c.meta()
	if err != nil {
		return err
	}
	cr.m = m
	r, v := cr.c.r, cr.v
	fi, err := r.Lstat(v.SubDir)
	switch {
	case err == nil: // an existing directory: ours (a repeated call), or not
		cl, err := m.readClaim(v.SubDir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return cr.adopt(fi)
		case errors.Is(err, errBelow):
			return fmt.Errorf("%w: %q holds other volumes (%s)", ErrConflict, v.SubDir, m.someBelow(v.SubDir))
		case err != nil:
			return err
		}
		return cr.resume(cl, fi)
	case errors.Is(err, fs.ErrNotExist):
		return cr.fresh()
	default:
		if perr := checkParents(r, v.SubDir); perr != nil {
			return perr // says which parent is wrong, better than the walk's error
		}
		return err
	}
}

// testHookParentsSeen, when set by a test, runs in fresh right after the parents were looked at.
var testHookParentsSeen func(volume.Volume)

// fresh creates a volume whose directory does not exist yet.
func (cr *creation) fresh() error {
	r, v, o := cr.c.r, cr.v, cr.o
	exist, err := parentsExist(r, v.SubDir)
	if err != nil {
		return err
	}
	cr.parentsExist = exist
	if testHookParentsSeen != nil {
		testHookParentsSeen(v)
	}
	if o.Source != nil {
		// Before anything is written: an unknown source must leave no trace.
		if err := o.Source.resolve(r); err != nil {
			return err
		}
	}
	cl := claimOf(v, o)
	if cr.simple {
		cl.State = stateReady
	}
	isFresh, existing, err := cr.reserve(cl)
	if err != nil {
		return err
	}
	if !isFresh {
		// Another call (perhaps another controller) claimed it first and may have made the directory
		// since our Lstat: look again, or resume would think a ready volume's directory vanished.
		fi, err := r.Lstat(v.SubDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return cr.resume(existing, fi)
	}
	return cr.build(cl, true)
}

// reserve takes the volume's name entry and its place in the tree (claim.go) for cl. When the claim
// was there already it returns it (fresh false) for resume to judge.
func (cr *creation) reserve(cl claim) (fresh bool, existing claim, err error) {
	v := cr.v
	other, nameFresh, err := cr.m.claimVolumeName(v.Name, v.SubDir)
	if errors.Is(err, fs.ErrNotExist) { // the names directory we hold was removed or replaced
		if cr.m, err = cr.c.metaRefresh(); err != nil {
			return false, claim{}, err
		}
		other, nameFresh, err = cr.m.claimVolumeName(v.Name, v.SubDir)
	}
	if err != nil {
		return false, claim{}, err
	}
	if other != "" {
		c, err := cr.m.readClaim(other)
		if err == nil && c.Name == v.Name || err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errBelow) {
			return false, claim{}, fmt.Errorf("volume %s %w: it was created at %q, not %q", v.Name, ErrIncompatible, other, v.SubDir)
		}
		// A stale entry (a create that stopped before its claim): this call's subDir replaces it.
		if err := cr.m.replaceVolumeName(v.Name, v.SubDir); err != nil {
			return false, claim{}, err
		}
		nameFresh = true
	}
	fresh, existing, err = cr.m.reserve(cl)
	if errors.Is(err, fs.ErrNotExist) { // the claims directory we hold was removed or replaced
		if cr.m, err = cr.c.metaRefresh(); err == nil {
			fresh, existing, err = cr.m.reserve(cl)
		}
	}
	if err == nil && !fresh && (existing.isMarker() || existing.Name != v.Name) {
		err = fmt.Errorf("%w: %q is %s", ErrConflict, v.SubDir, existing.owner())
	}
	if err != nil && nameFresh {
		cr.m.releaseVolumeName(v.Name, v.SubDir)
	}
	return fresh, existing, err
}

// resume continues from a claim that exists already: a repeated call, a retry after a crash, or a
// second controller that got there first.
func (cr *creation) resume(cl claim, fi fs.FileInfo) error {
	v, o := cr.v, cr.o
	if cl.isMarker() || cl.Name != v.Name {
		return fmt.Errorf("%w: %q is used by %s", ErrConflict, v.SubDir, cl.owner())
	}
	if d := cl.differs(v, o); d != "" {
		return fmt.Errorf("volume %s %w: %s", v.Name, ErrIncompatible, d)
	}
	cr.capacity = cl.Capacity
	switch {
	case cl.State == stateReady && fi != nil:
		if !fi.IsDir() {
			return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
		}
		if !cl.HasID || !cl.HasParams { // written by an older release: record what ListVolumes and repeats need
			cl.setID(v)
			cl.setParams(o)
			return cr.m.writeClaim(cl)
		}
		return nil
	case cl.State == stateReady && (cl.Adopted || !cr.simple):
		return fmt.Errorf("volume directory %q vanished: %w", v.SubDir, fs.ErrNotExist)
	case cl.State == stateReady:
		// A plain volume whose claim was written but whose mkdir never happened: finish it.
	default: // pending: an earlier attempt stopped half way; finish it
		if !cl.HasID || !cl.HasParams {
			cl.setID(v)
			cl.setParams(o)
		}
		if o.Source != nil {
			if err := o.Source.resolve(cr.c.r); err != nil {
				return err
			}
		}
	}
	if cl.Adopted {
		cl.State = stateReady
		return cr.m.writeClaim(cl)
	}
	return cr.build(cl, false)
}

// build makes the directory of a claimed volume and completes it. fresh says this call wrote the
// claim; only then may a definitive failure before the mkdir take the claim back.
func (cr *creation) build(cl claim, fresh bool) error {
	r, m, v, o := cr.c.r, cr.m, cr.v, cr.o
	parent := path.Dir(v.SubDir)
	makeParents := func() error {
		if parent == "." {
			return nil
		}
		err := r.MkdirAll(parent, 0o755)
		if err != nil && fresh && !isTransient(err) {
			cr.unreserve(cl)
		}
		return err
	}
	if !cr.parentsExist {
		if err := makeParents(); err != nil {
			return err
		}
	}
	err := r.Mkdir(v.SubDir, o.Mode.Perm())
	if errors.Is(err, fs.ErrNotExist) && cr.parentsExist {
		// A parent fresh saw has gone since: a volume there was deleted before this call pinned it.
		// The pins keep volumes out of the parents now, so make them, as if they had been missing.
		cr.parentsExist = false
		if err := makeParents(); err != nil {
			return err
		}
		err = r.Mkdir(v.SubDir, o.Mode.Perm())
	}
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		// Made by an earlier attempt, by a second controller working on the same claim, or by our
		// own MKDIR retransmitted after a lost reply: EEXIST proves nothing about whose it is, and
		// the claim, written before any mkdir, says it is this volume's. Never take the claim back.
	default:
		if fresh && !isTransient(err) {
			cr.unreserve(cl)
		}
		return err
	}
	if cl.State == stateReady && err == nil {
		return nil // the common case: the claim was ready before the mkdir and mkdir set the exact mode
	}
	fi, err := r.Lstat(v.SubDir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
	}
	if o.UID >= 0 || o.GID >= 0 {
		if err := lchown(r, v.SubDir, o.UID, o.GID); err != nil {
			if errors.Is(err, syscall.EPERM) {
				return cr.undoCreate(cl, fmt.Errorf("%w: cannot give volume directory %q to uid %d, gid %d (the StorageClass's uid/gid parameters; -1 is unset): "+
					"the NFS server refused chown (%v), which is what an export with root_squash does. Export it with no_root_squash, or drop uid and gid from the class",
					ErrRootSquashed, v.SubDir, o.UID, o.GID, err))
			}
			return err
		}
	}
	// Mkdir is subject to the umask and cannot set special bits (and a setgid parent passes its bit
	// on): set the mode explicitly when it is not already exact. After chown, which may clear
	// setuid/setgid.
	if modeBits(fi.Mode()) != modeBits(o.Mode) || (o.UID >= 0 || o.GID >= 0) && o.Mode&specialBits != 0 {
		if err := r.Chmod(v.SubDir, o.Mode); err != nil {
			return err
		}
	}
	if o.Source != nil {
		// One filler at a time, across controllers: the same Create on two controllers (a lost
		// reply) would otherwise have the second bin the first one's finished copy. Under the mark the
		// claim is read again: ready means another call finished the fill.
		w := cr.c.w
		unmark, err := m.markPath(v.SubDir, "fill "+v.Name, w.cfg.Now(), 2*w.copyTimeout())
		if err != nil {
			return err
		}
		defer unmark()
		now, err := m.readClaim(v.SubDir)
		switch {
		case err != nil:
			return err
		case !sameClaim(cl, now):
			return fmt.Errorf("%w: %q changed owner while being filled (deleted by another controller?)", ErrConflict, v.SubDir)
		case now.State == stateReady:
			return nil
		}
		// A retry after a crash mid-copy finds part of the copy: nobody has used this volume yet (its
		// claim never turned ready), so the part goes to the trash and the copy starts again.
		moved, err := cr.c.w.binEntries(cr.c.ctx, r, v.SubDir, "refill-"+v.Name)
		if moved {
			cr.c.w.Kick(exportOf(v))
		}
		if err != nil {
			return err
		}
		if _, err := copyTree(cr.c.ctx, r, o.Source.dataDir(), v.SubDir, false); err != nil {
			return fmt.Errorf("copying %s into volume %s: %w", o.Source, v.Name, err)
		}
		if err := cr.c.ctx.Err(); err != nil {
			return err // abandoned at the deadline: a retry owns the volume now
		}
	}
	if cl.State == stateReady {
		return nil
	}
	cl.State = stateReady
	return m.writeClaim(cl)
}

// unreserve takes back what fresh wrote (pins, claim, name entry) when the create failed before
// making anything, so the failure leaves no trace.
func (cr *creation) unreserve(cl claim) {
	if err := cr.m.unpin(cl); err != nil {
		klog.ErrorS(err, "Removing the pins of a failed create", "subDir", cl.SubDir)
	}
	if err := cr.m.removeClaim(cl.SubDir); err != nil {
		klog.ErrorS(err, "Removing the claim of a failed create", "subDir", cl.SubDir)
	}
	cr.m.releaseVolumeName(cl.Name, cl.SubDir)
}

// undoCreate removes the still empty directory of a create that cannot complete, then its claim, so
// that a retry, or another class for the same directory, starts afresh. A directory that is not
// empty is left with its claim, and err says so.
func (cr *creation) undoCreate(cl claim, err error) error {
	if rerr := cr.c.r.Remove(cr.v.SubDir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("%w (and the new directory could not be removed: %v)", err, rerr)
	}
	cr.unreserve(cl)
	return err
}

// adopt takes over an existing directory that no volume claims, if the class allows it.
func (cr *creation) adopt(fi fs.FileInfo) error {
	r, v, o := cr.c.r, cr.v, cr.o
	switch {
	case !o.Reuse || !fi.IsDir():
		return fmt.Errorf("%w: %q (set reuseExisting=true on the class to adopt it)", ErrExists, v.SubDir)
	case o.Source != nil:
		return fmt.Errorf("%w: %q exists; an adopted directory cannot be filled from a content source", ErrExists, v.SubDir)
	}
	if err := checkParents(r, v.SubDir); err != nil {
		return err
	}
	if err := checkNotExportRoot(r, v.SubDir); err != nil {
		return err
	}
	if err := checkNoLegacyBelow(cr.m, v.SubDir); err != nil {
		return fmt.Errorf("%w; it cannot be adopted", err)
	}
	cl := claimOf(v, o)
	cl.Adopted, cl.State = true, stateReady
	fresh, existing, err := cr.reserve(cl)
	if err != nil {
		return err
	}
	if !fresh {
		return cr.resume(existing, fi)
	}
	// The directory was looked at before the claim and pins were taken: until then a Delete of a
	// volume around it (on another controller) could move it away. Now nothing can; check that it is
	// still the directory that was seen, or take the claim back.
	return cr.stillThere(cl, fi)
}

// stillThere checks, after the claim and pins of an existing directory were taken, that the
// directory is still the one seen before; if not, what was reserved is taken back.
func (cr *creation) stillThere(cl claim, seen fs.FileInfo) error {
	now, err := cr.c.r.Lstat(cr.v.SubDir)
	if err == nil && os.SameFile(seen, now) {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !isTransient(err) {
		return err
	}
	if isTransient(err) {
		return err // the claim stays; a retry checks again
	}
	cr.unreserve(cl)
	return fmt.Errorf("%w: %q was moved or replaced while it was being claimed (a volume around it was deleted?); retry", ErrConflict, cr.v.SubDir)
}

// isTransient tells errors after which the same call may succeed (a deadline, a dead server) from
// definitive ones; only a definitive failure may undo what a fresh create reserved, because a second
// controller may be completing the same volume.
func isTransient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.ESTALE) ||
		errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN)
}

// binEntries moves every entry of dir into a fresh bin in the trash (O(entries), never opening them)
// and reports whether it moved anything.
func (w *Workspace) binEntries(ctx context.Context, r *os.Root, dir, label string) (bool, error) {
	entries, err := fs.ReadDir(r.FS(), dir)
	if err != nil || len(entries) == 0 {
		return false, err
	}
	return w.binNames(ctx, r, dir, label, entries)
}

// binNames moves the entries of dir into a fresh bin in the trash. It checks ctx before each one: an
// operation abandoned at its deadline stops moving a volume's files.
func (w *Workspace) binNames(ctx context.Context, r *os.Root, dir, label string, entries []fs.DirEntry) (bool, error) {
	if len(label) > 64 { // the bin's name must stay within the 255-byte file name limit
		label = label[:64]
	}
	bin := trashDir + "/" + trashName(w.cfg.Now().UTC(), label)
	if err := r.Mkdir(bin, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		if err := r.Rename(dir+"/"+e.Name(), bin+"/"+e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("moving %q out of %q: %w", e.Name(), dir, err)
		}
	}
	return true, nil
}

// SetCapacity records a new capacity for an existing volume (ControllerExpandVolume); the record
// keeps CreateVolume's idempotency checks true after an expansion. NFS enforces no size: enforce, when
// set, applies the new one (package quota) under the volume's lock, on every call, so a retry after it
// failed applies it again.
func (w *Workspace) SetCapacity(ctx context.Context, v volume.Volume, capacity int64, enforce func(ctx context.Context, capacity int64) error) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: w.cfg.FSTimeout, what: "expand " + v.SubDir}, func(c *call) error {
		cl, err := claimFor(c.r, v)
		if err != nil {
			return err
		}
		if cl.Capacity < capacity {
			m, err := c.meta()
			if err != nil {
				return err
			}
			cl.Capacity = capacity
			if err := m.writeClaim(cl); err != nil {
				return err
			}
		}
		if enforce != nil {
			return enforce(c.ctx, cl.Capacity)
		}
		return nil
	})
}

// Delete applies the volume's onDelete: delete moves the directory into the trash (one rename, O(1)
// whatever its size) for the reaper; archive renames it into the archive; retain leaves it. Then the
// volume's pins, claim and name entry go, in that order, so a crash at any point is finished by a
// retry. A volume whose claim is gone was deleted already, and a directory that is not this volume's
// (no claim, another volume's claim, another export's root) is not this volume: in both cases Delete
// succeeds and touches nothing, as CSI asks of a volume that no longer exists. A volume still
// controller-published is refused (ErrInUse).
func (w *Workspace) Delete(ctx context.Context, v volume.Volume) error {
	return w.DeleteWith(ctx, v, nil)
}

// DeleteWith is Delete with release run under the volume's lock once the directory is known to be this
// volume's and unpublished, just before it leaves its place for the trash or the archive (never for
// retain): the release of its capacity limit (package quota). A forged ID naming another volume's
// directory never reaches it; its failure fails the Delete, which a retry repeats.
func (w *Workspace) DeleteWith(ctx context.Context, v volume.Volume, release func(context.Context) error) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: w.cfg.FSTimeout, what: "delete " + v.SubDir}, func(c *call) error {
		r := c.r
		// Read before writing anything: a forged ID naming a directory Paddock never provisioned (an
		// export reached through a parent path, say) must leave no metadata area behind. So the claim
		// is read through descriptors only if they are already open (the area exists), else by path.
		m := c.metaCached()
		var (
			cl  claim
			err error
		)
		if m != nil {
			cl, err = m.readClaim(v.SubDir)
			if errors.Is(err, fs.ErrNotExist) {
				// Perhaps the claims directory we hold was replaced: check by path before concluding.
				if cl, err = readClaim(r, v.SubDir); err == nil {
					if m, err = c.metaRefresh(); err != nil {
						return err
					}
				}
			}
		} else {
			cl, err = readClaim(r, v.SubDir)
		}
		log := klog.FromContext(c.ctx)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil // already deleted, or never created
		case errors.Is(err, errBelow):
			log.Info("DeleteVolume: the directory holds other volumes and is not this volume; nothing to do", "subDir", v.SubDir, "name", v.Name)
			return nil
		case err != nil:
			return err
		case cl.isMarker() || cl.Name != v.Name:
			// The volume is gone and its directory now belongs to someone else (a delete whose reply
			// was lost, then a new claim of the same template path): touching nothing is the answer.
			log.Info("DeleteVolume: the directory belongs to another volume now; nothing to do", "subDir", v.SubDir, "name", v.Name, "owner", cl.owner())
			return nil
		}
		if m == nil {
			// A claim proves this is Paddock's area; the trash or archive may still be missing (older
			// layout), which meta creates.
			if m, err = c.meta(); err != nil {
				return err
			}
		}
		unmark, err := m.markPath(v.SubDir, "delete "+v.Name, c.w.cfg.Now(), c.w.markStale())
		if err != nil {
			return err
		}
		defer unmark()
		if now, err := m.readClaim(v.SubDir); err != nil || !sameClaim(cl, now) {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errBelow) || err == nil {
				return nil // deleted by another controller meanwhile (and perhaps claimed again)
			}
			return err
		}
		if pubs, err := readPublications(r, v); err != nil {
			return err
		} else if len(pubs) > 0 {
			nodes := make([]string, len(pubs))
			for i, p := range pubs {
				nodes[i] = p.Node
			}
			return fmt.Errorf("%w: volume %s is still published to node(s) %s; ControllerUnpublishVolume it first", ErrInUse, v.Name, strings.Join(nodes, ", "))
		}
		if cl.Token == "" && v.OnDelete != volume.OnDeleteRetain {
			// Claims written before pins: their directory could hold another export's root.
			if err := checkNotExportRoot(r, v.SubDir); err != nil {
				return err
			}
		}
		now := c.w.cfg.Now().UTC()
		var dstFD int
		var dst string
		switch v.OnDelete {
		case volume.OnDeleteDelete:
			dstFD, dst = m.trashFD(), trashName(now, v.Name)
		case volume.OnDeleteArchive:
			dstFD, dst = m.archiveFD(), archiveName(v.SubDir, now, v.ArchiveRetention)
		}
		if dst != "" && release != nil {
			if err := release(c.ctx); err != nil {
				return err
			}
		}
		if dst != "" {
			err := renameInto(r, m, v.SubDir, dstFD, dst)
			if errors.Is(err, fs.ErrNotExist) {
				if _, serr := r.Lstat(v.SubDir); serr == nil {
					// The volume is there, so the trash or archive we hold is not: open them again.
					if m, err = c.metaRefresh(); err != nil {
						return err
					}
					if v.OnDelete == volume.OnDeleteDelete {
						dstFD = m.trashFD()
					} else {
						dstFD = m.archiveFD()
					}
					err = renameInto(r, m, v.SubDir, dstFD, dst)
				}
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			} else if err == nil && v.OnDelete == volume.OnDeleteDelete {
				c.w.Kick(exportOf(v))
			}
		}
		// The directory has left its place: the pins go, then the claim (a crash before this line
		// leaves a claim whose directory is gone, which the retry treats as done), then the name.
		if err := m.unpin(cl); err != nil {
			return err
		}
		if err := m.removeClaim(v.SubDir); err != nil {
			return err
		}
		m.forgetVolumeName(v.Name)
		return nil
	})
}

// renameInto renames the volume directory subDir to name in the directory open as dstFD (the trash
// or the archive). renameat never follows the last component, so a symlink put in the volume's place
// is moved, not its target. A volume at the top of the export is one renameat on held descriptors;
// a nested one first opens its parent through the export root (which keeps it inside the export).
func renameInto(r *os.Root, m *metaFDs, subDir string, dstFD int, name string) error {
	pfd := m.rootFD()
	if parent := path.Dir(subDir); parent != "." {
		d, err := r.Open(parent)
		if err != nil {
			return err
		}
		defer d.Close()
		fi, err := d.Stat()
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return &fs.PathError{Op: "rename", Path: subDir, Err: syscall.ENOTDIR}
		}
		pfd = int(d.Fd())
	}
	if err := unix.Renameat(pfd, path.Base(subDir), dstFD, name); err != nil {
		return &fs.PathError{Op: "rename", Path: subDir, Err: err}
	}
	return nil
}

// Scrub empties the volume directory but keeps it, its mode and owner (the Recycle primitive). The
// entries are moved into the trash in one batch and reaped in the background, so the volume is clean
// at once whatever its size. Symlinks are moved, never followed. A directory claimed by another
// volume, holding other volumes, or holding another export's root is refused. A directory with no
// claim (a static volume an admin made by hand) is claimed for v first, with its pins, so no volume
// can be created inside it while, or after, it is scrubbed; a static volume's name is its directory's
// (volume.StaticName), and a claim 0.1.0 made for it under another name is still its (legacyStatic).
// The loop stops at the deadline, and the volume stays locked until it has.
func (w *Workspace) Scrub(ctx context.Context, v volume.Volume) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: 10 * w.cfg.FSTimeout, what: "scrub " + v.SubDir}, func(c *call) error {
		r := c.r
		if err := checkParents(r, v.SubDir); err != nil {
			return err
		}
		m, err := c.meta()
		if err != nil {
			return err
		}
		fi, err := realDir(r, v.SubDir)
		if err != nil {
			return err
		}
		if err := checkNotExportRoot(r, v.SubDir); err != nil {
			return err
		}
		cl, err := m.readClaim(v.SubDir)
		switch {
		case errors.Is(err, errBelow):
			return fmt.Errorf("%w: %q holds other volumes (%s); refusing to scrub it", ErrConflict, v.SubDir, m.someBelow(v.SubDir))
		case errors.Is(err, fs.ErrNotExist):
			if err := checkNoLegacyBelow(m, v.SubDir); err != nil {
				return fmt.Errorf("%w; refusing to scrub it", err)
			}
			cl = claim{Name: v.Name, SubDir: v.SubDir, State: stateReady, Adopted: true, Token: newToken()}
			cl.setID(v)
			cr := &creation{c: c, m: m, v: v}
			fresh, existing, err := cr.reserve(cl)
			if err != nil {
				return fmt.Errorf("%w; refusing to scrub it", err)
			}
			if !fresh {
				cl = existing
			} else if err := cr.stillThere(cl, fi); err != nil {
				return err
			}
		case err != nil:
			return err
		case cl.Token == "":
			if err := checkNoLegacyBelow(m, v.SubDir); err != nil {
				return fmt.Errorf("%w; refusing to scrub it", err)
			}
		}
		if cl.isMarker() || cl.Name != v.Name && !legacyStatic(cl, v) {
			return fmt.Errorf("%w: %q is %s, not volume %s; refusing to scrub it", ErrConflict, v.SubDir, cl.owner(), v.Name)
		}
		unmark, err := m.markPath(v.SubDir, "scrub "+v.Name, c.w.cfg.Now(), c.w.markStale())
		if err != nil {
			return err
		}
		defer unmark()
		if now, err := m.readClaim(v.SubDir); err != nil || !sameClaim(cl, now) {
			if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, errBelow) {
				return fmt.Errorf("%w: %q changed owner while being scrubbed (deleted by another controller?); refusing", ErrConflict, v.SubDir)
			}
			return err
		}
		// The bin is in the trash, so a reaper sweep may remove it while it is being filled; the renames
		// after that fail with ENOENT like those of entries that vanished. So the volume is listed again
		// until it is empty, with a fresh bin for each pass, and only an empty volume is success.
		label := path.Base(v.SubDir)
		for pass := 0; ; pass++ {
			entries, err := fs.ReadDir(r.FS(), v.SubDir)
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				return nil
			}
			if pass == 3 {
				return fmt.Errorf("%q still holds %d entries after scrubbing (is it being written to?); retry", v.SubDir, len(entries))
			}
			moved, err := c.w.binNames(c.ctx, r, v.SubDir, "scrub-"+label, entries)
			if moved {
				c.w.Kick(exportOf(v))
			}
			if err != nil {
				return err
			}
		}
	})
}

// legacyStatic tells a claim that release 0.1.0 wrote when it recycled the static volume v, which it
// named volume.LegacyStaticName (as it named every static volume). The claim lies at v's subDir, so it is
// v's; it is honoured as it is, not renamed: renaming buys nothing, and a rollback to 0.1.0 could not
// recycle the PV any more. Its entry in the name index ("static") stays too: no Create can take that
// name (Params.Volume refuses it), and no static volume asks for it any more.
func legacyStatic(cl claim, v volume.Volume) bool {
	return cl.Name == volume.LegacyStaticName && v.Name == volume.StaticName(v.SubDir)
}

// markStale is the age after which a Delete's or Scrub's cross-controller mark is taken to be a
// crashed holder's: far beyond any deadline a live holder runs under.
func (w *Workspace) markStale() time.Duration {
	if d := 20 * w.cfg.FSTimeout; d > 10*time.Minute {
		return d
	}
	return 10 * time.Minute
}

// Stat reports whether the volume directory exists, is a real directory and is v's.
func (w *Workspace) Stat(ctx context.Context, v volume.Volume) error {
	return w.read(ctx, exportOf(v), "stat "+v.SubDir, func(r *os.Root) error {
		if _, err := realDir(r, v.SubDir); err != nil {
			return err
		}
		// A directory that exists but is not this volume's (a forged or stale ID) is not this volume.
		_, err := claimFor(r, v)
		return err
	})
}

// trashName sorts by time and carries it, so the reaper can honour the grace period after a restart.
func trashName(now time.Time, name string) string {
	return fmt.Sprintf("%d-%s-%s", now.UnixNano(), name, randSuffix())
}

var (
	suffixMu sync.Mutex
	suffixN  uint64
)

func randSuffix() string {
	suffixMu.Lock()
	defer suffixMu.Unlock()
	suffixN++
	return strconv.FormatInt(int64(os.Getpid()), 36) + strconv.FormatUint(suffixN, 36)
}

func trashTime(name string) (time.Time, bool) {
	ns, _, ok := strings.Cut(name, "-")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

const archiveStamp = "20060102T150405Z"

// archiveName is "<subDir with / as %2F>@<UTC time>[@until-<unix>]": readable, unique per delete, and
// carrying its own expiry so the reaper needs no configuration to honour retention.
func archiveName(subDir string, now time.Time, retention time.Duration) string {
	esc := strings.NewReplacer("%", "%25", "/", "%2F", "@", "%40").Replace(subDir)
	if len(esc) > 180 {
		sum := sha256.Sum256([]byte(subDir))
		esc = esc[:160] + "~" + hex.EncodeToString(sum[:8])
	}
	n := esc + "@" + now.Format(archiveStamp) + "." + randSuffix()
	if retention > 0 {
		n += "@until-" + strconv.FormatInt(now.Add(retention).Unix(), 10)
	}
	return n
}

func archiveExpiry(name string) (time.Time, bool) {
	i := strings.LastIndex(name, "@until-")
	if i < 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(name[i+len("@until-"):], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
