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
	"time"

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

func readClaim(r *os.Root, subDir string) (claim, error) {
	b, err := r.ReadFile(claimPath(subDir))
	if err != nil {
		return claim{}, err
	}
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

// writeClaim replaces a claim atomically (temp file + rename), so a crash never leaves half a claim.
func writeClaim(r *os.Root, c claim) error {
	p := claimPath(c.SubDir)
	tmp := p + ".tmp"
	if err := r.WriteFile(tmp, c.encode(), 0o600); err != nil {
		return err
	}
	return r.Rename(tmp, p)
}

// createClaim writes a new claim, failing with fs.ErrExist if one appeared meanwhile.
func createClaim(r *os.Root, c claim) error {
	f, err := r.OpenFile(claimPath(c.SubDir), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(c.encode())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
	err = w.withExport(ctx, exportOf(v), timeout, "create "+v.SubDir, func(r *os.Root) error {
		if err := ensureMeta(r); err != nil {
			return err
		}
		want := ""
		if o.Source != nil {
			want = o.Source.String()
		}
		c, err := readClaim(r, v.SubDir)
		switch {
		case err == nil && c.Name != v.Name:
			return fmt.Errorf("%w: %q is used by volume %s", ErrConflict, v.SubDir, c.Name)
		case err == nil && c.State == "ready":
			capacity = c.Capacity
			fi, err := r.Lstat(v.SubDir)
			if err != nil {
				return fmt.Errorf("volume directory %q vanished: %w", v.SubDir, err)
			}
			if !fi.IsDir() {
				return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
			}
			if c.HasID && c.Source != want {
				return fmt.Errorf("volume %s %w: content source %q, not %q", v.Name, ErrIncompatible, c.Source, want)
			}
			if !c.HasID { // written by an older release: record what ListVolumes needs
				c.setID(v)
				c.Source = want
				return writeClaim(r, c)
			}
			return nil
		case err == nil: // pending: an earlier attempt stopped half way; finish it
			if c.HasID && c.Source != want {
				return fmt.Errorf("volume %s %w: content source %q, not %q", v.Name, ErrIncompatible, c.Source, want)
			}
			if !c.HasID {
				c.setID(v)
				c.Source = want
			}
			if o.Source != nil {
				if err := o.Source.resolve(r); err != nil {
					return err
				}
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
			fi, err := r.Lstat(v.SubDir)
			switch {
			case err == nil && (!o.Reuse || !fi.IsDir()):
				return fmt.Errorf("%w: %q (set reuseExisting=true on the class to adopt it)", ErrExists, v.SubDir)
			case err == nil && o.Source != nil:
				return fmt.Errorf("%w: %q exists; an adopted directory cannot be filled from a content source", ErrExists, v.SubDir)
			case err == nil:
				if err := w.checkNoNestedVolumes(r, v.SubDir); err != nil {
					return err
				}
				c.Adopted = true
			case !errors.Is(err, fs.ErrNotExist):
				return err
			}
			if err := createClaim(r, c); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%w: %q was claimed concurrently, retry", ErrConflict, v.SubDir)
				}
				return err
			}
		default:
			return err
		}
		if !c.Adopted {
			if parent := path.Dir(v.SubDir); parent != "." {
				if err := r.MkdirAll(parent, 0o755); err != nil {
					return err
				}
			}
			if err := r.Mkdir(v.SubDir, o.Mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			fi, err := r.Lstat(v.SubDir)
			if err != nil {
				return err
			}
			if !fi.IsDir() {
				return fmt.Errorf("%q: %w", v.SubDir, ErrNotDir)
			}
			// Mkdir is subject to the umask and cannot set special bits: set the mode explicitly.
			if err := r.Chmod(v.SubDir, o.Mode); err != nil {
				return err
			}
			if o.UID >= 0 || o.GID >= 0 {
				if err := r.Lchown(v.SubDir, o.UID, o.GID); err != nil {
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
		}
		c.State = "ready"
		capacity = c.Capacity
		return writeClaim(r, c)
	})
	if filled {
		w.Kick(exportOf(v))
	}
	return capacity, err
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
	entries, err := fs.ReadDir(r.FS(), claimsDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := r.ReadFile(claimsDir + "/" + e.Name())
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
	err = w.withExport(ctx, exportOf(v), w.cfg.FSTimeout, "delete "+v.SubDir, func(r *os.Root) error {
		// Read before writing anything: a forged ID naming a directory Paddock never provisioned (an
		// export reached through a parent path, say) must leave no metadata area behind.
		c, err := readClaim(r, v.SubDir)
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
		// A claim proves this is Paddock's area; the trash or archive may still be missing (older layout).
		if err := ensureMeta(r); err != nil {
			return err
		}
		now := w.cfg.Now().UTC()
		var dst string
		switch v.OnDelete {
		case volume.OnDeleteDelete:
			dst = trashDir + "/" + trashName(now, v.Name)
		case volume.OnDeleteArchive:
			dst = archiveDir + "/" + archiveName(v.SubDir, now, v.ArchiveRetention)
		}
		if dst != "" {
			if err := r.Rename(v.SubDir, dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			} else if err == nil {
				moved = v.OnDelete == volume.OnDeleteDelete
			}
		}
		// The claim goes last: a crash before this line leaves a claim whose directory is gone, which
		// the retry above treats as done.
		if err := r.Remove(claimPath(v.SubDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err == nil && moved {
		w.Kick(exportOf(v))
	}
	return err
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
