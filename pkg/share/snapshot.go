package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// A snapshot is a copy of a volume's directory in <export>/.paddock/snapshots/<dir>:
//
//	<dir>/snapshot.json  the record: name, source volume ID, state, creation time, size
//	<dir>/data/          the copy
//
// The record is written first (state pending) and marked ready after the copy, so a crash mid-copy
// is recognised and redone. Deleting a snapshot renames <dir> into the trash for the reaper.

const snapshotRecordFile = "snapshot.json"

func snapshotPath(dir string) string { return snapsDir + "/" + dir }
func snapshotData(dir string) string { return snapshotPath(dir) + "/data" }

type snapshotRecord struct {
	Version  int    `json:"version"`
	Name     string `json:"name"`
	Source   string `json:"sourceVolumeID"`
	State    string `json:"state"` // pending until the copy is complete, then ready
	Created  int64  `json:"createdUnixNano"`
	Size     int64  `json:"sizeBytes"`
	Capacity int64  `json:"sourceCapacityBytes,omitempty"`
}

func readSnapshotRecord(r *os.Root, dir string) (snapshotRecord, error) {
	b, err := r.ReadFile(snapshotPath(dir) + "/" + snapshotRecordFile)
	if err != nil {
		return snapshotRecord{}, err
	}
	var rec snapshotRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Name == "" || rec.Source == "" {
		return snapshotRecord{}, fmt.Errorf("snapshot record %s is corrupt", snapshotPath(dir))
	}
	return rec, nil
}

func writeSnapshotRecord(r *os.Root, dir string, rec snapshotRecord) error {
	rec.Version = 1
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := snapshotPath(dir) + "/" + snapshotRecordFile
	if err := r.WriteFile(p+".tmp", append(b, '\n'), 0o600); err != nil {
		return err
	}
	return r.Rename(p+".tmp", p)
}

// SnapshotInfo describes a snapshot for the CSI calls.
type SnapshotInfo struct {
	ID             string
	Name           string
	SourceVolumeID string
	Created        time.Time
	Size           int64 // bytes of regular files copied
	Ready          bool
	// SourceCapacity is the capacity the source volume had, the smallest a restore should ask for.
	SourceCapacity int64
}

func infoOf(s volume.Snapshot, rec snapshotRecord) SnapshotInfo {
	return SnapshotInfo{ID: s.ID(), Name: rec.Name, SourceVolumeID: rec.Source, Created: time.Unix(0, rec.Created),
		Size: rec.Size, Ready: rec.State == stateReady, SourceCapacity: rec.Capacity}
}

// ErrSnapshotNotFound: no snapshot with this ID exists.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// CreateSnapshot copies the volume src into the snapshot called name. It is idempotent by name on the
// export: the same name and source return the existing snapshot, the same name with another source is
// ErrIncompatible. The copy is O(size of the volume); it is not atomic, so writers should be quiet
// while it runs (as with any file-level backup).
func (w *Workspace) CreateSnapshot(ctx context.Context, src volume.Volume, name string) (SnapshotInfo, error) {
	s := volume.SnapshotOf(src, name)
	srcID := src.ID()
	var info SnapshotInfo
	err := w.run(ctx, op{keys: []string{volumeKey(src), snapshotKey(s)}, x: exportOf(src), timeout: w.copyTimeout(), what: "snapshot " + src.SubDir}, func(c *call) error {
		r, ctx := c.r, c.ctx
		// A source that has a claim has a metadata area: without one the source is unknown (a forged
		// ID), and nothing may be created.
		if _, err := r.Lstat(claimsDir); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: volume %s: no Paddock volume exists on its export", ErrSourceNotFound, srcID)
		}
		if _, err := c.meta(); err != nil {
			return err
		}
		rec, err := readSnapshotRecord(r, s.Dir)
		switch {
		case err == nil && rec.Name != name:
			return fmt.Errorf("snapshot %s: %w: its directory %s holds snapshot %q", name, ErrIncompatible, s.Dir, rec.Name)
		case err == nil && rec.Source != srcID:
			return fmt.Errorf("snapshot %s %w: it was taken of volume %s, not %s", name, ErrIncompatible, rec.Source, srcID)
		case err == nil && rec.State == stateReady:
			info = infoOf(s, rec)
			return nil
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			// A corrupt record: only Paddock writes here, so it is the trace of a crash. Fall through.
		}
		// Nothing, or an unfinished copy: the source must exist before anything is written.
		if err := ownedDir(r, src, true); err != nil {
			return fmt.Errorf("%w: volume %s: %v", ErrSourceNotFound, srcID, err)
		}
		cl, err := readClaim(r, src.SubDir)
		if err != nil {
			return err
		}
		if _, err := r.Lstat(snapshotPath(s.Dir)); err == nil {
			if err := r.Rename(snapshotPath(s.Dir), trashDir+"/"+trashName(w.cfg.Now().UTC(), "snapshot-"+s.Dir)); err != nil {
				return fmt.Errorf("discarding the unfinished snapshot %s: %w", name, err)
			}
			w.Kick(exportOf(src))
		}
		if err := r.Mkdir(snapshotPath(s.Dir), 0o700); err != nil {
			return err
		}
		rec = snapshotRecord{Name: name, Source: srcID, State: "pending", Created: w.cfg.Now().UnixNano(), Capacity: cl.Capacity}
		if err := writeSnapshotRecord(r, s.Dir, rec); err != nil {
			return err
		}
		if err := r.Mkdir(snapshotData(s.Dir), 0o700); err != nil {
			return err
		}
		size, err := copyTree(ctx, r, src.SubDir, snapshotData(s.Dir), true)
		if err != nil {
			return fmt.Errorf("copying volume %s: %w", srcID, err)
		}
		if err := ctx.Err(); err != nil {
			return err // abandoned at the deadline: a retry owns the snapshot now, never mark it ready
		}
		rec.State, rec.Size = stateReady, size
		if err := writeSnapshotRecord(r, s.Dir, rec); err != nil {
			return err
		}
		info = infoOf(s, rec)
		return nil
	})
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s (%s): %w", name, s.ID(), err)
	}
	return info, nil
}

func snapshotExport(s volume.Snapshot) Export {
	return Export{Server: s.Server, Share: s.Share, NFSVers: s.NFSVers}
}

// GetSnapshot reads a snapshot's record. A snapshot whose copy has not finished is reported with
// Ready false.
func (w *Workspace) GetSnapshot(ctx context.Context, s volume.Snapshot) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := w.read(ctx, snapshotExport(s), "get snapshot "+s.Dir, func(r *os.Root) error {
		rec, err := readSnapshotRecord(r, s.Dir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrSnapshotNotFound, s.ID())
		}
		if err != nil {
			return err
		}
		info = infoOf(s, rec)
		return nil
	})
	return info, err
}

// DeleteSnapshot moves the snapshot into the trash (one rename) for the reaper. A snapshot that does
// not exist is deleted already. Volumes restored from it are copies and are not affected.
func (w *Workspace) DeleteSnapshot(ctx context.Context, s volume.Snapshot) error {
	err := w.run(ctx, op{keys: []string{snapshotKey(s)}, x: snapshotExport(s), timeout: w.cfg.FSTimeout, what: "delete snapshot " + s.Dir}, func(c *call) error {
		r := c.r
		if _, err := r.Lstat(snapsDir); errors.Is(err, fs.ErrNotExist) {
			return nil // no snapshot area, no snapshot: a forged ID creates nothing
		}
		if _, err := c.meta(); err != nil {
			return err
		}
		fi, err := r.Lstat(snapshotPath(s.Dir))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", snapshotPath(s.Dir), ErrNotDir)
		}
		err = r.Rename(snapshotPath(s.Dir), trashDir+"/"+trashName(w.cfg.Now().UTC(), "snapshot-"+s.Dir))
		if err == nil {
			w.Kick(snapshotExport(s))
		} else if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting snapshot %s: %w", s.ID(), err)
	}
	return nil
}

// ListSnapshots lists the ready snapshots on every export the controller knows (or only on x), sorted
// by ID. Unfinished copies are not listed, as CSI asks.
func (w *Workspace) ListSnapshots(ctx context.Context, only *Export) ([]SnapshotInfo, error) {
	exports := w.Known()
	if only != nil {
		exports = []Export{*only}
	}
	var all []SnapshotInfo
	for _, x := range exports {
		err := w.read(ctx, x, "list snapshots", func(r *os.Root) error {
			entries, err := fs.ReadDir(r.FS(), snapsDir)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, e := range entries {
				if !e.IsDir() || volume.ValidateSnapshotDir(e.Name()) != nil {
					continue
				}
				rec, err := readSnapshotRecord(r, e.Name())
				if err != nil || rec.State != stateReady {
					continue
				}
				// Only snapshots taken through this mount: the same export mounted with another NFS
				// version lists them under its own IDs, which would be duplicates.
				src, err := volume.ParseID(rec.Source)
				if err != nil || src.NFSVers != x.NFSVers {
					continue
				}
				s := volume.Snapshot{Server: x.Server, Share: x.Share, NFSVers: x.NFSVers, Dir: e.Name()}
				all = append(all, infoOf(s, rec))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing snapshots on %s:%s: %w", x.Server, x.Share, err)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all, nil
}
