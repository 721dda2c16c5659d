package volume

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IDVersion is the first field of every volume ID this release writes.
const IDVersion = "1"

// ErrNotPaddockID marks a string that is not a Paddock volume ID at all (no version prefix): such a
// volume cannot exist, which the CSI spec treats differently from a malformed Paddock ID.
var ErrNotPaddockID = errors.New("not a Paddock volume ID")

// maxArchiveRetention bounds archive retention: beyond it "keep for ever" is what is meant.
const maxArchiveRetention = 100 * 365 * 24 * time.Hour

// ErrMalformedID marks a string that claims to be a Paddock volume ID but does not decode safely.
var ErrMalformedID = errors.New("malformed volume ID")

// OnDelete is what happens to a volume's directory when its volume is deleted.
type OnDelete string

const (
	OnDeleteDelete  OnDelete = "delete"
	OnDeleteArchive OnDelete = "archive"
	OnDeleteRetain  OnDelete = "retain"
)

var onDeleteCode = map[OnDelete]byte{OnDeleteDelete: 'd', OnDeleteArchive: 'a', OnDeleteRetain: 'r'}

// Volume is everything DeleteVolume and NodePublishVolume need, carried in the volume ID so the
// controller keeps no state of its own.
type Volume struct {
	Server   string // hostname, IPv4 or [IPv6]
	Share    string // absolute export path
	SubDir   string // directory relative to the export; never empty, never in MetaDir
	Name     string // the CSI volume name (PV name) that owns SubDir
	OnDelete OnDelete
	// ArchiveRetention, when non-zero with OnDeleteArchive, lets the reaper remove the archive later.
	ArchiveRetention time.Duration
	// NFSVers pins the protocol version the controller mounts the export with ("" = negotiate).
	NFSVers string
	// MountOptions is how the controller mounts the export (MountOptions.ControllerString of the
	// class's or PV's mountOptions). It is not part of the ID: "" means "as the export was last known
	// to be mounted" (share.Workspace keeps that).
	MountOptions string
	// QuotaAgent, when set, is the quota agent that enforces the volume's capacity (host:port).
	QuotaAgent string
}

// Validate checks every field with the same rules the parameters and templates use.
func (v Volume) Validate() error {
	if err := ValidateServer(v.Server); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := ValidateShare(v.Share); err != nil {
		return fmt.Errorf("share: %w", err)
	}
	if err := ValidateSubDir(v.SubDir); err != nil {
		return fmt.Errorf("subDir: %w", err)
	}
	if err := ValidateName(v.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if _, ok := onDeleteCode[v.OnDelete]; !ok {
		return fmt.Errorf("onDelete: %q is not one of delete, archive, retain", v.OnDelete)
	}
	if v.ArchiveRetention < 0 {
		return fmt.Errorf("archiveRetention: negative")
	}
	// The ID carries retention as whole seconds, only for archive, at most maxArchiveRetention: refuse
	// what it cannot carry, so every valid volume survives the round trip through its ID.
	if v.ArchiveRetention != 0 {
		switch {
		case v.OnDelete != OnDeleteArchive:
			return fmt.Errorf("archiveRetention: only meaningful with onDelete=archive")
		case v.ArchiveRetention%time.Second != 0:
			return fmt.Errorf("archiveRetention: %v is not a whole number of seconds", v.ArchiveRetention)
		case v.ArchiveRetention > maxArchiveRetention:
			return fmt.Errorf("archiveRetention: %v is longer than 100 years", v.ArchiveRetention)
		}
	}
	if v.NFSVers != "" {
		if err := validateNFSVers(v.NFSVers); err != nil {
			return fmt.Errorf("nfsvers: %w", err)
		}
	}
	if v.QuotaAgent != "" {
		if err := ValidateQuotaAgent(v.QuotaAgent); err != nil {
			return fmt.Errorf("quotaAgent: %w", err)
		}
	}
	return nil
}

// ValidateName checks a CSI volume name. It becomes part of trash and archive entry names, so it must
// be a single safe path component.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("volume name is empty")
	}
	if len(name) > 128 {
		return fmt.Errorf("volume name is %d bytes, longer than 128", len(name))
	}
	return ValidateComponent(name)
}

func validateNFSVers(v string) error {
	switch v {
	case "3", "4", "4.0", "4.1", "4.2":
		return nil
	}
	return fmt.Errorf("%q is not one of 3, 4, 4.0, 4.1, 4.2", v)
}

// ID encodes the volume as:
//
//	1#<onDelete>[<retention seconds>]#<nfsvers>#<server>#<share>#<name>#<subDir, empty when equal to name>[#<quota agent>]
//
// The quota agent's field is there only for a volume whose capacity is enforced, so every ID issued
// before quotas existed keeps its meaning.
//
// Fields are percent-escaped for '%', '#' and non-printable bytes only, so an ordinary volume
// (pvc-<uuid> on a short server and export) stays near 70 bytes, well under CSI's 128.
func (v Volume) ID() string {
	flags := string(onDeleteCode[v.OnDelete])
	if v.OnDelete == OnDeleteArchive && v.ArchiveRetention > 0 {
		flags += strconv.FormatInt(int64(v.ArchiveRetention/time.Second), 10)
	}
	sub := v.SubDir
	if sub == v.Name {
		sub = ""
	}
	fields := []string{IDVersion, flags, v.NFSVers, v.Server, v.Share, v.Name, sub}
	if v.QuotaAgent != "" {
		fields = append(fields, v.QuotaAgent)
	}
	for i := range fields {
		fields[i] = escape(fields[i])
	}
	return strings.Join(fields, "#")
}

// ParseID decodes and validates a volume ID. It returns ErrNotPaddockID for strings that were never
// Paddock IDs and ErrMalformedID (wrapped, with the reason) for ones that claim to be but are not safe.
func ParseID(id string) (Volume, error) {
	if !strings.HasPrefix(id, IDVersion+"#") {
		return Volume{}, fmt.Errorf("%w: %q", ErrNotPaddockID, truncate(id))
	}
	fields := strings.Split(id, "#")
	if len(fields) != 7 && len(fields) != 8 {
		return Volume{}, fmt.Errorf("%w: %d fields, want 7 (or 8 with a quota agent)", ErrMalformedID, len(fields))
	}
	for i := range fields {
		f, err := unescape(fields[i])
		if err != nil {
			return Volume{}, fmt.Errorf("%w: field %d: %v", ErrMalformedID, i, err)
		}
		fields[i] = f
	}
	v := Volume{NFSVers: fields[2], Server: fields[3], Share: fields[4], Name: fields[5], SubDir: fields[6]}
	if len(fields) == 8 {
		if fields[7] == "" {
			return Volume{}, fmt.Errorf("%w: empty quota agent field", ErrMalformedID)
		}
		v.QuotaAgent = fields[7]
	}
	flags := fields[1]
	if flags == "" {
		return Volume{}, fmt.Errorf("%w: empty onDelete flag", ErrMalformedID)
	}
	for od, c := range onDeleteCode {
		if flags[0] == c {
			v.OnDelete = od
		}
	}
	if v.OnDelete == "" {
		return Volume{}, fmt.Errorf("%w: unknown onDelete flag %q", ErrMalformedID, flags[:1])
	}
	if rest := flags[1:]; rest != "" {
		secs, err := strconv.ParseInt(rest, 10, 64)
		// FormatInt round trip: no sign, no leading zeros, so one canonical ID per volume.
		if err != nil || secs <= 0 || strconv.FormatInt(secs, 10) != rest || v.OnDelete != OnDeleteArchive ||
			secs > int64(maxArchiveRetention/time.Second) {
			return Volume{}, fmt.Errorf("%w: bad archive retention %q", ErrMalformedID, rest)
		}
		v.ArchiveRetention = time.Duration(secs) * time.Second
	}
	if fields[6] == "" {
		v.SubDir = v.Name
	} else if fields[6] == v.Name {
		// The encoder never writes this form; refusing it keeps one canonical ID per volume.
		return Volume{}, fmt.Errorf("%w: non-canonical subDir field", ErrMalformedID)
	}
	if err := v.Validate(); err != nil {
		return Volume{}, fmt.Errorf("%w: %v", ErrMalformedID, err)
	}
	return v, nil
}

// needsEscape tells which bytes the encoder escapes; the decoder refuses them raw.
func needsEscape(c byte) bool { return c == '%' || c == '#' || c < 0x21 || c >= 0x7f }

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			if needsEscape(s[i]) {
				// The encoder never writes these raw: accepting them would give a volume two IDs.
				return "", fmt.Errorf("unescaped byte %#x at byte %d", s[i], i)
			}
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape at byte %d", i)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] {
			return "", fmt.Errorf("bad escape %q", s[i:i+3])
		}
		c := byte(n)
		if !needsEscape(c) {
			return "", fmt.Errorf("needless escape %q", s[i:i+3])
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
