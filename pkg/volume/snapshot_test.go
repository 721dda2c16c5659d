package volume

import (
	"errors"
	"strings"
	"testing"
)

func TestSnapshotDir(t *testing.T) {
	for _, tc := range []struct {
		name   string
		direct bool
	}{
		{"snapshot-0b7d2c9e-6a55-4b43-9f0e-2f7d7c3f1a10", true},
		{"a", true},
		{"Snap_1.v2", true},
		{strings.Repeat("a", MaxSnapshotDir), true},
		{strings.Repeat("a", MaxSnapshotDir+1), false},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"-dash", false},
		{"~abc", false},
		{"a/b", false},
		{"a b", false},
		{"a#b", false},
		{"ä", false},
		{strings.Repeat("x", 128), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := SnapshotDir(tc.name)
			if (d == tc.name) != tc.direct {
				t.Fatalf("SnapshotDir(%q) = %q, want direct=%t", tc.name, d, tc.direct)
			}
			if err := ValidateSnapshotDir(d); err != nil {
				t.Fatalf("SnapshotDir(%q) = %q does not validate: %v", tc.name, d, err)
			}
			if !tc.direct && (len(d) != 27 || d[0] != '~') {
				t.Fatalf("SnapshotDir(%q) = %q, want ~ and 26 hash characters", tc.name, d)
			}
		})
	}
	if SnapshotDir("x y") == SnapshotDir("x z") {
		t.Fatal("different names hash to the same directory")
	}
}

func ordinarySnapshot() Snapshot {
	return Snapshot{Server: "10.0.0.5", Share: "/srv/nfs", Dir: "snapshot-0b7d2c9e-6a55-4b43-9f0e-2f7d7c3f1a10"}
}

func TestSnapshotIDRoundTrip(t *testing.T) {
	ord := ordinarySnapshot()
	for name, s := range map[string]Snapshot{
		"ordinary":  ord,
		"nfsvers":   {Server: ord.Server, Share: ord.Share, NFSVers: "4.1", Dir: ord.Dir},
		"hashed":    {Server: ord.Server, Share: ord.Share, Dir: SnapshotDir(strings.Repeat("n", 128))},
		"root":      {Server: "nfs.example.com", Share: "/", Dir: "s"},
		"ipv6":      {Server: "[fd00::1]", Share: "/a b", Dir: "s"},
		"escape":    {Server: "h", Share: "/x#%y", Dir: "s"},
		"max share": {Server: "h", Share: "/" + strings.Repeat("z", 200), Dir: "s"},
	} {
		t.Run(name, func(t *testing.T) {
			id := s.ID()
			got, err := ParseSnapshotID(id)
			if err != nil {
				t.Fatalf("ParseSnapshotID(%q) = %v", id, err)
			}
			if got != s {
				t.Fatalf("round trip of %q: got %+v, want %+v", id, got, s)
			}
		})
	}
	// A Kubernetes snapshot of an ordinary volume stays far below CSI's 128 bytes.
	if id := ord.ID(); len(id) > 80 {
		t.Fatalf("ordinary snapshot ID %q is %d bytes", id, len(id))
	}
	if id := (Snapshot{Server: ord.Server, Share: ord.Share, Dir: SnapshotDir(strings.Repeat("n", 128))}).ID(); len(id) > 128 {
		t.Fatalf("snapshot ID for a 128-byte name is %d bytes", len(id))
	}
}

func TestParseSnapshotIDRefuses(t *testing.T) {
	for _, tc := range []struct {
		id       string
		notOurs  bool
		contains string
	}{
		{"", true, ""},
		{"reallyfakesnapshotid", true, ""},
		{"none-exist-id", true, ""},
		{"1#d##10.0.0.5#/srv/nfs#pvc-1#", true, ""}, // a volume ID
		{"1s", true, ""},
		{"1s#", false, "fields"},
		{"1s##10.0.0.5#/srv/nfs", false, "fields"},
		{"1s##10.0.0.5#/srv/nfs#s#x", false, "fields"},
		{"1s##10.0.0.5#/srv/nfs#", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#..", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#.", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#%2E%2E", false, "needless escape"},
		{"1s##10.0.0.5#/srv/nfs#../trash", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#a/b", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#%2F", false, "needless escape"},
		{"1s##10.0.0.5#/srv/nfs#.paddock", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#~AAAAAAAAAAAAAAAAAAAAAAAAAA", false, "hash"},
		{"1s##10.0.0.5#/srv/nfs#~aaaa", false, "not a name"},
		{"1s##10.0.0.5#/srv/nfs#" + strings.Repeat("a", 65), false, "not a name"},
		{"1s##10.0.0.5#srv/nfs#s", false, "share"},
		{"1s##10.0.0.5#/srv/../nfs#s", false, "share"},
		{"1s##10.0.0.5:2049#/srv/nfs#s", false, "server"},
		{"1s#5#10.0.0.5#/srv/nfs#s", false, "nfsvers"},
		{"1s##10.0.0.5#/srv/nfs#s%00", false, "not a name"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			_, err := ParseSnapshotID(tc.id)
			if err == nil {
				t.Fatalf("ParseSnapshotID(%q) succeeded", tc.id)
			}
			if errors.Is(err, ErrNotSnapshotID) != tc.notOurs || errors.Is(err, ErrMalformedID) == tc.notOurs {
				t.Fatalf("ParseSnapshotID(%q) = %v, want notOurs=%t", tc.id, err, tc.notOurs)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("ParseSnapshotID(%q) = %v, want it to mention %q", tc.id, err, tc.contains)
			}
		})
	}
}

func FuzzParseSnapshotID(f *testing.F) {
	f.Add(ordinarySnapshot().ID())
	f.Add(Snapshot{Server: "[fd00::1]", Share: "/", NFSVers: "4.2", Dir: SnapshotDir("x y")}.ID())
	for _, s := range []string{"", "1s#", "1s##h#/#..", "1s##h#/#.paddock", "1s##h#/#a%2Fb", "1s##h#/#~", "1#d##h#/#n#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		s, err := ParseSnapshotID(id)
		if err != nil {
			if errors.Is(err, ErrNotSnapshotID) == errors.Is(err, ErrMalformedID) {
				t.Fatalf("ParseSnapshotID(%q) = %v: want exactly one of ErrNotSnapshotID, ErrMalformedID", id, err)
			}
			return
		}
		if err := ValidateComponent(s.Dir); err != nil || strings.HasPrefix(s.Dir, ".") {
			t.Fatalf("ParseSnapshotID(%q): directory %q is not a safe single component", id, s.Dir)
		}
		if again := s.ID(); again != id {
			t.Fatalf("ParseSnapshotID(%q) re-encodes as %q: two IDs for one snapshot", id, again)
		}
	})
}
