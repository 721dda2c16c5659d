package share

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// The claims area is the one home of ownership on an export, and the place where the invariant "no
// volume directory is an ancestor or a descendant of another" is enforced atomically, on the server,
// so it holds across controllers (docs/design.md, "Claims and the tree"):
//
//	.paddock/claims/<h(p)>            a symlink: the claim of volume p (or the marker of an export
//	                                  root that lies at p); its target is the encoded record
//	.paddock/claims/<h(q)>/           a directory: volumes lie below q; it holds one pin per volume:
//	.paddock/claims/<h(q)>/<h(p)>.<t> a symlink naming volume p below q, t the token of p's claim
//	.paddock/names/<name>             a symlink to the subDir that volume <name> was created at
//
// h is the SHA-256 of the path relative to the export. A name in the claims directory is either a
// symlink or a directory, never both, and SYMLINK and MKDIR both fail with EEXIST on any existing
// name, on NFSv3 as on NFSv4. So "q is a volume" (claim) and "something lies below q" (pin
// directory) exclude each other atomically: of a racing Create("a") and Create("a/b") exactly one
// gets claims/<h(a)>. A pin is made inside its directory, so a directory holding one cannot be
// removed (rmdir fails ENOTEMPTY) or be replaced by a claim while the volume below exists.
// A volume's pins are created before its claim and removed after its directory left its place.

// claim records which volume owns a directory.
type claim struct {
	Name     string
	SubDir   string
	State    string // "pending" until mode and owner are applied, then "ready"
	Adopted  bool   // an existing directory taken over with reuseExisting (or a static volume's)
	Capacity int64
	// What the volume ID holds beyond the export, so ListVolumes can rebuild it exactly. Claims
	// written before ListVolumes lack these lines (HasID false); Create adds them on its next call.
	HasID     bool
	OnDelete  volume.OnDelete
	Retention time.Duration
	NFSVers   string
	Quota     string // the quota agent of a volume with enforced capacity
	Source    string // "snapshot:<id>" or "volume:<id>" when made from a content source
	// The parameters a repeated CreateVolume must match (HasParams false in older claims).
	HasParams bool
	Mode      os.FileMode
	UID, GID  int
	// Token names this claim's pins; empty in claims written before pins existed.
	Token string
	// Export is set, instead of Name, in the marker of another export's root at SubDir.
	Export string
}

const (
	claimMagic  = "paddock-claim v1"
	markerMagic = "paddock-export v1"
	pinMagic    = "paddock-pin v1"
	stateReady  = "ready"
)

// claimOf is the claim a new volume gets.
func claimOf(v volume.Volume, o CreateOptions) claim {
	c := claim{Name: v.Name, SubDir: v.SubDir, State: "pending", Capacity: o.Capacity, Token: newToken()}
	c.setID(v)
	c.setParams(o)
	return c
}

func (c *claim) setID(v volume.Volume) {
	c.HasID, c.OnDelete, c.Retention, c.NFSVers, c.Quota = true, v.OnDelete, v.ArchiveRetention, v.NFSVers, v.QuotaAgent
}

func (c *claim) setParams(o CreateOptions) {
	c.HasParams, c.Mode, c.UID, c.GID = true, modeBits(o.Mode), o.UID, o.GID
	c.Source = o.sourceString()
}

// differs says how a repeated Create's arguments differ from the volume's (CSI ALREADY_EXISTS), or "".
func (c claim) differs(v volume.Volume, o CreateOptions) string {
	switch {
	case c.HasID && c.Source != o.sourceString():
		return fmt.Sprintf("content source %q, not %q", c.Source, o.sourceString())
	case c.HasID && c.OnDelete != v.OnDelete:
		return fmt.Sprintf("onDelete %s, not %s", c.OnDelete, v.OnDelete)
	case c.HasID && c.Retention != v.ArchiveRetention:
		return fmt.Sprintf("archiveRetention %v, not %v", c.Retention, v.ArchiveRetention)
	case c.HasID && c.NFSVers != v.NFSVers:
		return fmt.Sprintf("nfsvers %q, not %q", c.NFSVers, v.NFSVers)
	case c.HasID && c.Quota != v.QuotaAgent:
		return fmt.Sprintf("quota agent %q, not %q", c.Quota, v.QuotaAgent)
	case c.HasParams && c.Mode != modeBits(o.Mode):
		return fmt.Sprintf("mode %v, not %v", c.Mode, modeBits(o.Mode))
	case c.HasParams && (c.UID != o.UID || c.GID != o.GID):
		return fmt.Sprintf("uid:gid %d:%d, not %d:%d", c.UID, c.GID, o.UID, o.GID)
	}
	return ""
}

func (c claim) isMarker() bool { return c.Export != "" }

func (c claim) owner() string {
	if c.isMarker() {
		return "the root of export " + c.Export
	}
	return "volume " + c.Name
}

func newToken() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// isTemp tells a temporary entry of the claims area (a claim being replaced), which nothing reads.
func isTemp(name string) bool {
	return strings.HasSuffix(name, ".tmp") || strings.Contains(name, ".tmp.")
}

func claimName(subDir string) string {
	sum := sha256.Sum256([]byte(subDir))
	return hex.EncodeToString(sum[:])
}

func claimPath(subDir string) string { return claimsDir + "/" + claimName(subDir) }

func (c claim) encode() []byte {
	if c.isMarker() {
		return []byte(fmt.Sprintf("%s\nsubdir=%s\nexport=%s\n", markerMagic, c.SubDir, c.Export))
	}
	s := fmt.Sprintf("%s\nname=%s\nsubdir=%s\nstate=%s\nadopted=%t\ncapacity=%d\n",
		claimMagic, c.Name, c.SubDir, c.State, c.Adopted, c.Capacity)
	if c.HasID {
		// Values are volume names, IDs and flags: none holds a newline.
		s += fmt.Sprintf("ondelete=%s\nretention=%d\nnfsvers=%s\nsource=%s\n",
			c.OnDelete, int64(c.Retention/time.Second), c.NFSVers, c.Source)
		if c.Quota != "" {
			s += "quota=" + c.Quota + "\n"
		}
	}
	if c.HasParams {
		s += fmt.Sprintf("mode=%o\nuid=%d\ngid=%d\n", volume.Octal(c.Mode), c.UID, c.GID)
	}
	if c.Token != "" {
		s += "token=" + c.Token + "\n"
	}
	return []byte(s)
}

func parseClaim(b []byte, subDir string) (claim, error) {
	var c claim
	marker := strings.HasPrefix(string(b), markerMagic+"\n")
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
		case "quota":
			c.Quota = v
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err == nil {
				c.HasParams, c.Mode = true, volume.FileMode(uint32(n))
			}
		case "uid":
			c.UID, _ = strconv.Atoi(v)
		case "gid":
			c.GID, _ = strconv.Atoi(v)
		case "token":
			c.Token = v
		case "export":
			if marker {
				c.Export = v
			}
		}
	}
	if marker && c.Export == "" || !marker && c.Name == "" || c.SubDir != subDir {
		return claim{}, fmt.Errorf("claim %s is corrupt", claimPath(subDir))
	}
	return c, nil
}

// errBelow is returned by the claim readers when the claim's name is a pin directory: volumes lie
// below the path, so it is not (and cannot become) a volume itself.
var errBelow = errors.New("other volumes lie below it")

// readClaimBytes reads the claim named file in the claims directory open as dfd.
func readClaimBytes(dfd int, file string) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, file, buf)
	if err == nil {
		return buf[:n], nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, &fs.PathError{Op: "readlink", Path: claimsDir + "/" + file, Err: err}
	}
	// A regular file (a claim written by an earlier release), or a pin directory, which another
	// controller may be removing right now: a pin directory gone between the readlink and the open or
	// the stat is no claim (ENOENT), never an error to remount for, and never read as a claim.
	gone := func(op string, err error) error {
		if errors.Is(err, unix.ESTALE) {
			err = unix.ENOENT
		}
		return &fs.PathError{Op: op, Path: claimsDir + "/" + file, Err: err}
	}
	fd, err := unix.Openat(dfd, file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, gone("open", err)
	}
	f := os.NewFile(uintptr(fd), file)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, gone("stat", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, errBelow
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if errors.Is(err, unix.EISDIR) {
		return nil, errBelow
	}
	if err != nil {
		return nil, gone("read", err)
	}
	return b, nil
}

// readClaim reads a claim through the export root (for calls that hold no metadata descriptors).
func readClaim(r *os.Root, subDir string) (claim, error) {
	d, err := r.Open(claimsDir)
	if err != nil {
		return claim{}, err
	}
	defer d.Close()
	b, err := readClaimBytes(int(d.Fd()), claimName(subDir))
	if err != nil {
		return claim{}, err
	}
	return parseClaim(b, subDir)
}

func (m *metaFDs) readClaim(subDir string) (claim, error) {
	b, err := readClaimBytes(m.claimsFD(), claimName(subDir))
	if err != nil {
		return claim{}, err
	}
	return parseClaim(b, subDir)
}

// createClaim writes a new claim, failing with fs.ErrExist if the name is taken (by a claim, a
// marker or a pin directory).
func (m *metaFDs) createClaim(c claim) error {
	return createClaimAt(m.claimsFD(), claimName(c.SubDir), c)
}

func createClaimAt(dfd int, name string, c claim) error {
	err := unix.Symlinkat(string(c.encode()), dfd, name)
	if errors.Is(err, unix.ENAMETOOLONG) {
		return createClaimFile(dfd, name, c)
	}
	if err != nil {
		return &fs.PathError{Op: "symlink", Path: claimsDir + "/" + name, Err: err}
	}
	return nil
}

// writeClaim replaces a claim atomically (a new symlink renamed over it), so a crash never leaves
// half a claim. It never replaces a pin directory: rename of a symlink over a directory fails.
func (m *metaFDs) writeClaim(c claim) error { return writeClaimAt(m.claimsFD(), c) }

func writeClaimAt(dfd int, c claim) error {
	name := claimName(c.SubDir)
	// A temporary name of this call's own: two controllers completing the same claim must not remove
	// or rename each other's. A crash leaves one behind, which nothing reads (".tmp." in the name).
	tmp := name + ".tmp." + newToken()
	err := unix.Symlinkat(string(c.encode()), dfd, tmp)
	if errors.Is(err, unix.ENAMETOOLONG) {
		_ = unix.Unlinkat(dfd, tmp, 0)
		if err := createClaimFile(dfd, tmp, c); err != nil {
			return err
		}
		err = nil
	}
	if err != nil {
		return &fs.PathError{Op: "symlink", Path: claimsDir + "/" + tmp, Err: err}
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return &fs.PathError{Op: "rename", Path: claimsDir + "/" + tmp, Err: err}
	}
	return nil
}

// createClaimFile is the fallback for a record too long for a symlink: a regular file, O_EXCL.
func createClaimFile(dfd int, name string, c claim) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &fs.PathError{Op: "create", Path: claimsDir + "/" + name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(c.encode())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeClaim removes a claim. unlink never removes a pin directory (EISDIR), which is left alone.
func (m *metaFDs) removeClaim(subDir string) error {
	name := claimName(subDir)
	err := unix.Unlinkat(m.claimsFD(), name, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &fs.PathError{Op: "remove", Path: claimsDir + "/" + name, Err: err}
	}
	return nil
}

// prefixes are the proper ancestors of subDir, outermost first ("a/b/c": "a", "a/b").
func prefixes(subDir string) []string {
	var out []string
	for i := 0; i < len(subDir); i++ {
		if subDir[i] == '/' {
			out = append(out, subDir[:i])
		}
	}
	return out
}

func pinName(c claim) string { return claimName(c.SubDir) + "." + c.Token }

// pin records c's volume below q. It fails with ErrConflict when q is a volume or an export root:
// c's directory would lie inside it.
func (m *metaFDs) pin(q string, c claim) error {
	dir := claimName(q)
	name := dir + "/" + pinName(c)
	target := fmt.Sprintf("%s\nname=%s\nsubdir=%s\n", pinMagic, c.Name, c.SubDir)
	for attempt := 0; attempt < 8; attempt++ {
		// The path resolves dir: if it is a claim (a symlink), its target, a record starting with
		// "paddock-claim", names nothing and the call fails ENOENT, never creating anything.
		err := unix.Symlinkat(target, m.claimsFD(), name)
		if err == nil || errors.Is(err, unix.EEXIST) {
			return nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return &fs.PathError{Op: "symlink", Path: claimsDir + "/" + name, Err: err}
		}
		var st unix.Stat_t
		err = unix.Fstatat(m.claimsFD(), dir, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT):
			if err := unix.Mkdirat(m.claimsFD(), dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				return &fs.PathError{Op: "mkdir", Path: claimsDir + "/" + dir, Err: err}
			}
		case err != nil:
			return &fs.PathError{Op: "stat", Path: claimsDir + "/" + dir, Err: err}
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			// Emptied and removed, then made again, between our calls: try again.
		default:
			owner := "a volume"
			if oc, err := m.readClaim(q); err == nil {
				owner = oc.owner()
			}
			return fmt.Errorf("%w: %q would be inside %q, which is %s", ErrConflict, c.SubDir, q, owner)
		}
	}
	return fmt.Errorf("pinning %q below %q: the claims area keeps changing; retry", c.SubDir, q)
}

// unpin removes c's pins, innermost first, and every pin directory it leaves empty. A directory
// that still holds pins stays (rmdir fails ENOTEMPTY); a claim is never removed (rmdir of a
// symlink fails ENOTDIR).
func (m *metaFDs) unpin(c claim) error {
	if c.Token == "" {
		return nil
	}
	ps := prefixes(c.SubDir)
	for i := len(ps) - 1; i >= 0; i-- {
		dir := claimName(ps[i])
		if err := unix.Unlinkat(m.claimsFD(), dir+"/"+pinName(c), 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return &fs.PathError{Op: "remove", Path: claimsDir + "/" + dir + "/" + pinName(c), Err: err}
		}
		_ = unix.Unlinkat(m.claimsFD(), dir, unix.AT_REMOVEDIR)
	}
	return nil
}

// reserve gives c's path its place in the tree: pins below every ancestor, then the claim. It
// returns fresh when this call wrote the claim. When the claim's name is already taken, it returns
// the claim there (existing, fresh false), ErrConflict for a pin directory (volumes below), and in
// every case of not-fresh it has removed the pins it made (they carry this call's token alone).
func (m *metaFDs) reserve(c claim) (fresh bool, existing claim, err error) {
	var pinned []string
	undo := func() {
		if len(pinned) > 0 {
			_ = m.unpin(claim{SubDir: c.SubDir, Token: c.Token})
		}
	}
	for _, q := range prefixes(c.SubDir) {
		if err := m.pin(q, c); err != nil {
			undo()
			return false, claim{}, err
		}
		pinned = append(pinned, q)
	}
	err = m.createClaim(c)
	if err == nil {
		return true, c, nil
	}
	undo()
	if !errors.Is(err, fs.ErrExist) {
		return false, claim{}, err
	}
	existing, err = m.readClaim(c.SubDir)
	if errors.Is(err, errBelow) {
		return false, claim{}, fmt.Errorf("%w: %q holds other volumes (%s)", ErrConflict, c.SubDir, m.someBelow(c.SubDir))
	}
	return false, existing, err
}

// someBelow names a volume pinned below subDir, for error messages.
func (m *metaFDs) someBelow(subDir string) string {
	fd, err := unix.Openat(m.claimsFD(), claimName(subDir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "unknown"
	}
	f := os.NewFile(uintptr(fd), "pins")
	defer f.Close()
	names, _ := f.Readdirnames(4)
	for _, n := range names {
		b, err := readlinkAt(fd, n)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(b, "\n") {
			if v, ok := strings.CutPrefix(line, "subdir="); ok {
				return "e.g. " + strconv.Quote(v)
			}
		}
	}
	return "unknown"
}

// markPath takes the cross-controller mark of an operation that moves or empties subDir's directory
// (Delete, Scrub): claims/<h(p)>.op, made with SYMLINK, so of two controllers only one holds it.
// Without it, a controller could read volume A's claim, another could delete A and create volume B at
// the same path, and the first would then move B's directory. With it, while the mark is held the
// claim can only be removed by its holder, so a claim read after taking the mark stays true. A mark
// older than stale is a crashed holder's and is taken over. It returns ErrInProgress when another
// call holds it.
func (m *metaFDs) markPath(subDir, holder string, now time.Time, stale time.Duration) (func(), error) {
	name := claimName(subDir) + ".op"
	// The holder's own stale age travels in the mark: a copy may hold it far longer than a delete.
	record := fmt.Sprintf("%s\nstale=%d\n", holder, int64(stale/time.Second))
	for attempt := 0; attempt < 2; attempt++ {
		err := unix.Symlinkat(record, m.claimsFD(), name)
		if err == nil {
			return func() { _ = unix.Unlinkat(m.claimsFD(), name, 0) }, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, &fs.PathError{Op: "symlink", Path: claimsDir + "/" + name, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstatat(m.claimsFD(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // released meanwhile
		}
		limit := stale
		if t, err := readlinkAt(m.claimsFD(), name); err == nil {
			for _, line := range strings.Split(t, "\n") {
				if v, ok := strings.CutPrefix(line, "stale="); ok {
					if n, err := strconv.ParseInt(v, 10, 64); err == nil && time.Duration(n)*time.Second > limit {
						limit = time.Duration(n) * time.Second
					}
				}
			}
		}
		if age := now.Sub(time.Unix(st.Ctim.Unix())); age < limit {
			return nil, fmt.Errorf("%w: another call is deleting, scrubbing or filling %q (for %v)", ErrInProgress, subDir, age.Round(time.Second))
		}
		_ = unix.Unlinkat(m.claimsFD(), name, 0) // a crashed holder's
	}
	return nil, fmt.Errorf("%w: %q: its operation mark keeps changing", ErrInProgress, subDir)
}

// sameClaim tells whether b is still the claim a was (same volume, same incarnation).
func sameClaim(a, b claim) bool {
	return a.Name == b.Name && a.Token == b.Token && a.Export == b.Export
}

// The name index: one entry per volume name, so a repeated Create of the same name with another
// subDir is recognised (ALREADY_EXISTS) instead of making a second directory.

func nameEntry(name string) string { return name }

// claimName records that name lives at subDir. It returns the subDir an earlier call recorded if it
// differs (the caller refuses), and whether this call made the entry.
func (m *metaFDs) claimVolumeName(name, subDir string) (other string, fresh bool, err error) {
	err = unix.Symlinkat("subdir="+subDir, m.namesFD(), nameEntry(name))
	if err == nil {
		return "", true, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return "", false, &fs.PathError{Op: "symlink", Path: namesDir + "/" + name, Err: err}
	}
	t, err := readlinkAt(m.namesFD(), nameEntry(name))
	if err != nil {
		return "", false, &fs.PathError{Op: "readlink", Path: namesDir + "/" + name, Err: err}
	}
	if got := strings.TrimPrefix(t, "subdir="); got != subDir {
		return got, false, nil
	}
	return "", false, nil
}

// replaceVolumeName points name's entry at subDir (a stale entry, left by a create that stopped
// before its claim).
func (m *metaFDs) replaceVolumeName(name, subDir string) error {
	tmp := nameEntry(name) + ".tmp." + newToken()
	_ = unix.Unlinkat(m.namesFD(), tmp, 0)
	if err := unix.Symlinkat("subdir="+subDir, m.namesFD(), tmp); err != nil {
		return &fs.PathError{Op: "symlink", Path: namesDir + "/" + tmp, Err: err}
	}
	if err := unix.Renameat(m.namesFD(), tmp, m.namesFD(), nameEntry(name)); err != nil {
		return &fs.PathError{Op: "rename", Path: namesDir + "/" + tmp, Err: err}
	}
	return nil
}

// forgetVolumeName removes name's entry (Delete, once the volume's claim is gone: the entry can only
// name this volume, as a Create of the name elsewhere is refused while the entry exists).
func (m *metaFDs) forgetVolumeName(name string) {
	_ = unix.Unlinkat(m.namesFD(), nameEntry(name), 0)
}

// releaseVolumeName removes name's entry if it names subDir.
func (m *metaFDs) releaseVolumeName(name, subDir string) {
	if t, err := readlinkAt(m.namesFD(), nameEntry(name)); err == nil && t == "subdir="+subDir {
		_ = unix.Unlinkat(m.namesFD(), nameEntry(name), 0)
	}
}

// claimFor reads v's claim; no claim, or a claim of another volume, is ErrNotFound (for v, the
// directory is not there).
func claimFor(r *os.Root, v volume.Volume) (claim, error) {
	c, err := readClaim(r, v.SubDir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errBelow) {
		return claim{}, fmt.Errorf("%w: %q has no claim for volume %s", ErrNotFound, v.SubDir, v.Name)
	}
	if err != nil {
		return claim{}, err
	}
	if c.Name != v.Name {
		return claim{}, fmt.Errorf("%w: %q is owned by %s, not volume %s", ErrNotFound, v.SubDir, c.owner(), v.Name)
	}
	return c, nil
}

// ownedDir checks that v's directory exists, is a real directory and is claimed by v; with ready,
// also that its creation finished (a copy source must be complete).
func ownedDir(r *os.Root, v volume.Volume, ready bool) error {
	c, err := claimFor(r, v)
	if err != nil {
		return err
	}
	if ready && c.State != stateReady {
		return fmt.Errorf("%w: volume %s is still being created", ErrNotFound, v.Name)
	}
	_, err = realDir(r, v.SubDir)
	return err
}

// realDir looks at subDir without following it: ErrNotFound when it is missing, ErrNotDir when it is
// not a real directory.
func realDir(r *os.Root, subDir string) (fs.FileInfo, error) {
	fi, err := r.Lstat(subDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, subDir)
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%q: %w", subDir, ErrNotDir)
	}
	return fi, nil
}

// checkParents refuses a directory whose existing parents are not real directories: a symlink among
// them could steer the volume onto another volume's data.
func checkParents(r *os.Root, subDir string) error {
	_, err := parentsExist(r, subDir)
	return err
}

// parentsExist is checkParents that also reports whether every parent exists already (then the
// volume's directory is one mkdir, with no MkdirAll of its parents).
func parentsExist(r *os.Root, subDir string) (bool, error) {
	for _, p := range prefixes(subDir) {
		fi, err := r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // the rest will be created
		}
		if err != nil {
			return false, err
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("parent %q of %q: %w (symlinks are not followed)", p, subDir, ErrNotDir)
		}
	}
	return true, nil
}

// checkNotExportRoot refuses a directory that is the root of another Paddock export (it holds a
// metadata area): taking it over would take that export's volumes with it.
func checkNotExportRoot(r *os.Root, subDir string) error {
	if _, err := r.Lstat(path.Join(subDir, volume.MetaDir)); err == nil {
		return fmt.Errorf("%w: %q is the root of another Paddock export (it holds %s)", ErrConflict, subDir, volume.MetaDir)
	} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return err
	}
	return nil
}

// checkNoLegacyBelow scans every claim for one below subDir. Pins make this unnecessary for volumes
// created by this release; claims without a token predate pins. O(volumes): only adopt and the first
// scrub of a static directory pay it.
func checkNoLegacyBelow(m *metaFDs, subDir string) error {
	fd, err := unix.Openat(m.claimsFD(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: claimsDir, Err: err}
	}
	d := os.NewFile(uintptr(fd), claimsDir)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if isTemp(n) {
			continue
		}
		b, err := readClaimBytes(fd, n)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "\nsubdir="+subDir+"/") {
			return fmt.Errorf("%w: %q contains other volumes", ErrConflict, subDir)
		}
	}
	return nil
}
