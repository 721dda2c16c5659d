package volume

import (
	"errors"
	"path"
	"strings"
	"testing"
	"time"
)

// checkVolumeSafe asserts the safety rules every decoded or built volume must meet.
func checkVolumeSafe(t *testing.T, v Volume) {
	t.Helper()
	if err := v.Validate(); err != nil {
		t.Fatalf("volume %+v does not validate: %v", v, err)
	}
	if err := ValidateSubDir(v.SubDir); err != nil {
		t.Fatalf("SubDir %q: %v", v.SubDir, err)
	}
	first, _, _ := strings.Cut(v.SubDir, "/")
	if strings.EqualFold(first, MetaDir) {
		t.Fatalf("SubDir %q is in the metadata area", v.SubDir)
	}
	joined := path.Join(v.Share, v.SubDir)
	prefix := v.Share + "/"
	if v.Share == "/" {
		prefix = "/"
	}
	if joined == v.Share || joined == path.Clean(v.Share) {
		t.Fatalf("path.Join(%q, %q) = %q is the export root", v.Share, v.SubDir, joined)
	}
	if !strings.HasPrefix(joined, prefix) {
		t.Fatalf("path.Join(%q, %q) = %q escapes the export", v.Share, v.SubDir, joined)
	}
	if joined != prefix+v.SubDir {
		t.Fatalf("path.Join(%q, %q) = %q: cleaning changed the path", v.Share, v.SubDir, joined)
	}
}

func FuzzParseID(f *testing.F) {
	for _, v := range roundTripVolumes() {
		f.Add(v.ID())
	}
	for _, s := range []string{
		"", "reallyfakevolumeid", "1", "1#", "1#d##10.0.0.5#/srv/nfs#pvc-1#", "1#d##10.0.0.5#/srv/nfs#pvc-1#..",
		"1#d##10.0.0.5#/srv/nfs#pvc-1#../x", "1#d##10.0.0.5#/#..#", "1#d##10.0.0.5#/#.paddock#",
		"1#d##10.0.0.5#/srv/nfs#pvc-1#.paddock/trash", "1#a060##s#/#n#", "1#a+60##s#/#n#", "1#a%2060##s#/#n#",
		"1#d##s#/#n#a b", "1#d##s#/#n#%G1", "1#d##s#/#n#%2", "1#d##s#/#n#%41", "1#d##s#/#n#%c3%a4",
		"1#d##[fe80::1%25eth0]#/#n#", "1#d##s#/#n#n", "1#r60##s#/#n#", "1#a9223372036854775807##s#/#n#",
		"1#d##s#/srv/.#n#", "1#d##s#/#.#", "1#d##s#/#n#./x", "1#d##s#/#n#x/.", "1#d#4.1#s#/#n#%23%25",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		v, err := ParseID(id)
		if err != nil {
			notOurs, malformed := errors.Is(err, ErrNotPaddockID), errors.Is(err, ErrMalformedID)
			if notOurs == malformed {
				t.Fatalf("ParseID(%q) = %v: want exactly one of ErrNotPaddockID, ErrMalformedID", id, err)
			}
			if notOurs != !strings.HasPrefix(id, IDVersion+"#") {
				t.Fatalf("ParseID(%q) = %v: ErrNotPaddockID is for strings without the version prefix", id, err)
			}
			if v != (Volume{}) {
				t.Fatalf("ParseID(%q) returned %+v with its error", id, v)
			}
			return
		}
		if again := v.ID(); again != id {
			t.Fatalf("ParseID(%q) = %+v, which encodes to %q: not canonical", id, v, again)
		}
		checkVolumeSafe(t, v)
	})
}

// FuzzVolumeID builds volumes field by field: every volume Validate accepts must survive the ID
// round trip unchanged, and every ID must be printable ASCII.
func FuzzVolumeID(f *testing.F) {
	for _, v := range roundTripVolumes() {
		f.Add(v.Server, v.Share, v.SubDir, v.Name, string(v.OnDelete), int64(v.ArchiveRetention), v.NFSVers)
	}
	f.Add("s", "/", "x", "n", "archive", int64(500*time.Millisecond), "")
	f.Add("s", "/", "n", "n", "delete", int64(time.Hour), "4")
	f.Add("s", "/", "n", "n", "archive", int64(101*year), "4")
	f.Fuzz(func(t *testing.T, server, share, subDir, name, onDelete string, retention int64, nfsvers string) {
		v := Volume{Server: server, Share: share, SubDir: subDir, Name: name, OnDelete: OnDelete(onDelete),
			ArchiveRetention: time.Duration(retention), NFSVers: nfsvers}
		id := v.ID()
		if v.Validate() != nil {
			if got, err := ParseID(id); err == nil && got == v {
				t.Fatalf("volume %+v does not validate, yet its ID %q decodes to it", v, id)
			}
			return
		}
		for i := 0; i < len(id); i++ {
			if id[i] < 0x21 || id[i] >= 0x7f {
				t.Fatalf("ID %q has byte %#x", id, id[i])
			}
		}
		got, err := ParseID(id)
		if err != nil {
			t.Fatalf("ParseID(%q) of a valid volume %+v = %v", id, v, err)
		}
		if got != v {
			t.Fatalf("ParseID(%q) = %+v, want %+v", id, got, v)
		}
		checkVolumeSafe(t, got)
	})
}

// literalSlashes counts the '/' in a template's literal text: the exact number of separators any
// expansion may have, since values can never add one.
func literalSlashes(tm Template) int {
	n := 0
	for _, s := range tm.segs {
		if s.kind == segLiteral {
			n += strings.Count(s.text, "/")
		}
	}
	return n
}

func FuzzTemplate(f *testing.F) {
	type seed struct {
		tmpl, pvc, ns, pv, label, ann string
		meta                          bool
	}
	for _, s := range []seed{
		{DefaultSubDir, "c", "ns", testUUIDName, "l", "a", false},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", "data", "team-a", "pvc-1", "", "", false},
		{"${pvc.metadata.labels['team']}/${pv.metadata.name}", "c", "ns", "pvc-1", "db", "x", true},
		{`${pvc.metadata.annotations["example.com/owner"]}-${pvc.metadata.name}`, "c", "ns", "pvc-1", "", "alice", true},
		{"${pvc.metadata.labels['a']}", "c", "ns", "p", "..", "", true},
		{"${pvc.metadata.labels['a']}", "c", "ns", "p", ".paddock", "", true},
		{".${pvc.metadata.labels['a']}", "c", "ns", "p", "paddock", "", true},
		{".${pvc.metadata.labels['a']}", "c", "ns", "p", "", "", true},
		{"x/${pvc.metadata.labels['a']}", "c", "ns", "p", "", "", true},
		{"${pvc.metadata.name}", "../../etc", "ns", "p", "", "", false},
		{"${pvc.metadata.name}", "a/b", "ns", "p", "", "", false},
		{"${pvc.metadata.name}", "a\x00b", "ns", "p", "", "", false},
		{"${pvc.metadata.name}", "a\nb", "ns", "p", "", "", false},
		{"${pvc.metadata.name}", strings.Repeat("v", 256), "ns", "p", "", "", false},
		{"${pvc.metadata.name}${pvc.metadata.name}", strings.Repeat("v", 200), "ns", "p", "", "", false},
		{"${pvc.metadata.name}/${pvc.metadata.namespace}", "", "", "p", "", "", false},
		{".paddock/x", "", "", "p", "", "", false},
		{"../x", "", "", "p", "", "", false},
		{"/x", "", "", "p", "", "", false},
		{"a//b", "", "", "p", "", "", false},
		{"${", "", "", "p", "", "", false},
		{"${pvc.metadata.labels[a]}", "", "", "p", "", "", true},
		{"", "", "", "p", "", "", false},
	} {
		f.Add(s.tmpl, s.pvc, s.ns, s.pv, s.label, s.ann, s.meta)
	}
	f.Fuzz(func(t *testing.T, tmpl, pvcName, pvcNamespace, pvName, labelVal, annVal string, withMeta bool) {
		tm, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		if tm.String() != tmpl {
			t.Fatalf("String() = %q, want %q", tm.String(), tmpl)
		}
		vars := TemplateVars{PVCName: pvcName, PVCNamespace: pvcNamespace, PVName: pvName}
		probe := TemplateVars{PVCName: "x", PVCNamespace: "x", PVName: "x"}
		if withMeta {
			vars.Labels, vars.Annotations = map[string]string{}, map[string]string{}
		}
		probe.Labels, probe.Annotations = map[string]string{}, map[string]string{}
		for _, s := range tm.segs {
			switch s.kind {
			case segLabel:
				if withMeta {
					vars.Labels[s.text] = labelVal
				}
				probe.Labels[s.text] = "x"
			case segAnnotation:
				if withMeta {
					vars.Annotations[s.text] = annVal
				}
				probe.Annotations[s.text] = "x"
			}
		}
		// A template that parses must expand when every value is plain.
		if _, err := tm.Expand(probe); err != nil {
			t.Fatalf("template %q parsed but does not expand with plain values: %v", tmpl, err)
		}
		out, err := tm.Expand(vars)
		if err != nil {
			if out != "" {
				t.Fatalf("Expand returned %q with error %v", out, err)
			}
			return
		}
		if err := ValidateSubDir(out); err != nil {
			t.Fatalf("template %q expanded to %q, which does not validate: %v", tmpl, out, err)
		}
		if got, want := strings.Count(out, "/"), literalSlashes(tm); got != want {
			t.Fatalf("template %q expanded to %q with %d separators, want %d: a value added components",
				tmpl, out, got, want)
		}
		v := Volume{Server: "10.0.0.5", Share: "/", SubDir: out, Name: "pvc-1", OnDelete: OnDeleteDelete}
		checkVolumeSafe(t, v)
	})
}

func FuzzParseParams(f *testing.F) {
	f.Add("10.0.0.5", "/srv/nfs", DefaultSubDir, "delete", "", "0777", "1000", "4.1", "claim", "ns")
	f.Add("[fd00::1]", "/", "${pvc.metadata.namespace}/${pvc.metadata.name}", "archive", "720h", "0", "0", "", "c", "n")
	f.Add("nfs", "/e", "x", "archive", "876001h", "7777", "2147483647", "3", "c", "n")
	f.Add("nfs", "/e", "x", "retain", "1s", "+7", "-1", "5", "", "")
	f.Add("nfs", "/e", "${pvc.metadata.name}", "archive", "1.5s", "10000", "x", "4", "..", "")
	f.Fuzz(func(t *testing.T, server, share, subDir, onDelete, retention, mode, uid, nfsvers, pvcName, pvcNS string) {
		m := map[string]string{ParamServer: server, ParamShare: share, ParamSubDir: subDir, ParamOnDelete: onDelete,
			ParamMode: mode, ParamUID: uid, ParamNFSVers: nfsvers, CSIPVCName: pvcName, CSIPVCNamespace: pvcNS}
		if retention != "" {
			m[ParamArchiveRetention] = retention
		}
		p, err := ParseParams(m)
		if err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Key == "" {
				t.Fatalf("ParseParams error %v is not a *ParamError with a key", err)
			}
			if _, ok := m[pe.Key]; !ok && pe.Key != ParamServer && pe.Key != ParamShare {
				t.Fatalf("ParamError names %q, which was not given", pe.Key)
			}
			return
		}
		if ValidateServer(p.Server) != nil || ValidateShare(p.Share) != nil {
			t.Fatalf("ParseParams accepted server %q share %q", p.Server, p.Share)
		}
		if p.Mode > 0o7777 || p.UID < -1 || p.GID < -1 {
			t.Fatalf("ParseParams accepted mode %#o uid %d gid %d", p.Mode, p.UID, p.GID)
		}
		if p.ArchiveRetention != 0 && p.OnDelete != OnDeleteArchive {
			t.Fatalf("retention %v with onDelete %q", p.ArchiveRetention, p.OnDelete)
		}
		v, err := p.Volume("pvc-1", TemplateVars{})
		if err != nil {
			return
		}
		checkVolumeSafe(t, v)
		got, err := ParseID(v.ID())
		if err != nil || got != v {
			t.Fatalf("volume %+v from params %v: ParseID(%q) = %+v, %v", v, m, v.ID(), got, err)
		}
	})
}

// FuzzParseIDFields reaches the field decoders directly: the fuzzer mutates each field of a
// seven-field ID on its own instead of having to discover the '#' structure.
func FuzzParseIDFields(f *testing.F) {
	f.Add("d", "", "10.0.0.5", "/srv/nfs", testUUIDName, "")
	f.Add("a720", "4.1", "[fe80::1%25eth0]", "/", "n%25", "a%23/%C3%A4")
	f.Add("a060", "4", "s", "/srv/nfs", "n", "..%2Fx")
	f.Add("r", "3", "s", "/", "..", "")
	f.Add("d", "", "s", "/", "n", ".paddock/trash")
	f.Add("d", "", "s", "/", "n", "n")
	f.Fuzz(func(t *testing.T, flags, nfsvers, server, share, name, subDir string) {
		id := strings.Join([]string{IDVersion, flags, nfsvers, server, share, name, subDir}, "#")
		v, err := ParseID(id)
		if err != nil {
			if !errors.Is(err, ErrMalformedID) || errors.Is(err, ErrNotPaddockID) {
				t.Fatalf("ParseID(%q) = %v, want ErrMalformedID only", id, err)
			}
			return
		}
		if again := v.ID(); again != id {
			t.Fatalf("ParseID(%q) = %+v, which encodes to %q: not canonical", id, v, again)
		}
		checkVolumeSafe(t, v)
	})
}
