package volume

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMountOptions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         []string
		vers       string
		node, ctrl []string
		err        string // substring of the error; "" = no error
	}{
		{name: "none", ctrl: []string{"nolock"}},
		{name: "version only", in: []string{"nfsvers=3"}, vers: "3", ctrl: []string{"nolock"}},
		{name: "vers spelling", in: []string{"vers=4.1"}, vers: "4.1", ctrl: []string{"nolock"}},
		{name: "comma-joined entry", in: []string{"nfsvers=4.2,hard, nconnect=4", "timeo=600"}, vers: "4.2",
			node: []string{"hard", "nconnect=4", "timeo=600"}, ctrl: []string{"hard", "nconnect=4", "nolock", "timeo=600"}},
		{name: "security and transport reach the controller", in: []string{"sec=krb5p", "xprtsec=mtls", "port=2049", "proto=tcp"},
			node: []string{"sec=krb5p", "xprtsec=mtls", "port=2049", "proto=tcp"},
			ctrl: []string{"nolock", "port=2049", "proto=tcp", "sec=krb5p", "xprtsec=mtls"}},
		{name: "node-only options stay on the node", in: []string{"ro", "noexec", "nosuid", "noatime", "context=system_u:object_r:nfs_t:s0", "fsc", "_netdev"},
			node: []string{"ro", "noexec", "nosuid", "noatime", "context=system_u:object_r:nfs_t:s0", "fsc", "_netdev"}, ctrl: []string{"nolock"}},
		{name: "the class's lock choice is the node's only", in: []string{"nfsvers=3", "lock", "local_lock=none"}, vers: "3",
			node: []string{"lock", "local_lock=none"}, ctrl: []string{"nolock"}},
		{name: "duplicates and order do not matter to the controller", in: []string{"soft", "nconnect=2", "soft"},
			node: []string{"soft", "nconnect=2", "soft"}, ctrl: []string{"nconnect=2", "nolock", "soft"}},
		{name: "same version twice", in: []string{"nfsvers=4.1", "vers=4.1"}, vers: "4.1", ctrl: []string{"nolock"}},
		{name: "two versions", in: []string{"nfsvers=3", "vers=4.1"}, err: `NFS version given twice, "3" and "4.1"`},
		{name: "bad version", in: []string{"nfsvers=2"}, err: `option "nfsvers=2": "2" is not one of`},
		{name: "version without value", in: []string{"vers"}, err: `option "vers" has no version`},
		{name: "background mount", in: []string{"bg"}, err: `option "bg" is refused: a background mount returns before`},
		{name: "bind", in: []string{"hard,bind"}, err: `option "bind" is refused`},
		{name: "space inside", in: []string{"sec=sys hard"}, err: `option "sec=sys hard" holds a space`},
		{name: "newline inside", in: []string{"hard\nsoft"}, err: "holds a space or control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMountOptions(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "mountOptions: ") {
					t.Fatalf("error %v, want one starting with mountOptions: and containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Vers != tc.vers || !slices.Equal(m.Node, tc.node) || !slices.Equal(m.Controller, tc.ctrl) {
				t.Fatalf("got vers %q node %q controller %q, want %q %q %q", m.Vers, m.Node, m.Controller, tc.vers, tc.node, tc.ctrl)
			}
		})
	}
}

// FuzzParseMountOptions: whatever a class holds, the controller's set is canonical (sorted, unique,
// with nolock, no version or lock choice, no node-only or refused option), and parsing it again gives
// the same set.
func FuzzParseMountOptions(f *testing.F) {
	for _, s := range []string{"", "nfsvers=3", "ro,noexec", "hard,nconnect=4,sec=krb5", "lock,local_lock=all", "bg", "vers=4.1,,", "x-foo=1,context=a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMountOptions(strings.Split(s, ";"))
		if err != nil {
			if !strings.HasPrefix(err.Error(), MountOptionsField+": ") {
				t.Fatalf("error %q does not name the field", err)
			}
			return
		}
		if !slices.IsSorted(m.Controller) || len(slices.Compact(slices.Clone(m.Controller))) != len(m.Controller) {
			t.Fatalf("controller options %q not canonical", m.Controller)
		}
		if !slices.Contains(m.Controller, "nolock") {
			t.Fatalf("controller options %q lack nolock", m.Controller)
		}
		for _, o := range append(slices.Clone(m.Controller), m.Node...) {
			k, _, _ := strings.Cut(o, "=")
			if o == "" || strings.ContainsAny(o, ", \t\n") || k == "vers" || k == "nfsvers" || refusedOptions[o] != "" {
				t.Fatalf("option %q should not be here (node %q controller %q)", o, m.Node, m.Controller)
			}
			if slices.Contains(m.Controller, o) && (nodeOnlyOptions[o] || k == "lock" || k == "local_lock") {
				t.Fatalf("node-only option %q reached the controller", o)
			}
		}
		again, err := ParseMountOptions(m.Controller)
		if err != nil || !slices.Equal(again.Controller, m.Controller) {
			t.Fatalf("controller options %q parse again to %q, %v", m.Controller, again.Controller, err)
		}
	})
}
