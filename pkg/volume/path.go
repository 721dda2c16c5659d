// Package volume is Paddock's pure model: volume IDs, StorageClass parameters, directory templates and
// access-mode rules. It does no I/O, so every rule that keeps data safe can be tested exhaustively here
// and every adapter (CSI, provisioner, reclaimer) maps into the same rules.
package volume

import (
	"fmt"
	"net/netip"
	"path"
	"strings"
)

// MetaDir is the metadata area at the root of every export Paddock uses: trash, archives and the
// ownership claims live there. No volume may be it or live under it.
const MetaDir = ".paddock"

// MaxComponent is the longest directory name most filesystems (and NFS servers) accept.
const MaxComponent = 255

// MaxSubDirDepth bounds how deep a template may nest a volume under the export.
const MaxSubDirDepth = 16

// ValidateComponent checks one path component that will be created on the server.
func ValidateComponent(c string) error {
	switch {
	case c == "":
		return fmt.Errorf("empty path component")
	case c == "." || c == "..":
		return fmt.Errorf("path component %q is not allowed", c)
	case len(c) > MaxComponent:
		return fmt.Errorf("path component %.32q... is %d bytes, longer than %d", c, len(c), MaxComponent)
	case strings.ContainsAny(c, "/\x00"):
		return fmt.Errorf("path component %q contains '/' or NUL", c)
	}
	for _, r := range c {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("path component %q contains a control character", c)
		}
	}
	return nil
}

// ValidateSubDir checks a volume directory relative to the export root. It must name a directory
// strictly inside the export, outside the metadata area, in canonical form (so two spellings can
// never name the same directory and slip past ownership checks).
func ValidateSubDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("directory is empty: a volume can never be the export root")
	}
	if strings.HasPrefix(dir, "/") {
		return fmt.Errorf("directory %q is absolute; it must be relative to the export", dir)
	}
	if path.Clean(dir) != dir {
		return fmt.Errorf("directory %q is not in canonical form (clean: %q)", dir, path.Clean(dir))
	}
	parts := strings.Split(dir, "/")
	if len(parts) > MaxSubDirDepth {
		return fmt.Errorf("directory %q has %d levels, more than %d", dir, len(parts), MaxSubDirDepth)
	}
	for _, p := range parts {
		if err := ValidateComponent(p); err != nil {
			return fmt.Errorf("directory %q: %w", dir, err)
		}
	}
	// EqualFold: on a case-insensitive export ".PADDOCK" is the metadata area too. Not only at the top:
	// "inner/.paddock" is the metadata area of an export whose root is "inner" (exports may overlap).
	for _, p := range parts {
		if strings.EqualFold(p, MetaDir) {
			return fmt.Errorf("directory %q is inside a Paddock metadata area %q", dir, MetaDir)
		}
	}
	return nil
}

// ValidateShare checks an export path: absolute and canonical. "/" is legitimate (an NFSv4 pseudo-root).
func ValidateShare(share string) error {
	if share == "" {
		return fmt.Errorf("export path is empty")
	}
	if !strings.HasPrefix(share, "/") {
		return fmt.Errorf("export path %q is not absolute", share)
	}
	if path.Clean(share) != share {
		return fmt.Errorf("export path %q is not in canonical form (clean: %q)", share, path.Clean(share))
	}
	if share == "/" {
		return nil
	}
	for _, p := range strings.Split(share[1:], "/") {
		if err := ValidateComponent(p); err != nil {
			return fmt.Errorf("export path %q: %w", share, err)
		}
	}
	return nil
}

// ValidateServer checks an NFS server address: a hostname, an IPv4 address or a bracketed IPv6 address.
func ValidateServer(s string) error {
	if s == "" {
		return fmt.Errorf("server is empty")
	}
	if len(s) > 253+2 || (len(s) > 253 && !strings.HasPrefix(s, "[")) {
		return fmt.Errorf("server %.32q... is longer than a hostname can be", s)
	}
	if strings.HasPrefix(s, "[") {
		if !strings.HasSuffix(s, "]") || len(s) < 4 {
			return fmt.Errorf("server %q: an IPv6 address must be written in brackets, like [fd00::1]", s)
		}
		inner := s[1 : len(s)-1]
		for _, r := range inner {
			if !(r == ':' || r == '.' || r == '%' || isHex(r) || isAlnum(r)) {
				return fmt.Errorf("server %q: %q is not allowed in an IPv6 address", s, r)
			}
		}
		if !strings.Contains(inner, ":") {
			return fmt.Errorf("server %q: not an IPv6 address", s)
		}
		if a, err := netip.ParseAddr(inner); err != nil || !a.Is6() {
			return fmt.Errorf("server %q: not an IPv6 address", s)
		}
		return nil
	}
	if strings.Contains(s, ":") {
		return fmt.Errorf("server %q: an IPv6 address must be written in brackets, like [fd00::1]; ports are not allowed", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("server %q: %q is not a valid hostname label", s, label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("server %q: label %q starts or ends with '-'", s, label)
		}
		for _, r := range label {
			if !(isAlnum(r) || r == '-' || r == '_') {
				return fmt.Errorf("server %q: %q is not allowed in a hostname", s, r)
			}
		}
	}
	return nil
}

func isHex(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F')
}

func isAlnum(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}
