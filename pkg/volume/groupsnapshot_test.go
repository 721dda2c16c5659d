package volume

import (
	"errors"
	"strings"
	"testing"
)

func TestGroupSnapshotIDRoundTrip(t *testing.T) {
	for _, v := range []Volume{
		{Server: "10.0.0.5", Share: "/srv/nfs", Name: "pvc-a", SubDir: "pvc-a", OnDelete: OnDeleteDelete},
		{Server: "[fd00::1]", Share: "/", NFSVers: "4.1", Name: "pvc-b", SubDir: "ns/pvc-b", OnDelete: OnDeleteRetain},
		{Server: "nfs.example", Share: "/ex#port %", NFSVers: "3", Name: "pvc-c", SubDir: "c", OnDelete: OnDeleteDelete},
	} {
		g := GroupOf(v, "groupsnapshot-0b7d2c9e-6a55-4b43-9f0e-2f7d7c3f1a10")
		id := g.ID()
		if len(id) > 128 && len(v.Server)+len(v.Share) < 40 {
			t.Errorf("ID %q is longer than CSI's 128 bytes", id)
		}
		got, err := ParseGroupSnapshotID(id)
		if err != nil || got != g {
			t.Fatalf("ParseGroupSnapshotID(%q) = %+v, %v; want %+v", id, got, err, g)
		}
		m := g.MemberName(v.ID())
		if !g.IsMember(m) || ValidateSnapshotDir(m) != nil || SnapshotDir(m) != m {
			t.Errorf("member name %q: member %t, plain dir %v", m, g.IsMember(m), ValidateSnapshotDir(m))
		}
		s := SnapshotOf(v, m)
		if back, ok := GroupOfSnapshot(s); !ok || back != g {
			t.Errorf("GroupOfSnapshot(%+v) = %+v, %t", s, back, ok)
		}
		if GroupOf(v, "other").IsMember(m) {
			t.Errorf("%q is a member of another group", m)
		}
	}
}

func TestParseGroupSnapshotIDRefuses(t *testing.T) {
	good := GroupOf(Volume{Server: "nfs", Share: "/srv"}, "g").ID()
	key := good[strings.LastIndex(good, "#")+1:]
	for _, tc := range []struct {
		id        string
		notIssued bool
	}{
		{"", true},
		{"fake-group-id", true},
		{"1#d##nfs#/srv#pvc#", true},          // a volume ID
		{"1s##nfs#/srv#snapshot-1", true},     // a snapshot ID
		{"1g##nfs#/srv", false},               // too few fields
		{"1g##nfs#/srv#" + key + "#x", false}, // too many
		{"1g##nfs#/srv#..", false},
		{"1g##nfs#/srv#../../etc", false},
		{"1g##nfs#/srv#" + key[:25], false},
		{"1g##nfs#/srv#" + strings.ToUpper(key), false},
		{"1g##nfs#/srv#" + key[:25] + "1", false}, // not base32
		{"1g##nfs#/srv#" + key[:25] + "%2F", false},
		{"1g##nfs#relative#" + key, false},
		{"1g##nfs#/srv/../etc#" + key, false},
		{"1g#9#nfs#/srv#" + key, false},
		{"1g##bad server#/srv#" + key, false},
		{"1g##nfs#/srv#" + key + "%00", false},
	} {
		_, err := ParseGroupSnapshotID(tc.id)
		switch {
		case err == nil:
			t.Errorf("ParseGroupSnapshotID(%q) accepted", tc.id)
		case tc.notIssued && !errors.Is(err, ErrNotGroupSnapshotID):
			t.Errorf("ParseGroupSnapshotID(%q) = %v, want ErrNotGroupSnapshotID", tc.id, err)
		case !tc.notIssued && !errors.Is(err, ErrMalformedID):
			t.Errorf("ParseGroupSnapshotID(%q) = %v, want ErrMalformedID", tc.id, err)
		}
	}
}

func TestGroupKeyOfMember(t *testing.T) {
	g := GroupOf(Volume{Server: "nfs", Share: "/srv"}, "g")
	m := g.MemberName("1#d##nfs#/srv#pvc#")
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{m, true},
		{"snapshot-1", false},
		{"g-", false},
		{m + "a", false},
		{m[:len(m)-1], false},
		{strings.Replace(m, "-", "_", 2), false},
		{strings.ToUpper(m), false},
		{"g-" + strings.Repeat("a", 26) + "-" + strings.Repeat("1", 16), false},
	} {
		if _, ok := GroupKeyOfMember(tc.name); ok != tc.ok {
			t.Errorf("GroupKeyOfMember(%q) ok=%t, want %t", tc.name, ok, tc.ok)
		}
	}
}

// FuzzParseGroupSnapshotID: whatever is accepted re-encodes to itself, and its key can only name a
// member directory inside .paddock/snapshots.
func FuzzParseGroupSnapshotID(f *testing.F) {
	f.Add(GroupOf(Volume{Server: "nfs", Share: "/srv", NFSVers: "4.1"}, "g").ID())
	f.Add("1g##nfs#/srv#..")
	f.Add("1g##nfs#/srv#aaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, id string) {
		g, err := ParseGroupSnapshotID(id)
		if err != nil {
			return
		}
		if g.ID() != id {
			t.Fatalf("ParseGroupSnapshotID(%q) = %+v, which encodes to %q", id, g, g.ID())
		}
		m := g.MemberName("x")
		if err := ValidateSnapshotDir(m); err != nil || strings.ContainsAny(m, "/.") {
			t.Fatalf("member %q of %q is not a plain directory name: %v", m, id, err)
		}
	})
}
