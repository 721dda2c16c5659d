package volume

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	testUUIDName = "pvc-0f8b2d1e-2c3a-4d5e-9f60-718293a4b5c6"
	year         = 365 * 24 * time.Hour
)

func ordinaryVolume() Volume {
	return Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: testUUIDName, Name: testUUIDName, OnDelete: OnDeleteDelete}
}

func roundTripVolumes() map[string]Volume {
	ord := ordinaryVolume()
	with := func(f func(v *Volume)) Volume {
		v := ord
		f(&v)
		return v
	}
	return map[string]Volume{
		"ordinary":           ord,
		"quota agent":        with(func(v *Volume) { v.QuotaAgent = "nfs.example.com:9820" }),
		"quota agent ipv6":   with(func(v *Volume) { v.QuotaAgent = "[fd00::1]:9820" }),
		"hostname":           with(func(v *Volume) { v.Server = "nfs.storage.example.com" }),
		"ipv6":               with(func(v *Volume) { v.Server = "[fd00::1]" }),
		"ipv6 zone":          with(func(v *Volume) { v.Server = "[fe80::1%eth0]" }),
		"pseudo-root share":  with(func(v *Volume) { v.Share = "/" }),
		"hash in share":      with(func(v *Volume) { v.Share = "/srv/#nfs#" }),
		"percent in share":   with(func(v *Volume) { v.Share = "/srv/100%/%41" }),
		"space in share":     with(func(v *Volume) { v.Share = "/srv/nfs share" }),
		"unicode in share":   with(func(v *Volume) { v.Share = "/srv/dätä/日本" }),
		"nested subDir":      with(func(v *Volume) { v.SubDir = "team-a/" + testUUIDName }),
		"deep subDir":        with(func(v *Volume) { v.SubDir = "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p" }),
		"hash in subDir":     with(func(v *Volume) { v.SubDir = "#/a#b/#" }),
		"percent in subDir":  with(func(v *Volume) { v.SubDir = "%/%25/%G1/%" }),
		"space in subDir":    with(func(v *Volume) { v.SubDir = "my data/ x " }),
		"unicode in subDir":  with(func(v *Volume) { v.SubDir = "ünï/cødé/🙂" }),
		"high bytes":         with(func(v *Volume) { v.SubDir = "\x80\xff\xfe" }),
		"subDir is name":     with(func(v *Volume) { v.SubDir = v.Name }),
		"subDir other":       with(func(v *Volume) { v.SubDir = "other" }),
		"subDir prefix name": with(func(v *Volume) { v.SubDir = v.Name + "/" + v.Name }),
		"name with hash":     with(func(v *Volume) { v.Name = "a#b"; v.SubDir = "a#b" }),
		"name with percent":  with(func(v *Volume) { v.Name = "100%"; v.SubDir = "x" }),
		"name 128 bytes":     with(func(v *Volume) { v.Name = strings.Repeat("n", 128); v.SubDir = v.Name }),
		"dot-prefixed name":  with(func(v *Volume) { v.Name = ".hidden"; v.SubDir = ".hidden" }),
		"archive":            with(func(v *Volume) { v.OnDelete = OnDeleteArchive }),
		"archive 30 days":    with(func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 720 * time.Hour }),
		"archive 1s":         with(func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = time.Second }),
		"archive 100 years":  with(func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 100 * year }),
		"retain":             with(func(v *Volume) { v.OnDelete = OnDeleteRetain }),
		"nfsvers 3":          with(func(v *Volume) { v.NFSVers = "3" }),
		"nfsvers 4":          with(func(v *Volume) { v.NFSVers = "4" }),
		"nfsvers 4.0":        with(func(v *Volume) { v.NFSVers = "4.0" }),
		"nfsvers 4.1":        with(func(v *Volume) { v.NFSVers = "4.1" }),
		"nfsvers 4.2":        with(func(v *Volume) { v.NFSVers = "4.2" }),
		"everything": {
			Server: "[2001:db8::42]", Share: "/exports/k8s #1", SubDir: "ns ü/#claim%", Name: "pvc-x",
			OnDelete: OnDeleteArchive, ArchiveRetention: 90 * 24 * time.Hour, NFSVers: "4.1",
		},
	}
}

func TestIDRoundTrip(t *testing.T) {
	for name, v := range roundTripVolumes() {
		t.Run(name, func(t *testing.T) {
			if err := v.Validate(); err != nil {
				t.Fatalf("test volume does not validate: %v", err)
			}
			id := v.ID()
			for i := 0; i < len(id); i++ {
				if id[i] < 0x21 || id[i] >= 0x7f {
					t.Fatalf("ID %q has unprintable byte %#x at %d", id, id[i], i)
				}
			}
			got, err := ParseID(id)
			if err != nil {
				t.Fatalf("ParseID(%q) = %v", id, err)
			}
			if got != v {
				t.Fatalf("ParseID(%q) = %+v, want %+v", id, got, v)
			}
			if again := got.ID(); again != id {
				t.Fatalf("re-encoded ID %q differs from %q", again, id)
			}
		})
	}
}

func TestIDCompactForm(t *testing.T) {
	v := ordinaryVolume()
	id := v.ID()
	want := "1#d##10.0.0.5#/srv/nfs#" + testUUIDName + "#"
	if id != want {
		t.Errorf("ID() = %q, want %q", id, want)
	}
	v.SubDir = "team/" + testUUIDName
	if id := v.ID(); !strings.HasSuffix(id, "#"+testUUIDName+"#team/"+testUUIDName) {
		t.Errorf("nested subDir ID = %q, want the subDir written out", id)
	}
}

func TestIDExactEncoding(t *testing.T) {
	tests := []struct {
		v    Volume
		want string
	}{
		{Volume{Server: "[fe80::1%eth0]", Share: "/a b", SubDir: "x#y", Name: "n", OnDelete: OnDeleteRetain, NFSVers: "3"},
			"1#r#3#[fe80::1%25eth0]#/a%20b#n#x%23y"},
		{Volume{Server: "s", Share: "/", SubDir: "ä", Name: "n", OnDelete: OnDeleteArchive, ArchiveRetention: 36 * time.Hour},
			"1#a129600##s#/#n#%C3%A4"},
	}
	for _, tc := range tests {
		if got := tc.v.ID(); got != tc.want {
			t.Errorf("ID() = %q, want %q", got, tc.want)
		}
	}
}

func TestIDLength(t *testing.T) {
	v := ordinaryVolume()
	id := v.ID()
	if len(id) >= 128 {
		t.Fatalf("ordinary ID %q is %d bytes, want < 128", id, len(id))
	}
	if len(id) != 64 {
		t.Errorf("ordinary ID %q is %d bytes; update this assertion deliberately if the format changes", id, len(id))
	}
	// The heavier ordinary variants stay under the limit too.
	for _, f := range []func(*Volume){
		func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 100 * year; v.NFSVers = "4.2" },
		func(v *Volume) { v.Server = "nfs.storage.example.com"; v.Share = "/exports/kubernetes" },
		func(v *Volume) { v.SubDir = "namespace-abc/" + testUUIDName },
	} {
		w := ordinaryVolume()
		f(&w)
		if id := w.ID(); len(id) >= 128 {
			t.Errorf("ID %q is %d bytes, want < 128", id, len(id))
		}
	}
}

func TestParseIDNotPaddock(t *testing.T) {
	for _, id := range []string{
		"", "reallyfakevolumeid", "1", "2#d##10.0.0.5#/srv/nfs#n#", "#1#d##s#/#n#", " 1#d##s#/#n#",
		"10.0.0.5#/srv/nfs#pvc-1##", "10.0.0.5/srv/nfs/pvc-1", "1%23d##s#/#n#", "01#d##s#/#n#",
	} {
		_, err := ParseID(id)
		if !errors.Is(err, ErrNotPaddockID) {
			t.Errorf("ParseID(%q) = %v, want ErrNotPaddockID", id, err)
		}
		if errors.Is(err, ErrMalformedID) {
			t.Errorf("ParseID(%q) = %v, is also ErrMalformedID", id, err)
		}
	}
}

func TestParseIDMalformed(t *testing.T) {
	const pre = "1#d##10.0.0.5#/srv/nfs#"
	tests := map[string]string{
		// field count
		"prefix only":      "1#",
		"two fields":       "1##",
		"six fields":       pre + "pvc-1",
		"eight fields":     pre + "pvc-1##",
		"eight fields sub": pre + "pvc-1#a#b",
		"many fields":      strings.Repeat("1#", 100),
		// escapes
		"bad hex":           pre + "pvc-1#%G1",
		"bad hex 2":         pre + "pvc-1#a%2G",
		"truncated escape":  pre + "pvc-1#a%2",
		"lone percent":      pre + "pvc-1#a%",
		"percent in name":   "1#d##10.0.0.5#/srv/nfs#%#",
		"needless A":        pre + "pvc-1#%41",
		"needless slash":    pre + "pvc-1#..%2Fx",
		"needless dot":      pre + "pvc-1#%2E%2E",
		"lowercase hex":     pre + "pvc-1#d%c3%a4t%c3%a4",
		"lowercase hex #":   pre + "pvc-1#a%2fb",
		"mixed case hex":    pre + "pvc-1#d%C3%a4",
		"signed hex":        pre + "pvc-1#a%+5",
		"escaped flag":      "1#%64##10.0.0.5#/srv/nfs#pvc-1#",
		"raw space":         pre + "pvc-1#a b",
		"raw unicode":       pre + "pvc-1#dätä",
		"raw space share":   "1#d##10.0.0.5#/srv/nfs share#pvc-1#",
		"raw tab":           pre + "pvc-1#a\tb",
		"raw space + esc":   pre + "pvc-1#a b%25",
		"raw high + esc":    pre + "pvc-1#\xff%25",
		"escaped NUL sub":   pre + "pvc-1#a%00b",
		"escaped NL sub":    pre + "pvc-1#a%0Ab",
		"escaped NUL name":  pre + "a%00#",
		"escaped NUL share": "1#d##10.0.0.5#/srv%00#pvc-1#",
		// hostile subDir
		"subDir dot dot":         pre + "pvc-1#..",
		"subDir dot dot child":   pre + "pvc-1#../x",
		"subDir dot dot deep":    pre + "pvc-1#../../../etc",
		"subDir inner dot dot":   pre + "pvc-1#a/../../x",
		"subDir dot":             pre + "pvc-1#.",
		"subDir absolute":        pre + "pvc-1#/etc",
		"subDir root":            pre + "pvc-1#/",
		"subDir meta":            pre + "pvc-1#.paddock",
		"subDir meta trash":      pre + "pvc-1#.paddock/trash",
		"subDir meta trash x":    pre + "pvc-1#.paddock/trash/x",
		"subDir meta upper":      pre + "pvc-1#.PADDOCK/trash",
		"subDir trailing slash":  pre + "pvc-1#a/",
		"subDir double slash":    pre + "pvc-1#a//b",
		"subDir dot component":   pre + "pvc-1#a/./b",
		"subDir 256 component":   pre + "pvc-1#" + strings.Repeat("c", 256),
		"subDir too deep":        pre + "pvc-1#" + strings.TrimSuffix(strings.Repeat("d/", 17), "/"),
		"subDir field equals nm": pre + "pvc-1#pvc-1",
		// empty-equals-name tricks: an empty subDir field means "the name", which must itself be safe
		"name dot dot":     pre + "..#",
		"name dot":         pre + ".#",
		"name meta":        pre + ".paddock#",
		"name empty":       pre + "#",
		"name empty sub":   pre + "#x",
		"name slash":       pre + "a/b#",
		"name slash sub":   pre + "a/b#x",
		"name absolute":    pre + "/etc#",
		"name 129 bytes":   pre + strings.Repeat("n", 129) + "#",
		"name meta nested": pre + ".paddock/trash#",
		// onDelete flags and retention
		"empty flag":             "1###10.0.0.5#/srv/nfs#pvc-1#",
		"unknown flag":           "1#x##10.0.0.5#/srv/nfs#pvc-1#",
		"upper flag":             "1#D##10.0.0.5#/srv/nfs#pvc-1#",
		"word flag":              "1#delete##10.0.0.5#/srv/nfs#pvc-1#",
		"double flag":            "1#dd##10.0.0.5#/srv/nfs#pvc-1#",
		"retention on delete":    "1#d60##10.0.0.5#/srv/nfs#pvc-1#",
		"retention on retain":    "1#r60##10.0.0.5#/srv/nfs#pvc-1#",
		"retention zero":         "1#a0##10.0.0.5#/srv/nfs#pvc-1#",
		"retention negative":     "1#a-60##10.0.0.5#/srv/nfs#pvc-1#",
		"retention plus":         "1#a+60##10.0.0.5#/srv/nfs#pvc-1#",
		"retention leading zero": "1#a060##10.0.0.5#/srv/nfs#pvc-1#",
		"retention hex":          "1#a0x3C##10.0.0.5#/srv/nfs#pvc-1#",
		"retention underscore":   "1#a6_0##10.0.0.5#/srv/nfs#pvc-1#",
		"retention unit":         "1#a60s##10.0.0.5#/srv/nfs#pvc-1#",
		"retention fraction":     "1#a1.5##10.0.0.5#/srv/nfs#pvc-1#",
		"retention over 100y":    "1#a3153600001##10.0.0.5#/srv/nfs#pvc-1#",
		"retention huge":         "1#a9223372036854775807##10.0.0.5#/srv/nfs#pvc-1#",
		"retention overflow":     "1#a99999999999999999999##10.0.0.5#/srv/nfs#pvc-1#",
		"retention escaped":      "1#a%2060##10.0.0.5#/srv/nfs#pvc-1#",
		// nfsvers
		"nfsvers 5":   "1#d#5#10.0.0.5#/srv/nfs#pvc-1#",
		"nfsvers v4":  "1#d#v4#10.0.0.5#/srv/nfs#pvc-1#",
		"nfsvers 4.3": "1#d#4.3#10.0.0.5#/srv/nfs#pvc-1#",
		"nfsvers opt": "1#d#4,ro#10.0.0.5#/srv/nfs#pvc-1#",
		// share
		"share relative":  "1#d##10.0.0.5#srv/nfs#pvc-1#",
		"share empty":     "1#d##10.0.0.5##pvc-1#",
		"share dot dot":   "1#d##10.0.0.5#/srv/..#pvc-1#",
		"share trailing":  "1#d##10.0.0.5#/srv/nfs/#pvc-1#",
		"share double":    "1#d##10.0.0.5#//srv#pvc-1#",
		"share dot":       "1#d##10.0.0.5#/srv/./nfs#pvc-1#",
		"share escaped /": "1#d##10.0.0.5#%2Fsrv#pvc-1#",
		// server
		"server empty":          "1#d###/srv/nfs#pvc-1#",
		"server port":           "1#d##10.0.0.5:2049#/srv/nfs#pvc-1#",
		"server bare ipv6":      "1#d##fd00::1#/srv/nfs#pvc-1#",
		"server ipv6 port":      "1#d##[fd00::1]:2049#/srv/nfs#pvc-1#",
		"server space":          "1#d##nfs%20x#/srv/nfs#pvc-1#",
		"server with share":     "1#d##10.0.0.5:/srv#/nfs#pvc-1#",
		"server mount option":   "1#d##10.0.0.5,vers=3#/srv/nfs#pvc-1#",
		"server bad label":      "1#d##-nfs#/srv/nfs#pvc-1#",
		"server zone raw pct":   "1#d##[fe80::1%eth0]#/srv/nfs#pvc-1#",
		"server zone lowercase": "1#d##[fe80::1%2feth0]#/srv/nfs#pvc-1#",
	}
	for name, id := range tests {
		t.Run(name, func(t *testing.T) {
			v, err := ParseID(id)
			if !errors.Is(err, ErrMalformedID) {
				t.Fatalf("ParseID(%q) = %+v, %v; want ErrMalformedID", id, v, err)
			}
			if errors.Is(err, ErrNotPaddockID) {
				t.Errorf("ParseID(%q) = %v, is also ErrNotPaddockID", id, err)
			}
			if v != (Volume{}) {
				t.Errorf("ParseID(%q) returned a non-zero volume %+v with its error", id, v)
			}
		})
	}
}

func TestParseIDAcceptsCanonicalForms(t *testing.T) {
	// Hand-written IDs that are canonical and safe, to pin the format down from the decoding side.
	tests := map[string]Volume{
		"1#d##10.0.0.5#/srv/nfs#pvc-1#": {Server: "10.0.0.5", Share: "/srv/nfs", Name: "pvc-1", SubDir: "pvc-1",
			OnDelete: OnDeleteDelete},
		"1#a86400#4.2#[fd00::1]#/#pvc-1#ns/claim": {Server: "[fd00::1]", Share: "/", Name: "pvc-1", SubDir: "ns/claim",
			OnDelete: OnDeleteArchive, ArchiveRetention: 24 * time.Hour, NFSVers: "4.2"},
		"1#r##nfs#/e%20x#n%25#%23%C3%A4": {Server: "nfs", Share: "/e x", Name: "n%", SubDir: "#ä", OnDelete: OnDeleteRetain},
		"1#d##10.0.0.5#/srv/nfs#pvc-1#..x/...": {Server: "10.0.0.5", Share: "/srv/nfs", Name: "pvc-1", SubDir: "..x/...",
			OnDelete: OnDeleteDelete},
		"1#d##10.0.0.5#/srv/nfs#pvc-1#a/.paddock-x": {Server: "10.0.0.5", Share: "/srv/nfs", Name: "pvc-1", SubDir: "a/.paddock-x",
			OnDelete: OnDeleteDelete},
	}
	for id, want := range tests {
		got, err := ParseID(id)
		if err != nil {
			t.Errorf("ParseID(%q) = %v", id, err)
			continue
		}
		if got != want {
			t.Errorf("ParseID(%q) = %+v, want %+v", id, got, want)
		}
		if again := got.ID(); again != id {
			t.Errorf("ParseID(%q).ID() = %q, not canonical", id, again)
		}
	}
}

// TestValidateMatchesID checks that a volume Validate accepts always has an ID that ParseID gives back
// unchanged, and that Validate refuses what the ID cannot carry.
func TestValidateMatchesID(t *testing.T) {
	bad := map[string]func(*Volume){
		"retention on delete":  func(v *Volume) { v.ArchiveRetention = time.Hour },
		"retention on retain":  func(v *Volume) { v.OnDelete = OnDeleteRetain; v.ArchiveRetention = time.Hour },
		"sub-second retention": func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 500 * time.Millisecond },
		"fractional retention": func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 1500 * time.Millisecond },
		"negative retention":   func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = -time.Hour },
		"retention over 100y":  func(v *Volume) { v.OnDelete = OnDeleteArchive; v.ArchiveRetention = 100*year + time.Second },
		"unknown onDelete":     func(v *Volume) { v.OnDelete = "recycle" },
		"empty onDelete":       func(v *Volume) { v.OnDelete = "" },
		"bad nfsvers":          func(v *Volume) { v.NFSVers = "5" },
		"bad server":           func(v *Volume) { v.Server = "10.0.0.5:2049" },
		"bad share":            func(v *Volume) { v.Share = "srv" },
		"bad subDir":           func(v *Volume) { v.SubDir = "../x" },
		"meta subDir":          func(v *Volume) { v.SubDir = ".paddock/trash" },
		"empty subDir":         func(v *Volume) { v.SubDir = "" },
		"bad name":             func(v *Volume) { v.Name = "a/b" },
		"empty name":           func(v *Volume) { v.Name = "" },
	}
	for name, f := range bad {
		v := ordinaryVolume()
		f(&v)
		if err := v.Validate(); err == nil {
			t.Errorf("%s: Validate(%+v) = nil, want an error", name, v)
		}
		if got, err := ParseID(v.ID()); err == nil && got == v {
			t.Errorf("%s: ParseID(%q) accepted a volume Validate refuses", name, v.ID())
		}
	}
}

func TestParseIDErrorIsShort(t *testing.T) {
	long := strings.Repeat("x", 10000)
	for _, id := range []string{long, "1#" + long} {
		_, err := ParseID(id)
		if err == nil {
			t.Fatal("want an error")
		}
		if len(err.Error()) > 300 {
			t.Errorf("error for a %d-byte ID is %d bytes long", len(id), len(err.Error()))
		}
	}
}
