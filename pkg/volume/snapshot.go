package volume

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// SnapshotIDVersion starts every snapshot ID. It is not a volume ID's prefix ("1#"), so a snapshot ID
// given as a volume ID (or the reverse) is "never issued" and touches nothing.
const SnapshotIDVersion = "1s"

// ErrNotSnapshotID marks a string that was never a Paddock snapshot ID.
var ErrNotSnapshotID = errors.New("not a Paddock snapshot ID")

// MaxSnapshotDir bounds a snapshot directory name; longer snapshot names are hashed, so an ID for a
// 128-byte snapshot name still fits CSI's 128-byte limit on a short server and export.
const MaxSnapshotDir = 64

// Snapshot names a snapshot on an export: the copy lives in <export>/.paddock/snapshots/<Dir>. The
// source volume ID, name and creation time are recorded beside the copy, not in the ID, which would
// otherwise carry the export twice and overflow CSI's 128 bytes.
type Snapshot struct {
	Server  string
	Share   string
	NFSVers string // the mount the snapshot was taken through (that of its source volume)
	Dir     string // one path component inside .paddock/snapshots, see SnapshotDir
}

// SnapshotDir maps a CSI snapshot name to its directory name: the name itself when it is short and
// made of [A-Za-z0-9._-] starting with a letter or digit (every Kubernetes snapshot-<uid>), else "~"
// and 26 base32 characters of its SHA-256. A direct name never starts with '~', so the two forms never
// meet; the full name is recorded with the snapshot, so a hash collision is detected, not shared.
func SnapshotDir(name string) string {
	if plainSnapshotDir(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "~" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:26]
}

func plainSnapshotDir(s string) bool {
	if s == "" || len(s) > MaxSnapshotDir || !isAlnumByte(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnumByte(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnumByte(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// ValidateSnapshotDir checks a directory name decoded from an ID: one of the two forms SnapshotDir
// writes, so a forged ID can never name "..", the trash, a path with '/' or anything outside
// .paddock/snapshots.
func ValidateSnapshotDir(d string) error {
	if plainSnapshotDir(d) {
		if d == "." || d == ".." { // unreachable (must start alnum), kept as a belt to the braces
			return fmt.Errorf("snapshot directory %q is not allowed", d)
		}
		return nil
	}
	if len(d) == 27 && d[0] == '~' {
		for i := 1; i < len(d); i++ {
			if c := d[i]; !(c >= 'a' && c <= 'z') && !(c >= '2' && c <= '7') {
				return fmt.Errorf("snapshot directory %q: bad hash character %q", d, c)
			}
		}
		return nil
	}
	return fmt.Errorf("snapshot directory %q is not a name Paddock writes", d)
}

// Validate checks every field.
func (s Snapshot) Validate() error {
	if err := ValidateServer(s.Server); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := ValidateShare(s.Share); err != nil {
		return fmt.Errorf("share: %w", err)
	}
	if s.NFSVers != "" {
		if err := validateNFSVers(s.NFSVers); err != nil {
			return fmt.Errorf("nfsvers: %w", err)
		}
	}
	return ValidateSnapshotDir(s.Dir)
}

// ID encodes the snapshot as 1s#<nfsvers>#<server>#<share>#<dir>, escaped like volume IDs.
func (s Snapshot) ID() string {
	fields := []string{SnapshotIDVersion, s.NFSVers, s.Server, s.Share, s.Dir}
	for i := range fields {
		fields[i] = escape(fields[i])
	}
	return strings.Join(fields, "#")
}

// ParseSnapshotID decodes and validates a snapshot ID: ErrNotSnapshotID for strings that never were
// one, ErrMalformedID (wrapped) for ones that claim to be but are not safe.
func ParseSnapshotID(id string) (Snapshot, error) {
	if !strings.HasPrefix(id, SnapshotIDVersion+"#") {
		return Snapshot{}, fmt.Errorf("%w: %q", ErrNotSnapshotID, truncate(id))
	}
	fields := strings.Split(id, "#")
	if len(fields) != 5 {
		return Snapshot{}, fmt.Errorf("%w: snapshot ID has %d fields, want 5", ErrMalformedID, len(fields))
	}
	for i := range fields {
		f, err := unescape(fields[i])
		if err != nil {
			return Snapshot{}, fmt.Errorf("%w: snapshot ID field %d: %v", ErrMalformedID, i, err)
		}
		fields[i] = f
	}
	s := Snapshot{NFSVers: fields[1], Server: fields[2], Share: fields[3], Dir: fields[4]}
	if err := s.Validate(); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrMalformedID, err)
	}
	return s, nil
}

// SnapshotOf names the snapshot called name of volume v: on v's export, through v's mount.
func SnapshotOf(v Volume, name string) Snapshot {
	return Snapshot{Server: v.Server, Share: v.Share, NFSVers: v.NFSVers, Dir: SnapshotDir(name)}
}
