package share

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// Controller publications (ControllerPublishVolume) are recorded on the export, beside the claims,
// in .paddock/publications/<sha256(subDir)>:
//
//	paddock-publications v1
//	volume=<volume ID>
//	node=<node ID, query-escaped> readonly=<bool> mode=<CSI access mode>
//	...
//
// The record names the volume ID it belongs to: a record left by a deleted volume whose directory
// was later claimed again under another ID is not this volume's, and is replaced on its first
// publish. The file disappears with the volume's last publication.

const publicationsDir = volume.MetaDir + "/publications"

// Publication is one node a volume is controller-published to.
type Publication struct {
	Node     string
	ReadOnly bool
	Mode     string // the CSI access mode's name, e.g. SINGLE_NODE_WRITER
}

func publicationsPath(subDir string) string {
	sum := sha256.Sum256([]byte(subDir))
	return publicationsDir + "/" + hex.EncodeToString(sum[:])
}

func encodePublications(id string, pubs []Publication) []byte {
	var b strings.Builder
	b.WriteString("paddock-publications v1\nvolume=" + url.QueryEscape(id) + "\n")
	for _, p := range pubs {
		fmt.Fprintf(&b, "node=%s readonly=%t mode=%s\n", url.QueryEscape(p.Node), p.ReadOnly, url.QueryEscape(p.Mode))
	}
	return []byte(b.String())
}

func decodePublications(b []byte) (string, []Publication, error) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 2 || lines[0] != "paddock-publications v1" || !strings.HasPrefix(lines[1], "volume=") {
		return "", nil, errors.New("not a publications record")
	}
	id, err := url.QueryUnescape(strings.TrimPrefix(lines[1], "volume="))
	if err != nil {
		return "", nil, err
	}
	var pubs []Publication
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) != 3 || !strings.HasPrefix(f[0], "node=") || !strings.HasPrefix(f[1], "readonly=") || !strings.HasPrefix(f[2], "mode=") {
			return "", nil, fmt.Errorf("bad publication line %q", l)
		}
		var p Publication
		if p.Node, err = url.QueryUnescape(f[0][len("node="):]); err != nil || p.Node == "" {
			return "", nil, fmt.Errorf("bad node in %q", l)
		}
		if p.ReadOnly, err = strconv.ParseBool(f[1][len("readonly="):]); err != nil {
			return "", nil, fmt.Errorf("bad readonly in %q", l)
		}
		if p.Mode, err = url.QueryUnescape(f[2][len("mode="):]); err != nil {
			return "", nil, fmt.Errorf("bad mode in %q", l)
		}
		pubs = append(pubs, p)
	}
	return id, pubs, nil
}

// readPublications returns the publications recorded for v (none when the record is missing or
// belongs to another volume ID).
func readPublications(r *os.Root, v volume.Volume) ([]Publication, error) {
	b, err := r.ReadFile(publicationsPath(v.SubDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	id, pubs, err := decodePublications(b)
	if err != nil {
		return nil, fmt.Errorf("publications record %s is corrupt: %w", publicationsPath(v.SubDir), err)
	}
	if id != v.ID() {
		return nil, nil
	}
	return pubs, nil
}

func writePublications(r *os.Root, v volume.Volume, pubs []Publication) error {
	p := publicationsPath(v.SubDir)
	if len(pubs) == 0 {
		if err := r.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	fi, err := r.Lstat(publicationsDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := r.Mkdir(publicationsDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s on the export is not a directory: %w", publicationsDir, ErrNotDir)
	}
	tmp := p + ".tmp"
	if err := r.WriteFile(tmp, encodePublications(v.ID(), pubs), 0o600); err != nil {
		return err
	}
	return r.Rename(tmp, p)
}

// Publish records that v is published to p.Node. The volume must exist and be v's. check sees the
// publications already recorded (the volume's lock is held meanwhile) and may refuse with an error,
// which Publish returns as it is; it returns done=true when p.Node is already recorded exactly as p,
// in which case nothing is written.
func (w *Workspace) Publish(ctx context.Context, v volume.Volume, p Publication, check func(existing []Publication) (done bool, err error)) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: w.cfg.FSTimeout, what: "publish " + v.SubDir}, func(c *call) error {
		r := c.r
		if err := ownedDir(r, v, false); err != nil {
			return err
		}
		pubs, err := readPublications(r, v)
		if err != nil {
			return err
		}
		done, err := check(slices.Clone(pubs))
		if err != nil || done {
			return err
		}
		pubs = slices.DeleteFunc(pubs, func(q Publication) bool { return q.Node == p.Node })
		pubs = append(pubs, p)
		sort.Slice(pubs, func(i, j int) bool { return pubs[i].Node < pubs[j].Node })
		return writePublications(r, v, pubs)
	})
}

// Unpublish removes node's publication of v (every publication when node is empty). A volume that
// is gone, or was never published there, is unpublished already.
func (w *Workspace) Unpublish(ctx context.Context, v volume.Volume, node string) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: w.cfg.FSTimeout, what: "unpublish " + v.SubDir}, func(c *call) error {
		r := c.r
		pubs, err := readPublications(r, v)
		if err != nil || len(pubs) == 0 {
			return err
		}
		n := len(pubs)
		pubs = slices.DeleteFunc(pubs, func(q Publication) bool { return node == "" || q.Node == node })
		if len(pubs) == n {
			return nil
		}
		return writePublications(r, v, pubs)
	})
}

// Publications lists the nodes v is published to.
func (w *Workspace) Publications(ctx context.Context, v volume.Volume) ([]Publication, error) {
	var pubs []Publication
	err := w.read(ctx, exportOf(v), "read publications of "+v.SubDir, func(r *os.Root) error {
		var err error
		pubs, err = readPublications(r, v)
		return err
	})
	return pubs, err
}

// PublishedNodes maps the ID of every published volume on the known exports to its nodes. It reads
// one small file per published volume.
func (w *Workspace) PublishedNodes(ctx context.Context) (map[string][]Publication, error) {
	all := map[string][]Publication{}
	for _, x := range w.Known() {
		err := w.read(ctx, x, "list publications", func(r *os.Root) error {
			entries, err := fs.ReadDir(r.FS(), publicationsDir)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, e := range entries {
				if strings.HasSuffix(e.Name(), ".tmp") || !e.Type().IsRegular() {
					continue
				}
				b, err := r.ReadFile(publicationsDir + "/" + e.Name())
				if err != nil {
					continue
				}
				id, pubs, err := decodePublications(b)
				if err != nil {
					continue
				}
				v, err := volume.ParseID(id)
				if err != nil || ExportOf(v).Place() != x.Place() || publicationsPath(v.SubDir) != publicationsDir+"/"+e.Name() {
					continue // not a record this export's volumes could have written
				}
				all[id] = pubs
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing publications on %s:%s: %w", x.Server, x.Share, err)
		}
	}
	return all, nil
}

// SetAttributes changes the mode and owner of v's directory (ControllerModifyVolume): mode when
// non-nil, uid and gid when not -1. Nothing but the directory itself is touched, and a symlink is
// never followed (the directory is checked to be one, and chown does not follow).
func (w *Workspace) SetAttributes(ctx context.Context, v volume.Volume, mode *os.FileMode, uid, gid int) error {
	return w.run(ctx, op{keys: []string{volumeKey(v)}, x: exportOf(v), timeout: w.cfg.FSTimeout, what: "modify " + v.SubDir}, func(c *call) error {
		r := c.r
		if err := ownedDir(r, v, false); err != nil {
			return err
		}
		if mode != nil {
			if err := r.Chmod(v.SubDir, *mode); err != nil {
				return err
			}
		}
		if uid >= 0 || gid >= 0 {
			return r.Lchown(v.SubDir, uid, gid)
		}
		return nil
	})
}
