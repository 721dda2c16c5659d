package volume

import (
	"strings"
	"testing"
)

func TestValidateServer(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// 4 labels of 63 bytes and 3 dots = 255 bytes; trimmed to 253 it is the longest legal name.
	longest := strings.Join([]string{label63, label63, label63, label63[:61]}, ".")
	if len(longest) != 253 {
		t.Fatalf("test setup: len(longest) = %d", len(longest))
	}
	tests := []struct {
		name   string
		server string
		ok     bool
	}{
		{"hostname", "nfs", true},
		{"fqdn", "nfs.example.com", true},
		{"hyphen inside label", "nfs-1.storage-net.example.com", true},
		{"underscore", "nfs_1.example.com", true},
		{"upper case", "NFS.Example.COM", true},
		{"digits only label", "10", true},
		{"ipv4", "10.0.0.5", true},
		{"ipv4 broadcast", "255.255.255.255", true},
		{"label of 63", label63 + ".example.com", true},
		{"253 bytes", longest, true},
		{"bracketed ipv6", "[fd00::1]", true},
		{"bracketed ipv6 any", "[::]", true},
		{"bracketed ipv6 full", "[2001:0db8:0000:0000:0000:ff00:0042:8329]", true},
		{"bracketed ipv6 mapped v4", "[::ffff:10.0.0.5]", true},
		{"bracketed ipv6 zone", "[fe80::1%eth0]", true},

		{"empty", "", false},
		{"bare ipv6", "fd00::1", false},
		{"bare ipv6 any", "::", false},
		{"ipv4 with port", "10.0.0.5:2049", false},
		{"hostname with port", "nfs.example.com:2049", false},
		{"bracketed ipv6 with port", "[fd00::1]:2049", false},
		{"unclosed bracket", "[fd00::1", false},
		{"empty brackets", "[]", false},
		{"brackets no colon", "[10.0.0.5]", false},
		{"brackets hostname", "[nfs]", false},
		{"bracketed garbage with colons", "[zz:zz]", false},
		{"bracketed too many groups", "[1:2:3:4:5:6:7:8:9]", false},
		{"bracketed two double colons", "[1::2::3]", false},
		{"bracketed slash", "[fd00::1/64]", false},
		{"bracketed space", "[fd00:: 1]", false},
		{"leading dot", ".example.com", false},
		{"trailing dot", "nfs.example.com.", false},
		{"double dot", "nfs..example.com", false},
		{"label starts with hyphen", "-nfs.example.com", false},
		{"label ends with hyphen", "nfs-.example.com", false},
		{"label of 64", label63 + "a.example.com", false},
		{"254 bytes", longest + "a", false},
		{"255 bytes", longest + "aa", false},
		{"overlong", strings.Repeat("a.", 200) + "a", false},
		{"slash", "nfs/x", false},
		{"space", "nfs example", false},
		{"hash", "nfs#1", false},
		{"percent", "nfs%41", false},
		{"at", "user@nfs", false},
		{"NUL", "nfs\x00", false},
		{"newline", "nfs\n", false},
		{"unicode", "nfs.exämple.com", false},
		{"comma list", "nfs1,nfs2", false},
		{"option injection", "nfs,vers=3", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateServer(tc.server)
			if tc.ok && err != nil {
				t.Errorf("ValidateServer(%q) = %v, want ok", tc.server, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("ValidateServer(%q) = nil, want an error", tc.server)
			}
		})
	}
}

func TestValidateShare(t *testing.T) {
	tests := []struct {
		name  string
		share string
		ok    bool
	}{
		{"pseudo-root", "/", true},
		{"ordinary", "/srv/nfs", true},
		{"one level", "/export", true},
		{"space and unicode", "/srv/nfs shares/dätä", true},
		{"hash and percent", "/srv/#1/100%", true},
		{"dot prefix", "/srv/.hidden", true},
		{"dot dot prefix", "/srv/..x", true},
		{"255-byte component", "/" + strings.Repeat("s", 255), true},

		{"empty", "", false},
		{"relative", "srv/nfs", false},
		{"dot relative", "./srv", false},
		{"dot dot", "/srv/..", false},
		{"dot dot middle", "/srv/../etc", false},
		{"dot dot root", "/..", false},
		{"trailing slash", "/a/", false},
		{"double slash", "/a//b", false},
		{"leading double slash", "//a", false},
		{"dot component", "/a/./b", false},
		{"trailing dot", "/a/.", false},
		{"NUL", "/srv/n\x00fs", false},
		{"newline", "/srv/nfs\n", false},
		{"tab", "/srv/\tnfs", false},
		{"DEL", "/srv/\x7f", false},
		{"escape", "/srv/\x1b[31m", false},
		{"256-byte component", "/" + strings.Repeat("s", 256), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateShare(tc.share)
			if tc.ok && err != nil {
				t.Errorf("ValidateShare(%q) = %v, want ok", tc.share, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("ValidateShare(%q) = nil, want an error", tc.share)
			}
		})
	}
}

func TestValidateSubDir(t *testing.T) {
	deep := strings.TrimSuffix(strings.Repeat("d/", MaxSubDirDepth), "/")
	tests := []struct {
		name string
		dir  string
		ok   bool
	}{
		{"single", "pvc-1", true},
		{"nested", "team-a/pvc-1", true},
		{"three levels", "ns/app/data", true},
		{"max depth", deep, true},
		{"255-byte component", strings.Repeat("c", 255), true},
		{"unicode", "dätä/ünïcødé", true},
		{"space hash percent", "a b/#1/50%", true},
		{"dot prefix not meta", ".hidden", true},
		{"dot dot prefix", "..x", true},
		{"triple dot", "...", true},
		{"paddock lookalike", "paddock", true},
		{"paddock suffix", ".paddock-x", true},
		// An inner export's metadata area (exports of one server may overlap): never a volume.
		{"paddock deeper", "a/.paddock", false},
		{"paddock deeper trash", "a/.paddock/trash", false},

		{"empty", "", false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"dot dot child", "../x", false},
		{"dot dot middle", "a/../b", false},
		{"dot dot end", "a/..", false},
		{"absolute", "/etc", false},
		{"root", "/", false},
		{"absolute nested", "/srv/nfs/x", false},
		{"meta", ".paddock", false},
		{"meta trash", ".paddock/trash", false},
		{"meta trash entry", ".paddock/trash/x", false},
		{"meta archive", ".paddock/archive/pvc-1", false},
		{"meta of an inner export", "inner/.paddock", false},
		{"inside the meta of an inner export", "inner/.PADDOCK/claims", false},
		{"meta-like name below", "inner/.paddock-x", true},
		{"meta upper case", ".PADDOCK", false},
		{"meta mixed case", ".Paddock/trash/x", false},
		{"trailing slash", "a/", false},
		{"leading dot slash", "./a", false},
		{"double slash", "a//b", false},
		{"dot component", "a/./b", false},
		{"256-byte component", strings.Repeat("c", 256), false},
		{"256-byte nested", "a/" + strings.Repeat("c", 256), false},
		{"too deep", deep + "/d", false},
		{"NUL", "a\x00b", false},
		{"NUL nested", "a/\x00", false},
		{"newline", "a\nb", false},
		{"carriage return", "a\r", false},
		{"tab", "a\tb", false},
		{"DEL", "a\x7f", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateSubDir(tc.dir)
			if tc.ok && err != nil {
				t.Errorf("ValidateSubDir(%q) = %v, want ok", tc.dir, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("ValidateSubDir(%q) = nil, want an error", tc.dir)
			}
		})
	}
}

func TestValidateComponent(t *testing.T) {
	for _, c := range []string{"a", "pvc-1", "...", ".a", strings.Repeat("x", 255), "ü", "a b", "#%"} {
		if err := ValidateComponent(c); err != nil {
			t.Errorf("ValidateComponent(%q) = %v, want ok", c, err)
		}
	}
	for _, c := range []string{"", ".", "..", "a/b", "/", "a\x00", "\x01", "\x1f", "\x7f", "\n", strings.Repeat("x", 256)} {
		if err := ValidateComponent(c); err == nil {
			t.Errorf("ValidateComponent(%q) = nil, want an error", c)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"pvc-0f8b2d1e-2c3a-4d5e-9f60-718293a4b5c6", "static", strings.Repeat("n", 128)} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", "a/b", "a\x00", "a\n", strings.Repeat("n", 129)} {
		if err := ValidateName(n); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", n)
		}
	}
}
