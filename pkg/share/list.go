package share

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// Known lists every known export (one per place, with its latest options), sorted.
func (w *Workspace) Known() []Export {
	w.mu.Lock()
	list := make([]Export, 0, len(w.known))
	for _, x := range w.known {
		list = append(list, x)
	}
	w.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].key() < list[j].key() })
	return list
}

// ListedVolume is one volume found by ListVolumes.
type ListedVolume struct {
	Volume   volume.Volume
	ID       string
	Capacity int64
	Source   string // "snapshot:<id>", "volume:<id>" or ""
	// Problem is set by ListVolumeHealth only: why the volume is not healthy.
	Problem string
}

// ListVolumes lists the ready volumes whose claims are on the exports the controller knows, sorted by
// ID. It reads every claim (one small file per volume), so it costs O(volumes) round trips. Claims
// written before claims recorded the volume ID's fields are left out (Create completes them).
func (w *Workspace) ListVolumes(ctx context.Context) ([]ListedVolume, error) {
	return w.listVolumes(ctx, false)
}

// ListVolumesChecked is ListVolumes with each volume's Problem set: one stat per volume more.
func (w *Workspace) ListVolumesChecked(ctx context.Context) ([]ListedVolume, error) {
	return w.listVolumes(ctx, true)
}

// ListVolumeHealth lists the volumes with a problem: a claimed directory that is gone or is not a
// directory.
func (w *Workspace) ListVolumeHealth(ctx context.Context) ([]ListedVolume, error) {
	all, err := w.ListVolumesChecked(ctx)
	if err != nil {
		return nil, err
	}
	var sick []ListedVolume
	for _, lv := range all {
		if lv.Problem != "" {
			sick = append(sick, lv)
		}
	}
	return sick, nil
}

func (w *Workspace) listVolumes(ctx context.Context, health bool) ([]ListedVolume, error) {
	var all []ListedVolume
	for _, x := range w.Known() {
		err := w.read(ctx, x, "list volumes", func(r *os.Root) error {
			d, err := r.Open(claimsDir)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			defer d.Close()
			entries, err := d.ReadDir(-1)
			if err != nil {
				return err
			}
			for _, e := range entries {
				// Claims are symlinks (regular files from earlier releases).
				if isTemp(e.Name()) || !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
					continue
				}
				lv, ok := listedVolume(r, int(d.Fd()), x, e.Name())
				if !ok {
					continue
				}
				if health {
					lv.Problem = dirProblem(r, lv.Volume.SubDir)
				}
				all = append(all, lv)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing volumes on %s:%s: %w", x.Server, x.Share, err)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all, nil
}

// listedVolume rebuilds a volume from its claim file; ok is false for claims that are not ready,
// belong to the same export mounted with another NFS version, or predate recorded IDs.
func listedVolume(r *os.Root, claimsFD int, x Export, file string) (ListedVolume, bool) {
	b, err := readClaimBytes(claimsFD, file)
	if err != nil {
		return ListedVolume{}, false
	}
	var subDir string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "subdir="); ok {
			subDir = v
		}
	}
	if subDir == "" || claimPath(subDir) != claimsDir+"/"+file {
		return ListedVolume{}, false
	}
	c, err := parseClaim(b, subDir)
	if err != nil || c.State != stateReady || !c.HasID || c.NFSVers != x.NFSVers {
		if err == nil && !c.HasID {
			klog.V(4).InfoS("Claim predates recorded volume IDs; not listed until Create sees it again", "subDir", subDir)
		}
		return ListedVolume{}, false
	}
	v := volume.Volume{Server: x.Server, Share: x.Share, NFSVers: x.NFSVers, SubDir: c.SubDir, Name: c.Name,
		OnDelete: c.OnDelete, ArchiveRetention: c.Retention, MountOptions: x.Options, QuotaAgent: c.Quota}
	if err := v.Validate(); err != nil {
		klog.V(2).InfoS("Skipping a claim that does not make a valid volume", "subDir", subDir, "err", err)
		return ListedVolume{}, false
	}
	return ListedVolume{Volume: v, ID: v.ID(), Capacity: c.Capacity, Source: c.Source}, true
}

// Health problems of a volume, as CamelCase reasons.
const (
	ProblemMissing      = "DirectoryMissing"
	ProblemNotDirectory = "NotADirectory"
)

func dirProblem(r *os.Root, subDir string) string {
	fi, err := r.Lstat(subDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ProblemMissing
	case err != nil:
		return "StatFailed: " + err.Error()
	case !fi.IsDir():
		return ProblemNotDirectory
	}
	return ""
}

// VolumeHealth checks a volume from the controller: ErrNotFound when no claim of this volume exists
// (an unknown or forged ID); otherwise a problem reason ("" when the directory is there).
func (w *Workspace) VolumeHealth(ctx context.Context, v volume.Volume) (string, error) {
	var problem string
	err := w.read(ctx, exportOf(v), "health "+v.SubDir, func(r *os.Root) error {
		if _, err := claimFor(r, v); err != nil {
			return err
		}
		problem = dirProblem(r, v.SubDir)
		return nil
	})
	return problem, err
}

// Available reports the bytes available to Paddock on the export (statfs of its root).
func (w *Workspace) Available(ctx context.Context, x Export) (int64, error) {
	var avail int64
	err := w.read(ctx, x, "statfs", func(r *os.Root) error {
		f, err := r.Open(".")
		if err != nil {
			return err
		}
		defer f.Close()
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
			return err
		}
		avail = int64(st.Bavail) * int64(st.Bsize)
		return nil
	})
	return avail, err
}

// ExportOf is the export a volume lives on (exported for the driver's GetCapacity).
func ExportOf(v volume.Volume) Export { return exportOf(v) }
