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
	// ErrRootSquashed: the export squashes root, so the class's uid/gid cannot be applied (CSI
	// FAILED_PRECONDITION: the export or the class must change, a retry alone will not help).
	ErrRootSquashed = errors.New("the export squashes root")
)

const (
	claimsDir  = volume.MetaDir + "/claims"
	trashDir   = volume.MetaDir + "/trash"
	archiveDir = volume.MetaDir + "/archive"
	snapsDir   = volume.MetaDir + "/snapshots"
)

// CreateOptions shape a new volume directory.
type CreateOptions struct {
	Mode     os.FileMode
	UID, GID int   // -1 leaves it as created
	Reuse    bool  // adopt an existing directory that no volume claims
	Capacity int64 // recorded in the claim: NFS has no quota, but CSI idempotency compares sizes
	// Source, when set, fills the new volume with a copy of a snapshot or another volume.
	Source *Source
}

// claim records which volume owns a directory. It lives in the metadata area, not in the volume, so
// users cannot forge or delete it, and it is written before the directory exists so a crash at any
// point is recognised on retry.
type claim struct {
	Name     string
	SubDir   string
	State    string // "pending" until mode and owner are applied, then "ready"
	Adopted  bool   // an existing directory taken over with reuseExisting
	Capacity int64
	// What the volume ID holds beyond the export, so ListVolumes can rebuild it exactly. Claims
	// written before ListVolumes lack these lines (HasID false); Create adds them on its next call.
	HasID     bool
	OnDelete  volume.OnDelete
	Retention time.Duration
	NFSVers   string
	Source    string // "snapshot:<id>" or "volume:<id>" when made from a content source
}

// claimOf is the claim a new volume gets.
func claimOf(v volume.Volume, o CreateOptions) claim {
	c := claim{Name: v.Name, SubDir: v.SubDir, State: "pending", Capacity: o.Capacity}
	c.setID(v)
	if o.Source != nil {
		c.Source = o.Source.String()
	}
	return c
}

func (c *claim) setID(v volume.Volume) {
	c.HasID, c.OnDelete, c.Retention, c.NFSVers = true, v.OnDelete, v.ArchiveRetention, v.NFSVers
}

func claimPath(subDir string) string {
	sum := sha256.Sum256([]byte(subDir))
	return claimsDir + "/" + hex.EncodeToString(sum[:])
}

func (c claim) encode() []byte {
	s := fmt.Sprintf("paddock-claim v1\nname=%s\nsubdir=%s\nstate=%s\nadopted=%t\ncapacity=%d\n",
		c.Name, c.SubDir, c.State, c.Adopted, c.Capacity)
	if c.HasID {
		// Values are volume names, IDs and flags: none holds a newline.
		s += fmt.Sprintf("ondelete=%s\nretention=%d\nnfsvers=%s\nsource=%s\n",
			c.OnDelete, int64(c.Retention/time.Second), c.NFSVers, c.Source)
	}
	return []byte(s)
}

// readClaim reads a claim through the export root (path-based; Create and Delete use metaFDs).
func readClaim(r *os.Root, subDir string) (claim, error) {
	var b []byte
	t, err := r.Readlink(claimPath(subDir))
	switch {
	case err == nil:
		b = []byte(t)
	case errors.Is(err, syscall.EINVAL): // a regular file: written by an earlier release
		b, err = r.ReadFile(claimPath(subDir))
		if err != nil {
			return claim{}, err
		}
	default:
		return claim{}, err
	}
	return parseClaim(b, subDir)
}

func parseClaim(b []byte, subDir string) (claim, error) {
	var c claim
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "name":
			c.Name = v
		case "subdir":
			c.SubDir = v
		case "state":
			c.State = v
		case "adopted":
			c.Adopted = v == "true"
		case "capacity":
			c.Capacity, _ = strconv.ParseInt(v, 10, 64)
		case "ondelete":
			c.HasID, c.OnDelete = true, volume.OnDelete(v)
		case "retention":
			n, _ := strconv.ParseInt(v, 10, 64)
			c.Retention = time.Duration(n) * time.Second
		case "nfsvers":
			c.NFSVers = v
		case "source":
			c.Source = v
		}
	}
	if c.Name == "" || c.SubDir != subDir {
		return claim{}, fmt.Errorf("claim file %s is corrupt", claimPath(subDir))
	}
	return c, nil
}

// writeClaim replaces a claim atomically (a new symlink renamed over it), so a crash never leaves
// half a claim.
func writeClaim(r *os.Root, c claim) error {
	d, err := r.Open(claimsDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return writeClaimAt(int(d.Fd()), c)
}

// ensureMeta creates the metadata area, refusing one that is a symlink (it would redirect trash).
func ensureMeta(r *os.Root) error {
	for _, d := range []string{volume.MetaDir, claimsDir, trashDir, archiveDir, snapsDir} {
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

// checkAncestors refuses a directory whose parents are symlinks or other volumes: a user who owns
// volume "a" must not be able to steer volume "a/b" anywhere.
func checkAncestors(r *os.Root, subDir string) error {
	parts := strings.Split(subDir, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		if c, err := readClaim(r, p); err == nil {
			return fmt.Errorf("%w: %q would be inside volume %s", ErrConflict, subDir, c.Name)
		}
		fi, err := r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the rest will be created
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %q of %q: %w (symlinks are not followed)", p, subDir, ErrNotDir)
		}
	}
	return nil
}

// Create makes the volume's directory with the given ownership. It is idempotent: a retry after a
// crash at any step, or a repeated call, ends in the same state. A directory that exists without this
// volume's claim is refused (ErrExists) unless o.Reuse is set, and a directory claimed by another
// volume always is (ErrConflict). It returns the capacity recorded when the volume was first created.
//
// With o.Source the volume is filled with a copy of a snapshot or another volume on the same export
// before its claim turns ready, so a crash during the copy is redone from scratch on retry; the copy is
// O(size) and runs with a longer deadline than other steps.
func (w *Workspace) Create(ctx context.Context, v volume.Volume, o CreateOptions) (int64, error) {
	keys := []string{w.volumeKey(v)}
	timeout := w.cfg.FSTimeout
	if o.Source != nil {
		if err := o.Source.check(v); err != nil {
			return 0, err
		}
		keys = append(keys, o.Source.lockKey())
		timeout = w.copyTimeout()
	}
	unlock, err := w.lockKeys(ctx, keys...)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	capacity := o.Capacity
	filled := false
	err = w.withExportE(ctx, exportOf(v), timeout, "create "+v.SubDir, func(e *export, r *os.Root, gen int) error {
		var h metaHold
		defer h.release()
		m, err := w.metaOf(ctx, &h, e, r, gen)
		if err != nil {
			return err
		}
		want := ""
		if o.Source != nil {
			want = o.Source.String()
		}
		// A plain volume (no owner to set, no special bits the umask or mkdir could drop, no content to
		// copy) is complete the moment its directory exists, so its claim is written once, already
		// "ready", before the mkdir: a crash in between leaves a ready claim without a directory, which
		// a retry completes with the same mkdir. Anything else is claimed "pending" first and marked
		// ready after the owner, mode and content are in place.
		simple := o.Source == nil && o.UID < 0 && o.GID < 0 && mkdirIsExact(o.Mode)

		var c claim
		fresh := false // this call wrote the claim, and the directory did not exist before it
		fi, err := r.Lstat(v.SubDir)
		switch {
		case err == nil: // an existing directory: ours (a repeated call), or not
			c, err = m.readClaim(v.SubDir)
			if errors.Is(err, fs.ErrNotExist) {
				return w.adopt(r, m, v, o, fi, &capacity)
			}
			if err != nil {
				return err
			}
		case errors.Is(err, fs.ErrNotExist):
			if err := checkAncestors(r, v.SubDir); err != nil {
				return err
			}
			if o.Source != nil {
				// Before anything is written: an unknown source must leave no trace.
				if err := o.Source.resolve(r); err != nil {
					return err
				}
			}
			c = claimOf(v, o)
			if simple {
				c.State = stateReady
			}
			err = m.createClaim(c)
			if errors.Is(err, fs.ErrNotExist) { // the claims directory we hold was removed or replaced
				if m, err = w.metaRefresh(ctx, &h, e, r, gen); err != nil {
					return err
				}
				err = m.createClaim(c)
			}
			switch {
			case err == nil:
				fresh = true
			case errors.Is(err, fs.ErrExist): // an earlier attempt got this far
				if c, err = m.readClaim(v.SubDir); err != nil {
					return err
				}
			default:
				return err
			}
		default:
			if aerr := checkAncestors(r, v.SubDir); aerr != nil {
				return aerr // says which parent is wrong, better than the walk's error
			}
			return err
		}

		if !fresh {
			switch {
			case c.Name != v.Name:
				return fmt.Errorf("%w: %q is used by volume %s", ErrConflict, v.SubDir, c.Name)
			case c.HasID && c.Source != want:
				return fmt.Errorf("volume %s %w: content source %q, not %q", v.Name, ErrIncompatible, c.Source, want)
			case c.State == stateReady && fi != nil:
				capacity = c.Capacity
				if !fi.IsDir() {
					return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
				}
				if !c.HasID { // written by an older release: record what ListVolumes needs
					c.setID(v)
					c.Source = want
					return m.writeClaim(c)
				}
				return nil
			case c.State == stateReady && (c.Adopted || !simple):
				return fmt.Errorf("volume directory %q vanished: %w", v.SubDir, fs.ErrNotExist)
			case c.State == stateReady:
				// A plain volume whose claim was written but whose mkdir never happened: finish it.
				capacity = c.Capacity
			default: // pending: an earlier attempt stopped half way; finish it
				if !c.HasID {
					c.setID(v)
					c.Source = want
				}
				if o.Source != nil {
					if err := o.Source.resolve(r); err != nil {
						return err
					}
				}
			}
		}
		if c.Adopted {
			c.State = stateReady
			capacity = c.Capacity
			return m.writeClaim(c)
		}

		if parent := path.Dir(v.SubDir); parent != "." {
			if err := r.MkdirAll(parent, 0o755); err != nil {
				return w.undoClaim(m, c, fresh, err)
			}
		}
		err = r.Mkdir(v.SubDir, o.Mode.Perm())
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrExist) && fresh:
			// Made by someone else between our Lstat and our mkdir: not this volume's directory.
			return w.undoClaim(m, c, true, fmt.Errorf("%w: %q (created concurrently by someone else)", ErrExists, v.SubDir))
		case errors.Is(err, fs.ErrExist): // made by an earlier attempt, which stopped before the claim turned ready
		default:
			return w.undoClaim(m, c, fresh, err)
		}
		if c.State == stateReady && err == nil {
			// The common case: the claim was ready before the mkdir and mkdir set the exact mode.
			capacity = c.Capacity
			return nil
		}
		fi, err = r.Lstat(v.SubDir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
		}
		if o.UID >= 0 || o.GID >= 0 {
			if err := lchown(r, v.SubDir, o.UID, o.GID); err != nil {
				if errors.Is(err, syscall.EPERM) {
					return w.undoCreate(r, m, v, fmt.Errorf("%w: cannot give volume directory %q to uid %d, gid %d (the StorageClass's uid/gid parameters; -1 is unset): "+
						"the NFS server refused chown (%v), which is what an export with root_squash does. Export it with no_root_squash, or drop uid and gid from the class",
						ErrRootSquashed, v.SubDir, o.UID, o.GID, err))
				}
				return err
			}
		}
		// Mkdir is subject to the umask and cannot set special bits (and a setgid parent passes its
		// bit on): set the mode explicitly when it is not already exact. After chown, which may
		// clear setuid/setgid.
		if modeBits(fi.Mode()) != modeBits(o.Mode) || (o.UID >= 0 || o.GID >= 0) && o.Mode&specialBits != 0 {
			if err := r.Chmod(v.SubDir, o.Mode); err != nil {
				return err
			}
		}
		if o.Source != nil {
			// A retry after a crash mid-copy finds part of the copy: nobody has used this volume
			// yet (its claim never turned ready), so the part goes to the trash and the copy
			// starts again.
			moved, err := w.binEntries(r, v.SubDir, "refill-"+v.Name)
			filled = filled || moved
			if err != nil {
				return err
			}
			if _, err := copyTree(ctx, r, o.Source.dataDir(), v.SubDir, false); err != nil {
				return fmt.Errorf("copying %s into volume %s: %w", o.Source, v.Name, err)
			}
			if err := ctx.Err(); err != nil {
				return err // abandoned at the deadline: a retry owns the volume now
			}
		}
		capacity = c.Capacity
		if c.State == stateReady {
			return nil
		}
		c.State = stateReady
		return m.writeClaim(c)
	})
	if filled {
		w.Kick(exportOf(v))
	}
	return capacity, err
}

// adopt takes over an existing directory that no volume claims, if the class allows it.
func (w *Workspace) adopt(r *os.Root, m *metaFDs, v volume.Volume, o CreateOptions, fi fs.FileInfo, capacity *int64) error {
	switch {
	case !o.Reuse || !fi.IsDir():
		return fmt.Errorf("%w: %q (set reuseExisting=true on the class to adopt it)", ErrExists, v.SubDir)
	case o.Source != nil:
		return fmt.Errorf("%w: %q exists; an adopted directory cannot be filled from a content source", ErrExists, v.SubDir)
	}
	if err := checkAncestors(r, v.SubDir); err != nil {
		return err
	}
	if err := w.checkNoNestedVolumes(r, v.SubDir); err != nil {
		return err
	}
	c := claimOf(v, o)
	c.Adopted, c.State = true, stateReady
	if err := m.createClaim(c); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %q was claimed concurrently, retry", ErrConflict, v.SubDir)
		}
		return err
	}
	*capacity = c.Capacity
	return nil
}

// undoClaim removes a claim this call wrote (fresh) when the create fails before making anything, so
// the failure leaves no trace; err is returned.
func (w *Workspace) undoClaim(m *metaFDs, c claim, fresh bool, err error) error {
	if fresh {
		if rerr := m.removeClaim(c.SubDir); rerr != nil {
			klog.ErrorS(rerr, "Removing the claim of a failed create", "subDir", c.SubDir)
		}
	}
	return err
}

// undoCreate removes the still empty directory of a create that cannot complete, then its claim, so
// that a retry, or another class for the same directory, starts afresh. A directory that is not
// empty is left with its claim, and err says so.
func (w *Workspace) undoCreate(r *os.Root, m *metaFDs, v volume.Volume, err error) error {
	if rerr := r.Remove(v.SubDir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("%w (and the new directory could not be removed: %v)", err, rerr)
	}
	if rerr := m.removeClaim(v.SubDir); rerr != nil {
		return fmt.Errorf("%w (and its claim could not be removed: %v)", err, rerr)
	}
	return err
}

// binEntries moves every entry of dir into a fresh bin in the trash (O(entries), never opening them)
// and reports whether it moved anything.
func (w *Workspace) binEntries(r *os.Root, dir, label string) (bool, error) {
	entries, err := fs.ReadDir(r.FS(), dir)
	if err != nil || len(entries) == 0 {
		return false, err
	}
	if len(label) > 64 {
		label = label[:64]
	}
	bin := trashDir + "/" + trashName(w.cfg.Now().UTC(), label)
	if err := r.Mkdir(bin, 0o700); err != nil {
		return false, err
	}
	for _, e := range entries {
		if err := r.Rename(dir+"/"+e.Name(), bin+"/"+e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("moving %q out of %q: %w", e.Name(), dir, err)
		}
	}
	return true, nil
}

// SetCapacity records a new capacity for an existing volume (ControllerExpandVolume). NFS enforces
// no size; the record keeps CreateVolume's idempotency checks true after an expansion.
func (w *Workspace) SetCapacity(ctx context.Context, v volume.Volume, capacity int64) error {
	unlock, err := w.lockVolume(ctx, v)
	if err != nil {
		return err
	}
	defer unlock()
	return w.withExport(ctx, exportOf(v), w.cfg.FSTimeout, "expand "+v.SubDir, func(r *os.Root) error {
		c, err := readClaim(r, v.SubDir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q has no claim for volume %s", ErrNotFound, v.SubDir, v.Name)
		}
		if err != nil {
			return err
		}
		if c.Name != v.Name {
			return fmt.Errorf("%w: %q is owned by volume %s, not %s", ErrConflict, v.SubDir, c.Name, v.Name)
		}
		if c.Capacity >= capacity {
			return nil
		}
		c.Capacity = capacity
		return writeClaim(r, c)
	})
}

func (w *Workspace) checkNoNestedVolumes(r *os.Root, subDir string) error {
	d, err := r.Open(claimsDir)
	if err != nil {
		return err
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := readClaimBytes(int(d.Fd()), e.Name())
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "\nsubdir="+subDir+"/") {
			return fmt.Errorf("%w: %q contains other volumes; it cannot be adopted", ErrConflict, subDir)
		}
	}
	return nil
}

// Delete applies the volume's onDelete: delete moves the directory into the trash (one rename, O(1)
// whatever its size) for the reaper; archive renames it into the archive; retain leaves it. A volume
// whose directory is already gone is deleted (idempotent); a directory this volume does not own is
// refused and left untouched.
func (w *Workspace) Delete(ctx context.Context, v volume.Volume) error {
	unlock, err := w.lockVolume(ctx, v)
	if err != nil {
		return err
	}
	defer unlock()
	moved := false
	err = w.withExportE(ctx, exportOf(v), w.cfg.FSTimeout, "delete "+v.SubDir, func(e *export, r *os.Root, gen int) error {
		// Read before writing anything: a forged ID naming a directory Paddock never provisioned (an
		// export reached through a parent path, say) must leave no metadata area behind. So the claim
		// is read through descriptors only if they are already open (the area exists), else by path.
		var h metaHold
		defer h.release()
		m := w.metaCached(ctx, &h, e, gen)
		var (
			c   claim
			err error
		)
		if m != nil {
			c, err = m.readClaim(v.SubDir)
		} else {
			c, err = readClaim(r, v.SubDir)
		}
		if errors.Is(err, fs.ErrNotExist) && m != nil {
			// Perhaps the claims directory we hold was replaced: check by path before concluding.
			c, err = readClaim(r, v.SubDir)
			if err == nil {
				if m, err = w.metaRefresh(ctx, &h, e, r, gen); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := r.Lstat(v.SubDir); errors.Is(serr, fs.ErrNotExist) || v.OnDelete == volume.OnDeleteRetain {
				return nil // already deleted, or never created, or nothing to do
			}
			return fmt.Errorf("%w: %q exists but is not owned by volume %s; refusing to delete it", ErrConflict, v.SubDir, v.Name)
		}
		if err != nil {
			return err
		}
		if c.Name != v.Name {
			return fmt.Errorf("%w: %q is owned by volume %s, not %s; refusing to delete it", ErrConflict, v.SubDir, c.Name, v.Name)
		}
		if m == nil {
			// A claim proves this is Paddock's area; the trash or archive may still be missing (older
			// layout), which metaOf creates.
			if m, err = w.metaOf(ctx, &h, e, r, gen); err != nil {
				return err
			}
		}
		now := w.cfg.Now().UTC()
		var dstFD int
		var dst string
		switch v.OnDelete {
		case volume.OnDeleteDelete:
			dstFD, dst = m.trashFD(), trashName(now, v.Name)
		case volume.OnDeleteArchive:
			dstFD, dst = m.archiveFD(), archiveName(v.SubDir, now, v.ArchiveRetention)
		}
		if dst != "" {
			err := renameInto(r, m, v.SubDir, dstFD, dst)
			if errors.Is(err, fs.ErrNotExist) {
				if _, serr := r.Lstat(v.SubDir); serr == nil {
					// The volume is there, so the trash or archive we hold is not: open them again.
					if m, err = w.metaRefresh(ctx, &h, e, r, gen); err != nil {
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
			} else if err == nil {
				moved = v.OnDelete == volume.OnDeleteDelete
			}
		}
		// The claim goes last: a crash before this line leaves a claim whose directory is gone, which
		// the retry above treats as done.
		return m.removeClaim(v.SubDir)
	})
	if err == nil && moved {
		w.Kick(exportOf(v))
	}
	return err
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
// at once whatever its size. Symlinks are moved, never followed. A directory claimed by a different
// volume is refused.
func (w *Workspace) Scrub(ctx context.Context, v volume.Volume) error {
	unlock, err := w.lockVolume(ctx, v)
	if err != nil {
		return err
	}
	defer unlock()
	moved := false
	err = w.withExport(ctx, exportOf(v), 10*w.cfg.FSTimeout, "scrub "+v.SubDir, func(r *os.Root) error {
		if err := ensureMeta(r); err != nil {
			return err
		}
		if c, err := readClaim(r, v.SubDir); err == nil && c.Name != v.Name {
			return fmt.Errorf("%w: %q is owned by volume %s, not %s; refusing to scrub it", ErrConflict, v.SubDir, c.Name, v.Name)
		}
		if err := checkAncestors(r, v.SubDir); err != nil {
			return err
		}
		fi, err := r.Lstat(v.SubDir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrNotFound, v.SubDir)
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
		}
		// The bin is in the trash, so a reaper sweep may remove it while it is being filled; the renames
		// after that fail with ENOENT like those of entries that vanished. So the volume is listed again
		// until it is empty, with a fresh bin for each pass, and only an empty volume is success.
		label := path.Base(v.SubDir)
		if len(label) > 64 { // the bin's name must stay within the 255-byte file name limit
			label = label[:64]
		}
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
			bin := trashDir + "/" + trashName(w.cfg.Now().UTC(), "scrub-"+label)
			if err := r.Mkdir(bin, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			moved = true
			for _, e := range entries {
				if err := r.Rename(v.SubDir+"/"+e.Name(), bin+"/"+e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("moving %q out of %q: %w", e.Name(), v.SubDir, err)
				}
			}
		}
	})
	if moved {
		w.Kick(exportOf(v))
	}
	return err
}

// Stat reports whether the volume directory exists and is a real directory.
func (w *Workspace) Stat(ctx context.Context, v volume.Volume) error {
	return w.withExport(ctx, exportOf(v), w.cfg.FSTimeout, "stat "+v.SubDir, func(r *os.Root) error {
		fi, err := r.Lstat(v.SubDir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrNotFound, v.SubDir)
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
		}
		// A directory that exists but is not this volume's (a forged or stale ID) is not this volume.
		c, err := readClaim(r, v.SubDir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q is not owned by volume %s", ErrNotFound, v.SubDir, v.Name)
		}
		if err != nil {
			return err
		}
		if c.Name != v.Name {
			return fmt.Errorf("%w: %q is owned by volume %s, not %s", ErrNotFound, v.SubDir, c.Name, v.Name)
		}
		return nil
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
