package share

// Helpers of TestModelConcurrentVolumes (model_test.go): the model's types, the path algebra on server
// paths, and the readers of the export's real state (claims, files, trash) that the invariants compare
// with the model. They use only the exported API and the on-disk formats (the claim record's name=,
// subdir= and state= lines), so a rewrite of the package's internals does not break them.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// The two exports of one server: the second is a subdirectory of the first (overlapping exports).
// Every directory is named by its path on the server ("/export/a/b"), so volumes of both exports
// compare directly.
var (
	modelShares = [2]string{"/export", "/export/inner"}
	// SubDirs the templates produce: nested, overlapping, an export root ("inner") and a path inside it.
	modelPools = [2][]string{
		{"a", "a/b", "a/b/c", "b", "b/x", "b/y", "c", "team-a", "team-a/pvc-1", "team-a/pvc-2", "team-a/pvc-3",
			"team-b/pvc-1", "inner", "inner/x"},
		{"x", "y", "y/z", "w"},
	}
	modelNames = [2][]string{
		{"pvc-0", "pvc-1", "pvc-2", "pvc-3", "pvc-4", "pvc-5", "pvc-6", "pvc-7", "pvc-8", "pvc-9"},
		{"pvc-i0", "pvc-i1", "pvc-i2", "pvc-i3"},
	}
	modelSnapNames = [2][]string{{"snap-0", "snap-1", "snap-2"}, {"snap-i0", "snap-i1"}}
	modelOnDelete  = []volume.OnDelete{volume.OnDeleteDelete, volume.OnDeleteArchive, volume.OnDeleteRetain}
	modelModes     = []os.FileMode{0o777, 0o750, 0o2770}
)

func spath(k int, sub string) string { return modelShares[k] + "/" + sub }

// under reports whether server path p is q or lies below it.
func under(p, q string) bool { return p == q || strings.HasPrefix(p, q+"/") }

func nestedPaths(p, q string) bool { return under(p, q) || under(q, p) }

// rootProblem says why no volume of export k may live at server path p (it is, contains or lies inside
// the root of the other export, or lies in a metadata area), or "".
func rootProblem(k int, p string) string {
	own := modelShares[k]
	for _, root := range modelShares {
		if root == own {
			continue
		}
		if under(root, p) {
			return fmt.Sprintf("%s is or contains the root of export %s:%s", p, testServer, root)
		}
		if under(p, root) && under(root, own) {
			return fmt.Sprintf("%s lies inside the root of export %s:%s", p, testServer, root)
		}
	}
	if strings.Contains(p+"/", "/"+volume.MetaDir+"/") {
		return fmt.Sprintf("%s lies in a metadata area", p)
	}
	return ""
}

// containsOtherRoot reports whether scrubbing server path p of export k would empty another export's root.
func containsOtherRoot(k int, p string) string {
	for _, root := range modelShares {
		if root != modelShares[k] && under(root, p) {
			return root
		}
	}
	return ""
}

func trashArea(k int) string   { return modelShares[k] + "/" + volume.MetaDir + "/trash" }
func archiveArea(k int) string { return modelShares[k] + "/" + volume.MetaDir + "/archive" }

func modelSnapshot(k int, name string) volume.Snapshot {
	return volume.SnapshotOf(volume.Volume{Server: testServer, Share: modelShares[k]}, name)
}

type vstate int

const (
	vAbsent    vstate = iota // never created, or deleted for certain
	vAlive                   // created for certain: its claim, directory and files must be there
	vUncertain               // a call on it was abandoned (or a violation involved it): anything goes until resolved
)

func (s vstate) String() string { return [...]string{"absent", "alive", "uncertain"}[s] }

// mspec is what a CreateVolume asks for; every field but reuse is part of the volume's identity.
type mspec struct {
	exp      int
	subDir   string
	onDelete volume.OnDelete
	mode     os.FileMode
	uid      int // -1, or this process's uid (the gid follows)
	reuse    bool
	srcSnap  string         // restore from this snapshot (its name, on the same export)
	srcVol   *volume.Volume // clone of this volume
}

func (s mspec) path() string { return spath(s.exp, s.subDir) }

func (s mspec) vol(name string) volume.Volume {
	return volume.Volume{Server: testServer, Share: modelShares[s.exp], SubDir: s.subDir, Name: name, OnDelete: s.onDelete}
}

func (s mspec) source() *Source {
	switch {
	case s.srcSnap != "":
		return SnapshotSource(modelSnapshot(s.exp, s.srcSnap))
	case s.srcVol != nil:
		return VolumeSource(*s.srcVol)
	}
	return nil
}

func (s mspec) options() CreateOptions {
	o := CreateOptions{Mode: s.mode, UID: s.uid, GID: -1, Reuse: s.reuse, Capacity: 1 << 30, Source: s.source()}
	if s.uid >= 0 {
		o.GID = os.Getgid()
	}
	return o
}

func (s mspec) identity() string {
	src := ""
	switch {
	case s.srcSnap != "":
		src = " from snapshot " + s.srcSnap
	case s.srcVol != nil:
		src = " from volume " + s.srcVol.Name + "@" + s.srcVol.SubDir
	}
	return fmt.Sprintf("%s %s mode=%04o uid=%d%s", s.path(), s.onDelete, s.mode, s.uid, src)
}

func (s mspec) String() string {
	if s.reuse {
		return s.identity() + " reuse"
	}
	return s.identity()
}

// mvol is the model of one volume name.
type mvol struct {
	name    string
	exp     int
	state   vstate
	spec    mspec // valid with hasSpec: the spec it lives with, or last lived or was last attempted with
	hasSpec bool
	inc     int   // incarnation: bumped by every Create that makes the volume anew
	since   int64 // seq at which it became alive
	loose   bool  // its content is not known exactly (a copy of an uncertain source): no foreign-file check
	hist    []string
}

func (x *mvol) String() string { return fmt.Sprintf("%s#%d", x.name, x.inc) }

// mstatic is a statically provisioned PV: a directory without a claim, scrubbed or deleted by hand.
type mstatic struct {
	exp      int
	sub      string
	name     string
	scrubbed bool // a Scrub may have claimed its directory for it
	hist     []string
}

func (st *mstatic) path() string { return spath(st.exp, st.sub) }

func (st *mstatic) vol(od volume.OnDelete) volume.Volume {
	return volume.Volume{Server: testServer, Share: modelShares[st.exp], SubDir: st.sub, Name: st.name, OnDelete: od}
}

type snapState int

const (
	sAbsent snapState = iota
	sReady
	sUnknown
)

func (s snapState) String() string { return [...]string{"absent", "ready", "unknown"}[s] }

type snapFile struct {
	content   string
	uncertain bool
}

type msnap struct {
	name    string
	exp     int
	state   snapState
	srcID   string
	content map[string]snapFile // path relative to the volume -> file
	loose   bool                // may hold files the model does not know
	hist    []string
}

// rec is a file the model expects at its server path.
type rec struct {
	path      string
	content   string
	kind      string // "vol" (a user wrote it into a volume, or it was copied or adopted), "static" (the admin), "orphan" (left by a retain delete)
	owner     string // kind vol, orphan: the volume
	inc       int
	uncertain bool  // an abandoned call may have moved it: not checked
	ws, we    int64 // seqs around the write
	batch     int
}

func (r *rec) String() string {
	switch r.kind {
	case "vol":
		return fmt.Sprintf("%s (file of volume %s#%d, written in batch %d)", r.path, r.owner, r.inc, r.batch)
	case "orphan":
		return fmt.Sprintf("%s (file left in place by the retain delete of %s#%d, written in batch %d)", r.path, r.owner, r.inc, r.batch)
	}
	return fmt.Sprintf("%s (file the admin wrote in batch %d)", r.path, r.batch)
}

// movedRec is a file that a successful Delete or Scrub moved: it must be in the trash or archive.
type movedRec struct {
	content string
	rel     string // path relative to the directory that was moved (delete, archive) or emptied (scrub)
	area    string // server path of the trash or archive it must be in
	what    string // the file
	by      string // the call that moved it
	batch   int
}

// violation is one broken invariant. key identifies it (the same breach found twice has the same key);
// names and paths are what the model must stop trusting afterwards, so one bug is reported once.
type violation struct {
	key     string
	info    string   // details that may differ between two looks at the same breach
	names   []string // volumes to mark uncertain
	paths   []string // records at or under these server paths to mark uncertain; also selects the op log shown
	quiet   []string // more such paths, not shown
	dropped []*movedRec
}

type logEntry struct {
	batch int
	paths []string
	text  string
}

// dclaim is a claim found on the export.
type dclaim struct {
	exp          int
	subDir, name string
	state        string
	path         string // server path of the directory it claims
}

func (c dclaim) String() string {
	return fmt.Sprintf("%s (claimed by %s through %s:%s, state %s)", c.path, c.name, testServer, modelShares[c.exp], c.state)
}

// scanClaims reads every claim in the claims area of export k, whose local directory is local: a
// symlink whose target is the record, or a regular file of an older release.
func scanClaims(local string, k int) []dclaim {
	dir := filepath.Join(local, volume.MetaDir, "claims")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []dclaim
	seen := map[string]bool{}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		var b []byte
		if t, err := os.Readlink(p); err == nil {
			b = []byte(t)
		} else if e.Type().IsRegular() {
			if b, err = os.ReadFile(p); err != nil {
				continue
			}
		} else {
			continue
		}
		if !strings.HasPrefix(string(b), "paddock-claim") {
			continue
		}
		var c dclaim
		for _, line := range strings.Split(string(b), "\n") {
			key, val, _ := strings.Cut(line, "=")
			switch key {
			case "name":
				c.name = val
			case "subdir":
				c.subDir = val
			case "state":
				c.state = val
			}
		}
		if c.name == "" || c.subDir == "" {
			continue
		}
		c.exp, c.path = k, spath(k, c.subDir)
		if id := c.name + "\x00" + c.subDir; !seen[id] {
			seen[id] = true
			out = append(out, c)
		}
	}
	return out
}

// quietListing describes every entry below dir (type, mode, content or target), or the error.
func quietListing(dir string) string {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			line += " -> " + t
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		lines = append(lines, "error: "+err.Error())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func dirNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, mount.ErrTimeout)
}

// errClass names an outcome for the statistics.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, ErrIncompatible):
		return "incompatible"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrExists):
		return "exists"
	case errors.Is(err, ErrSourceNotFound):
		return "source-not-found"
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrSnapshotNotFound):
		return "not-found"
	case errors.Is(err, ErrNotDir):
		return "not-dir"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	case errors.Is(err, ErrRootSquashed):
		return "root-squashed"
	case errors.Is(err, fs.ErrNotExist):
		return "enoent"
	case errors.Is(err, fs.ErrExist):
		return "eexist"
	}
	return "other"
}

// refusal reports an error that says the call was refused before it changed anything.
func refusal(err error) bool {
	switch errClass(err) {
	case "incompatible", "conflict", "exists", "source-not-found", "not-found", "not-dir", "unsupported":
		return true
	}
	return false
}

// modelCounts counts calls per kind and outcome.
type modelCounts struct {
	mu              sync.Mutex
	byKind          map[string]map[string]int
	tags            map[string]int // violations per invariant tag
	calls           int
	writes          int
	notes           []string
	nnotes          int
	tCalls, tChecks time.Duration
}

func (c *modelCounts) note(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nnotes++
	if len(c.notes) < 10 {
		c.notes = append(c.notes, s)
	}
}

func newModelCounts() *modelCounts {
	return &modelCounts{byKind: map[string]map[string]int{}, tags: map[string]int{}}
}

func (c *modelCounts) add(kind string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKind[kind] == nil {
		c.byKind[kind] = map[string]int{}
	}
	c.byKind[kind][errClass(err)]++
	c.calls++
}

func (c *modelCounts) table() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := make([]string, 0, len(c.byKind))
	for k := range c.byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		outs := make([]string, 0, len(c.byKind[k]))
		for o, n := range c.byKind[k] {
			outs = append(outs, fmt.Sprintf("%s=%d", o, n))
		}
		sort.Strings(outs)
		fmt.Fprintf(&b, "  %-22s %s\n", k, strings.Join(outs, " "))
	}
	return b.String()
}

// createRatio is the share of Create calls that returned OK.
func (c *modelCounts) createRatio() (ok, all int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, outs := range c.byKind {
		if !strings.HasPrefix(k, "Create") {
			continue
		}
		for o, n := range outs {
			all += n
			if o == "ok" {
				ok += n
			}
		}
	}
	return ok, all
}

func tagOf(key string) string {
	if i := strings.Index(key, "]"); strings.HasPrefix(key, "[") && i > 0 {
		return key[:i+1]
	}
	return "[?]"
}

func trimHist(h []string, n int) []string {
	if len(h) > n {
		return h[len(h)-n:]
	}
	return h
}

// relUnder is p relative to dir (p must be under dir).
func relUnder(p, dir string) string { return strings.TrimPrefix(strings.TrimPrefix(p, dir), "/") }

// deepest returns the deepest server path in set that is a strict ancestor of p, or "".
func deepest(p string, set map[string][]dclaim) string {
	for q := path.Dir(p); q != "/" && q != "."; q = path.Dir(q) {
		if len(set[q]) > 0 {
			return q
		}
	}
	return ""
}
