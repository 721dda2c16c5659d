package volume

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// GroupSnapshotIDVersion starts every group snapshot ID; neither a volume ID ("1#") nor a snapshot
// ID ("1s#") starts with it, so one given for another is "never issued" and touches nothing.
const GroupSnapshotIDVersion = "1g"

// ErrNotGroupSnapshotID marks a string that was never a Paddock group snapshot ID.
var ErrNotGroupSnapshotID = errors.New("not a Paddock group snapshot ID")

// groupKeyLen is the length of a group key: 26 base32 characters (130 bits) of the SHA-256 of the
// group snapshot's name.
const groupKeyLen = 26

// memberPrefix starts the name of every snapshot that belongs to a group: "g-<key>-<member hash>".
const memberPrefix = "g-"

// memberHashLen is the length of the member part: 16 base32 characters of the source volume ID's
// SHA-256.
const memberHashLen = 16

// GroupSnapshot names a group snapshot: a set of ordinary snapshots on one export whose names are
// "g-<Key>-<hash of the source volume ID>". The group has no record of its own; its members are found
// by that prefix, and each member's record holds its source volume, like any snapshot.
type GroupSnapshot struct {
	Server  string
	Share   string
	NFSVers string
	Key     string // groupKeyLen characters of [a-z2-7]
}

func hash32(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:n]
}

// GroupOf names the group snapshot called name of volumes on v's export (through v's mount).
func GroupOf(v Volume, name string) GroupSnapshot {
	return GroupSnapshot{Server: v.Server, Share: v.Share, NFSVers: v.NFSVers, Key: hash32(name, groupKeyLen)}
}

func validGroupKey(k string) error {
	if len(k) != groupKeyLen {
		return fmt.Errorf("group key %q: want %d characters", k, groupKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z') && !(c >= '2' && c <= '7') {
			return fmt.Errorf("group key %q: bad character %q", k, c)
		}
	}
	return nil
}

// Validate checks every field.
func (g GroupSnapshot) Validate() error {
	if err := ValidateServer(g.Server); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := ValidateShare(g.Share); err != nil {
		return fmt.Errorf("share: %w", err)
	}
	if g.NFSVers != "" {
		if err := validateNFSVers(g.NFSVers); err != nil {
			return fmt.Errorf("nfsvers: %w", err)
		}
	}
	return validGroupKey(g.Key)
}

// ID encodes the group as 1g#<nfsvers>#<server>#<share>#<key>, escaped like volume IDs.
func (g GroupSnapshot) ID() string {
	fields := []string{GroupSnapshotIDVersion, g.NFSVers, g.Server, g.Share, g.Key}
	for i := range fields {
		fields[i] = escape(fields[i])
	}
	return strings.Join(fields, "#")
}

// ParseGroupSnapshotID decodes and validates a group snapshot ID: ErrNotGroupSnapshotID for strings
// that never were one, ErrMalformedID (wrapped) for ones that claim to be but are not safe. The key is
// a fixed-length base32 string, so no ID can name a path.
func ParseGroupSnapshotID(id string) (GroupSnapshot, error) {
	if !strings.HasPrefix(id, GroupSnapshotIDVersion+"#") {
		return GroupSnapshot{}, fmt.Errorf("%w: %q", ErrNotGroupSnapshotID, truncate(id))
	}
	fields := strings.Split(id, "#")
	if len(fields) != 5 {
		return GroupSnapshot{}, fmt.Errorf("%w: group snapshot ID has %d fields, want 5", ErrMalformedID, len(fields))
	}
	for i := range fields {
		f, err := unescape(fields[i])
		if err != nil {
			return GroupSnapshot{}, fmt.Errorf("%w: group snapshot ID field %d: %v", ErrMalformedID, i, err)
		}
		fields[i] = f
	}
	g := GroupSnapshot{NFSVers: fields[1], Server: fields[2], Share: fields[3], Key: fields[4]}
	if err := g.Validate(); err != nil {
		return GroupSnapshot{}, fmt.Errorf("%w: %v", ErrMalformedID, err)
	}
	return g, nil
}

// MemberName is the snapshot name of the group's member taken of the volume sourceID: 45 bytes of
// [a-z0-9-], a plain snapshot directory name.
func (g GroupSnapshot) MemberName(sourceID string) string {
	return memberPrefix + g.Key + "-" + hash32(sourceID, memberHashLen)
}

// IsMember tells whether a snapshot name (or directory) is one of this group's members.
func (g GroupSnapshot) IsMember(name string) bool {
	k, ok := GroupKeyOfMember(name)
	return ok && k == g.Key
}

// GroupKeyOfMember returns the group key of a member snapshot's name; ok is false for a name that
// MemberName does not write.
func GroupKeyOfMember(name string) (key string, ok bool) {
	rest, found := strings.CutPrefix(name, memberPrefix)
	if !found || len(rest) != groupKeyLen+1+memberHashLen || rest[groupKeyLen] != '-' {
		return "", false
	}
	key, member := rest[:groupKeyLen], rest[groupKeyLen+1:]
	if validGroupKey(key) != nil {
		return "", false
	}
	for i := 0; i < len(member); i++ {
		if c := member[i]; !(c >= 'a' && c <= 'z') && !(c >= '2' && c <= '7') {
			return "", false
		}
	}
	return key, true
}

// GroupOfSnapshot names the group a member snapshot belongs to; ok is false for an ordinary snapshot.
func GroupOfSnapshot(s Snapshot) (GroupSnapshot, bool) {
	k, ok := GroupKeyOfMember(s.Dir)
	if !ok {
		return GroupSnapshot{}, false
	}
	return GroupSnapshot{Server: s.Server, Share: s.Share, NFSVers: s.NFSVers, Key: k}, true
}
