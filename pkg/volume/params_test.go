package volume

import (
	"errors"
	"maps"
	"os"
	"strings"
	"testing"
	"time"
)

func baseParams() map[string]string {
	return map[string]string{ParamServer: "10.0.0.5", ParamShare: "/srv/nfs"}
}

func withParams(kv ...string) map[string]string {
	m := baseParams()
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestParseParamsDefaults(t *testing.T) {
	p, err := ParseParams(baseParams())
	if err != nil {
		t.Fatal(err)
	}
	if p.Server != "10.0.0.5" || p.Share != "/srv/nfs" {
		t.Errorf("server/share = %q %q", p.Server, p.Share)
	}
	if p.OnDelete != OnDeleteDelete {
		t.Errorf("OnDelete = %q, want delete", p.OnDelete)
	}
	if p.Mode != 0o777 || DefaultMode != 0o777 {
		t.Errorf("Mode = %#o, want 0777", p.Mode)
	}
	if p.UID != -1 || p.GID != -1 {
		t.Errorf("UID/GID = %d/%d, want -1/-1", p.UID, p.GID)
	}
	if p.SubDir.String() != "${pv.metadata.name}" || DefaultSubDir != "${pv.metadata.name}" {
		t.Errorf("SubDir = %q, want ${pv.metadata.name}", p.SubDir)
	}
	if p.ArchiveRetention != 0 || p.ReclaimPolicy != ReclaimUnset || p.ReuseExisting || p.NFSVers != "" {
		t.Errorf("unexpected non-defaults: %+v", p)
	}
	if p.CSIVars.PVCName != "" || p.CSIVars.PVCNamespace != "" || p.CSIVars.PVName != "" ||
		p.CSIVars.Labels != nil || p.CSIVars.Annotations != nil {
		t.Errorf("CSIVars = %+v, want empty", p.CSIVars)
	}
}

func TestParseParamsValid(t *testing.T) {
	tests := []struct {
		name  string
		m     map[string]string
		check func(t *testing.T, p Params)
	}{
		{"ipv6 server", withParams(ParamServer, "[fd00::1]"), func(t *testing.T, p Params) {
			if p.Server != "[fd00::1]" {
				t.Errorf("Server = %q", p.Server)
			}
		}},
		{"hostname server", withParams(ParamServer, "nfs.example.com"), func(t *testing.T, p Params) {
			if p.Server != "nfs.example.com" {
				t.Errorf("Server = %q", p.Server)
			}
		}},
		{"pseudo-root share", withParams(ParamShare, "/"), func(t *testing.T, p Params) {
			if p.Share != "/" {
				t.Errorf("Share = %q", p.Share)
			}
		}},
		{"subDir", withParams(ParamSubDir, "${pvc.metadata.namespace}/${pvc.metadata.name}"), func(t *testing.T, p Params) {
			if p.SubDir.String() != "${pvc.metadata.namespace}/${pvc.metadata.name}" {
				t.Errorf("SubDir = %q", p.SubDir)
			}
		}},
		{"onDelete delete", withParams(ParamOnDelete, "delete"), func(t *testing.T, p Params) {
			if p.OnDelete != OnDeleteDelete {
				t.Errorf("OnDelete = %q", p.OnDelete)
			}
		}},
		{"onDelete archive", withParams(ParamOnDelete, "archive"), func(t *testing.T, p Params) {
			if p.OnDelete != OnDeleteArchive || p.ArchiveRetention != 0 {
				t.Errorf("OnDelete = %q, retention %v", p.OnDelete, p.ArchiveRetention)
			}
		}},
		{"onDelete retain", withParams(ParamOnDelete, "retain"), func(t *testing.T, p Params) {
			if p.OnDelete != OnDeleteRetain {
				t.Errorf("OnDelete = %q", p.OnDelete)
			}
		}},
		{"archiveRetention", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "720h"), func(t *testing.T, p Params) {
			if p.ArchiveRetention != 720*time.Hour {
				t.Errorf("ArchiveRetention = %v", p.ArchiveRetention)
			}
		}},
		{"archiveRetention 1s", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "1s"), func(t *testing.T, p Params) {
			if p.ArchiveRetention != time.Second {
				t.Errorf("ArchiveRetention = %v", p.ArchiveRetention)
			}
		}},
		{"archiveRetention truncated", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "1.9s"), func(t *testing.T, p Params) {
			if p.ArchiveRetention != time.Second {
				t.Errorf("ArchiveRetention = %v, want 1s", p.ArchiveRetention)
			}
		}},
		{"archiveRetention 100y", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "876000h"), func(t *testing.T, p Params) {
			if p.ArchiveRetention != 100*year {
				t.Errorf("ArchiveRetention = %v", p.ArchiveRetention)
			}
		}},
		{"mode 0775", withParams(ParamMode, "0775"), func(t *testing.T, p Params) {
			if p.Mode != 0o775 {
				t.Errorf("Mode = %#o", p.Mode)
			}
		}},
		{"mode 750 no zero", withParams(ParamMode, "750"), func(t *testing.T, p Params) {
			if p.Mode != 0o750 {
				t.Errorf("Mode = %#o", p.Mode)
			}
		}},
		{"mode 0", withParams(ParamMode, "0"), func(t *testing.T, p Params) {
			if p.Mode != 0 {
				t.Errorf("Mode = %#o", p.Mode)
			}
		}},
		{"mode 07777", withParams(ParamMode, "07777"), func(t *testing.T, p Params) {
			if p.Mode != 0o7777 {
				t.Errorf("Mode = %#o", p.Mode)
			}
		}},
		{"mode setgid dir", withParams(ParamMode, "2775"), func(t *testing.T, p Params) {
			if p.Mode != 0o2775 {
				t.Errorf("Mode = %#o", p.Mode)
			}
		}},
		{"uid gid 0", withParams(ParamUID, "0", ParamGID, "0"), func(t *testing.T, p Params) {
			if p.UID != 0 || p.GID != 0 {
				t.Errorf("UID/GID = %d/%d", p.UID, p.GID)
			}
		}},
		{"uid gid", withParams(ParamUID, "1000", ParamGID, "2000"), func(t *testing.T, p Params) {
			if p.UID != 1000 || p.GID != 2000 {
				t.Errorf("UID/GID = %d/%d", p.UID, p.GID)
			}
		}},
		{"uid gid max", withParams(ParamUID, "2147483647", ParamGID, "2147483647"), func(t *testing.T, p Params) {
			if p.UID != 2147483647 || p.GID != 2147483647 {
				t.Errorf("UID/GID = %d/%d", p.UID, p.GID)
			}
		}},
		{"only gid", withParams(ParamGID, "5"), func(t *testing.T, p Params) {
			if p.UID != -1 || p.GID != 5 {
				t.Errorf("UID/GID = %d/%d", p.UID, p.GID)
			}
		}},
		{"reclaim Delete", withParams(ParamReclaimPolicy, "Delete"), func(t *testing.T, p Params) {
			if p.ReclaimPolicy != ReclaimDelete {
				t.Errorf("ReclaimPolicy = %q", p.ReclaimPolicy)
			}
		}},
		{"reclaim Retain", withParams(ParamReclaimPolicy, "Retain"), func(t *testing.T, p Params) {
			if p.ReclaimPolicy != ReclaimRetain {
				t.Errorf("ReclaimPolicy = %q", p.ReclaimPolicy)
			}
		}},
		{"reclaim Recycle", withParams(ParamReclaimPolicy, "Recycle"), func(t *testing.T, p Params) {
			if p.ReclaimPolicy != ReclaimRecycle {
				t.Errorf("ReclaimPolicy = %q", p.ReclaimPolicy)
			}
		}},
		{"reuseExisting true", withParams(ParamReuseExisting, "true"), func(t *testing.T, p Params) {
			if !p.ReuseExisting {
				t.Error("ReuseExisting = false")
			}
		}},
		{"reuseExisting false", withParams(ParamReuseExisting, "false"), func(t *testing.T, p Params) {
			if p.ReuseExisting {
				t.Error("ReuseExisting = true")
			}
		}},
		{"reuseExisting True", withParams(ParamReuseExisting, "True"), func(t *testing.T, p Params) {
			if !p.ReuseExisting {
				t.Error("ReuseExisting = false")
			}
		}},
		{"nfsvers 3", withParams(ParamNFSVers, "3"), func(t *testing.T, p Params) {
			if p.NFSVers != "3" {
				t.Errorf("NFSVers = %q", p.NFSVers)
			}
		}},
		{"nfsvers 4", withParams(ParamNFSVers, "4"), func(t *testing.T, p Params) {
			if p.NFSVers != "4" {
				t.Errorf("NFSVers = %q", p.NFSVers)
			}
		}},
		{"nfsvers 4.0", withParams(ParamNFSVers, "4.0"), func(t *testing.T, p Params) {
			if p.NFSVers != "4.0" {
				t.Errorf("NFSVers = %q", p.NFSVers)
			}
		}},
		{"nfsvers 4.1", withParams(ParamNFSVers, "4.1"), func(t *testing.T, p Params) {
			if p.NFSVers != "4.1" {
				t.Errorf("NFSVers = %q", p.NFSVers)
			}
		}},
		{"nfsvers 4.2", withParams(ParamNFSVers, "4.2"), func(t *testing.T, p Params) {
			if p.NFSVers != "4.2" {
				t.Errorf("NFSVers = %q", p.NFSVers)
			}
		}},
		{"csi keys", withParams(CSIPVCName, "claim", CSIPVCNamespace, "ns", CSIPVName, "pvc-1",
			"csi.storage.k8s.io/fstype", "nfs", "csi.storage.k8s.io/provisioner-secret-name", "x"), func(t *testing.T, p Params) {
			want := TemplateVars{PVCName: "claim", PVCNamespace: "ns", PVName: "pvc-1"}
			if p.CSIVars.PVCName != want.PVCName || p.CSIVars.PVCNamespace != want.PVCNamespace || p.CSIVars.PVName != want.PVName {
				t.Errorf("CSIVars = %+v, want %+v", p.CSIVars, want)
			}
		}},
		{"every key", map[string]string{
			ParamServer: "nfs", ParamShare: "/e", ParamSubDir: "${pvc.metadata.name}", ParamOnDelete: "archive",
			ParamArchiveRetention: "24h", ParamMode: "0770", ParamUID: "1", ParamGID: "2", ParamReclaimPolicy: "Recycle",
			ParamReuseExisting: "true", ParamNFSVers: "4.1",
		}, func(t *testing.T, p Params) {
			if p.OnDelete != OnDeleteArchive || p.ArchiveRetention != 24*time.Hour || p.Mode != 0o770 || p.UID != 1 ||
				p.GID != 2 || p.ReclaimPolicy != ReclaimRecycle || !p.ReuseExisting || p.NFSVers != "4.1" {
				t.Errorf("Params = %+v", p)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseParams(tc.m)
			if err != nil {
				t.Fatalf("ParseParams(%v) = %v", tc.m, err)
			}
			tc.check(t, p)
		})
	}
}

func TestParseParamsInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    map[string]string
		key  string
	}{
		{"nil map", nil, ParamServer},
		{"empty map", map[string]string{}, ParamServer},
		{"no server", map[string]string{ParamShare: "/srv"}, ParamServer},
		{"empty server", withParams(ParamServer, ""), ParamServer},
		{"server port", withParams(ParamServer, "10.0.0.5:2049"), ParamServer},
		{"server bare ipv6", withParams(ParamServer, "fd00::1"), ParamServer},
		{"server bad label", withParams(ParamServer, "nfs..example"), ParamServer},
		{"server overlong", withParams(ParamServer, strings.Repeat("a.", 150)+"a"), ParamServer},
		{"no share", map[string]string{ParamServer: "nfs"}, ParamShare},
		{"empty share", withParams(ParamShare, ""), ParamShare},
		{"share relative", withParams(ParamShare, "srv/nfs"), ParamShare},
		{"share dot dot", withParams(ParamShare, "/srv/../etc"), ParamShare},
		{"share trailing slash", withParams(ParamShare, "/srv/"), ParamShare},
		{"share NUL", withParams(ParamShare, "/srv\x00"), ParamShare},
		{"subDir empty", withParams(ParamSubDir, ""), ParamSubDir},
		{"subDir unknown var", withParams(ParamSubDir, "${pvc.uid}"), ParamSubDir},
		{"subDir meta", withParams(ParamSubDir, ".paddock/${pv.metadata.name}"), ParamSubDir},
		{"subDir traversal", withParams(ParamSubDir, "../${pv.metadata.name}"), ParamSubDir},
		{"subDir absolute", withParams(ParamSubDir, "/${pv.metadata.name}"), ParamSubDir},
		{"onDelete empty", withParams(ParamOnDelete, ""), ParamOnDelete},
		{"onDelete Delete", withParams(ParamOnDelete, "Delete"), ParamOnDelete},
		{"onDelete recycle", withParams(ParamOnDelete, "recycle"), ParamOnDelete},
		{"onDelete trash", withParams(ParamOnDelete, "trash"), ParamOnDelete},
		{"retention without archive", withParams(ParamArchiveRetention, "24h"), ParamArchiveRetention},
		{"retention with retain", withParams(ParamOnDelete, "retain", ParamArchiveRetention, "24h"), ParamArchiveRetention},
		{"retention bad", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "30d"), ParamArchiveRetention},
		{"retention empty", withParams(ParamOnDelete, "archive", ParamArchiveRetention, ""), ParamArchiveRetention},
		{"retention zero", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "0s"), ParamArchiveRetention},
		{"retention sub-second", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "999ms"), ParamArchiveRetention},
		{"retention negative", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "-1h"), ParamArchiveRetention},
		{"retention over 100y", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "876001h"), ParamArchiveRetention},
		{"retention 290y", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "2540000h"), ParamArchiveRetention},
		{"retention overflow", withParams(ParamOnDelete, "archive", ParamArchiveRetention, "9999999999h"), ParamArchiveRetention},
		{"mode empty", withParams(ParamMode, ""), ParamMode},
		{"mode decimal 8", withParams(ParamMode, "0778"), ParamMode},
		{"mode 9", withParams(ParamMode, "9"), ParamMode},
		{"mode too big", withParams(ParamMode, "10000"), ParamMode},
		{"mode huge", withParams(ParamMode, "077777777777"), ParamMode},
		{"mode negative", withParams(ParamMode, "-1"), ParamMode},
		{"mode plus", withParams(ParamMode, "+755"), ParamMode},
		{"mode 0o", withParams(ParamMode, "0o755"), ParamMode},
		{"mode symbolic", withParams(ParamMode, "u+rwx"), ParamMode},
		{"mode hex", withParams(ParamMode, "0x1ff"), ParamMode},
		{"mode underscore", withParams(ParamMode, "07_55"), ParamMode},
		{"mode space", withParams(ParamMode, " 755"), ParamMode},
		{"uid empty", withParams(ParamUID, ""), ParamUID},
		{"uid negative", withParams(ParamUID, "-1"), ParamUID},
		{"uid 2^31", withParams(ParamUID, "2147483648"), ParamUID},
		{"uid 2^32-1", withParams(ParamUID, "4294967295"), ParamUID},
		{"uid 2^32", withParams(ParamUID, "4294967296"), ParamUID},
		{"uid name", withParams(ParamUID, "root"), ParamUID},
		{"uid plus", withParams(ParamUID, "+1"), ParamUID},
		{"gid negative", withParams(ParamGID, "-1"), ParamGID},
		{"gid 2^31", withParams(ParamGID, "2147483648"), ParamGID},
		{"gid hex", withParams(ParamGID, "0x10"), ParamGID},
		{"gid float", withParams(ParamGID, "1.0"), ParamGID},
		{"reclaim lower", withParams(ParamReclaimPolicy, "delete"), ParamReclaimPolicy},
		{"reclaim empty", withParams(ParamReclaimPolicy, ""), ParamReclaimPolicy},
		{"reclaim recycle lower", withParams(ParamReclaimPolicy, "recycle"), ParamReclaimPolicy},
		{"reclaim unknown", withParams(ParamReclaimPolicy, "Archive"), ParamReclaimPolicy},
		{"reuseExisting yes", withParams(ParamReuseExisting, "yes"), ParamReuseExisting},
		{"reuseExisting empty", withParams(ParamReuseExisting, ""), ParamReuseExisting},
		{"nfsvers empty", withParams(ParamNFSVers, ""), ParamNFSVers},
		{"nfsvers 2", withParams(ParamNFSVers, "2"), ParamNFSVers},
		{"nfsvers 5", withParams(ParamNFSVers, "5"), ParamNFSVers},
		{"nfsvers 4.3", withParams(ParamNFSVers, "4.3"), ParamNFSVers},
		{"nfsvers v4", withParams(ParamNFSVers, "v4"), ParamNFSVers},
		{"nfsvers option", withParams(ParamNFSVers, "4,ro"), ParamNFSVers},
		{"unknown key", withParams("subdir", "x"), "subdir"},
		{"unknown key typo", withParams("ondelete", "retain"), "ondelete"},
		{"unknown prefixed", withParams("paddock.dev/onDelete", "retain"), "paddock.dev/onDelete"},
		{"unknown mountOptions", withParams("mountOptions", "vers=3"), "mountOptions"},
		{"unknown empty key", withParams("", "x"), ""},
		{"csi prefix lookalike", withParams("csi.storage.k8s.io", "x"), "csi.storage.k8s.io"},
		{"unknown sorted first", withParams("zzz", "1", "aaa", "2"), "aaa"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseParams(tc.m)
			if err == nil {
				t.Fatalf("ParseParams(%v) = nil, want an error", tc.m)
			}
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseParams(%v) = %v (%T), want a *ParamError", tc.m, err, err)
			}
			if pe.Key != tc.key {
				t.Errorf("ParamError.Key = %q, want %q (error: %v)", pe.Key, tc.key, err)
			}
			if !strings.Contains(err.Error(), `"`+tc.key+`"`) {
				t.Errorf("error %q does not name the key %q", err, tc.key)
			}
			if pe.Reason == "" {
				t.Errorf("ParamError has no reason: %+v", pe)
			}
		})
	}
}

func TestParseParamsUnknownListsKnown(t *testing.T) {
	_, err := ParseParams(withParams("reclaim", "Delete"))
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *ParamError", err)
	}
	for _, k := range KnownParams() {
		if !strings.Contains(pe.Error(), k) {
			t.Errorf("error %q does not list %q", pe, k)
		}
	}
	if !strings.Contains(pe.Error(), "csi.storage.k8s.io/*") {
		t.Errorf("error %q does not mention csi.storage.k8s.io/*", pe)
	}
}

func TestKnownParams(t *testing.T) {
	want := []string{"archiveRetention", "gid", "mode", "nfsvers", "onDelete", "quota", "quotaAgent", "quotaInodes", "reclaimPolicy", "reuseExisting",
		"server", "share", "subDir", "uid"}
	got := KnownParams()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("KnownParams() = %v, want %v", got, want)
	}
	got[0] = "mutated"
	if KnownParams()[0] != "archiveRetention" {
		t.Error("KnownParams returns shared storage")
	}
	for _, k := range want {
		if strings.Contains(k, "/") || strings.Contains(k, ".") {
			t.Errorf("key %q is prefixed", k)
		}
	}
}

func TestParamErrorMessage(t *testing.T) {
	e := &ParamError{Key: "mode", Value: "999", Reason: "bad"}
	if got := e.Error(); got != `parameter "mode"="999": bad` {
		t.Errorf("Error() = %q", got)
	}
	e = &ParamError{Key: "server", Reason: "required"}
	if got := e.Error(); got != `parameter "server": required` {
		t.Errorf("Error() = %q", got)
	}
}

func TestParseParamsDoesNotMutateInput(t *testing.T) {
	m := withParams(ParamOnDelete, "archive", ParamArchiveRetention, "1h", CSIPVCName, "c")
	orig := maps.Clone(m)
	if _, err := ParseParams(m); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(m, orig) {
		t.Errorf("input changed: %v -> %v", orig, m)
	}
}

func TestParamsVolume(t *testing.T) {
	tests := []struct {
		name   string
		m      map[string]string
		volume string
		vars   TemplateVars
		want   Volume
	}{
		{"default template", baseParams(), testUUIDName, TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: testUUIDName, Name: testUUIDName, OnDelete: OnDeleteDelete}},
		{"namespace/name from vars", withParams(ParamSubDir, "${pvc.metadata.namespace}/${pvc.metadata.name}"), "pvc-1",
			TemplateVars{PVCName: "data", PVCNamespace: "ns"},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "ns/data", Name: "pvc-1", OnDelete: OnDeleteDelete}},
		{"namespace/name from csi params", withParams(ParamSubDir, "${pvc.metadata.namespace}/${pvc.metadata.name}",
			CSIPVCName, "data", CSIPVCNamespace, "ns"), "pvc-1", TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "ns/data", Name: "pvc-1", OnDelete: OnDeleteDelete}},
		{"vars win over csi params", withParams(ParamSubDir, "${pvc.metadata.namespace}/${pvc.metadata.name}",
			CSIPVCName, "old", CSIPVCNamespace, "oldns"), "pvc-1", TemplateVars{PVCName: "data", PVCNamespace: "ns"},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "ns/data", Name: "pvc-1", OnDelete: OnDeleteDelete}},
		{"labels", withParams(ParamSubDir, "${pvc.metadata.labels['team']}/${pv.metadata.name}", ParamOnDelete, "archive",
			ParamArchiveRetention, "48h", ParamNFSVers, "4.2"), "pvc-1",
			TemplateVars{Labels: map[string]string{"team": "db"}, Annotations: map[string]string{}},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "db/pvc-1", Name: "pvc-1", OnDelete: OnDeleteArchive,
				ArchiveRetention: 48 * time.Hour, NFSVers: "4.2"}},
		{"literal", withParams(ParamSubDir, "shared", ParamOnDelete, "retain"), "pvc-1", TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "shared", Name: "pvc-1", OnDelete: OnDeleteRetain}},
		// Only the exact static names are reserved: a provisioner prefix "static" (static-<uid>) is not.
		{"static-like prefix", baseParams(), "static-0f8b2d1e-2c3a-4d5e-9f60-718293a4b5c6", TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "static-0f8b2d1e-2c3a-4d5e-9f60-718293a4b5c6",
				Name: "static-0f8b2d1e-2c3a-4d5e-9f60-718293a4b5c6", OnDelete: OnDeleteDelete}},
		{"static hash of the wrong length", baseParams(), "static-" + strings.Repeat("a", 31), TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "static-" + strings.Repeat("a", 31),
				Name: "static-" + strings.Repeat("a", 31), OnDelete: OnDeleteDelete}},
		{"static hash in upper case", baseParams(), "static-" + strings.Repeat("A", 32), TemplateVars{},
			Volume{Server: "10.0.0.5", Share: "/srv/nfs", SubDir: "static-" + strings.Repeat("A", 32),
				Name: "static-" + strings.Repeat("A", 32), OnDelete: OnDeleteDelete}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseParams(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.Volume(tc.volume, tc.vars)
			if err != nil {
				t.Fatalf("Volume = %v", err)
			}
			if v != tc.want {
				t.Errorf("Volume = %+v, want %+v", v, tc.want)
			}
			got, err := ParseID(v.ID())
			if err != nil || got != v {
				t.Errorf("ParseID(ID()) = %+v, %v; want %+v", got, err, v)
			}
		})
	}
}

func TestParamsVolumeErrors(t *testing.T) {
	tests := []struct {
		name    string
		m       map[string]string
		volume  string
		vars    TemplateVars
		subDir  bool // a *ParamError for subDir is expected
		mention string
	}{
		{"empty name", baseParams(), "", TemplateVars{}, false, "volume name"},
		{"name with slash", baseParams(), "a/b", TemplateVars{}, false, "volume name"},
		{"name dot dot", baseParams(), "..", TemplateVars{}, false, "volume name"},
		{"name too long", baseParams(), strings.Repeat("n", 129), TemplateVars{}, false, "volume name"},
		{"name is meta", baseParams(), ".paddock", TemplateVars{}, false, "metadata"},
		{"pv name var is hostile", baseParams(), "pvc-1", TemplateVars{PVName: "../x"}, true, "${pv.metadata.name}"},
		{"missing pvc name", withParams(ParamSubDir, "${pvc.metadata.name}"), "pvc-1", TemplateVars{}, true, "--extra-create-metadata"},
		{"missing label", withParams(ParamSubDir, "${pvc.metadata.labels['team']}"), "pvc-1",
			TemplateVars{Labels: map[string]string{}}, true, `label "team"`},
		{"labels unknown", withParams(ParamSubDir, "${pvc.metadata.labels['team']}"), "pvc-1", TemplateVars{}, true, "embedded provisioner"},
		{"hostile label", withParams(ParamSubDir, "${pvc.metadata.labels['team']}/${pv.metadata.name}"), "pvc-1",
			TemplateVars{Labels: map[string]string{"team": ".."}}, true, `label "team"`},
		{"hostile csi param", withParams(ParamSubDir, "${pvc.metadata.namespace}/${pvc.metadata.name}",
			CSIPVCName, "../../etc", CSIPVCNamespace, "ns"), "pvc-1", TemplateVars{}, true, "${pvc.metadata.name}"},
		{"label makes meta", withParams(ParamSubDir, "${pvc.metadata.labels['team']}/${pv.metadata.name}"), "pvc-1",
			TemplateVars{Labels: map[string]string{"team": ".paddock"}}, true, "metadata"},
		// A provisioned volume never takes a static volume's name: its claim would be the static one's.
		{"name is a static volume's", withParams(ParamSubDir, "scratch"), StaticName("scratch"), TemplateVars{}, false, "reserved"},
		{"name is 0.1.0's static name", withParams(ParamSubDir, "scratch"), LegacyStaticName, TemplateVars{}, false, "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseParams(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.Volume(tc.volume, tc.vars)
			if err == nil {
				t.Fatalf("Volume = %+v, want an error", v)
			}
			var pe *ParamError
			if tc.subDir && (!errors.As(err, &pe) || pe.Key != ParamSubDir) {
				t.Errorf("error %v is not a *ParamError for subDir", err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestContextRoundTrip(t *testing.T) {
	v := Volume{Server: "[fd00::1]", Share: "/srv/nfs", SubDir: "ns/claim", Name: "pvc-1", OnDelete: OnDeleteDelete, NFSVers: "4.1"}
	ctx := v.Context()
	if len(ctx) != 4 || ctx[ParamServer] != v.Server || ctx[ParamShare] != v.Share || ctx[ParamSubDir] != v.SubDir || ctx[ParamNFSVers] != "4.1" {
		t.Errorf("Context() = %v", ctx)
	}
	got, err := FromContext("pvc-1", ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != v.Server || got.Share != v.Share || got.SubDir != v.SubDir || got.NFSVers != v.NFSVers {
		t.Errorf("FromContext = %+v, want the location of %+v", got, v)
	}
	v.NFSVers = ""
	if _, ok := v.Context()[ParamNFSVers]; ok {
		t.Error("empty nfsvers written to the context")
	}
}

func TestFromContext(t *testing.T) {
	ok := func() map[string]string {
		return map[string]string{ParamServer: "10.0.0.5", ParamShare: "/srv/nfs", ParamSubDir: "legacy/app"}
	}
	v, err := FromContext("my-static-pv", ok())
	if err != nil {
		t.Fatal(err)
	}
	if v.Server != "10.0.0.5" || v.Share != "/srv/nfs" || v.SubDir != "legacy/app" || v.NFSVers != "" {
		t.Errorf("FromContext = %+v", v)
	}
	if v.OnDelete != OnDeleteRetain {
		t.Errorf("static volume OnDelete = %q, want retain: Paddock must never delete a static volume's data", v.OnDelete)
	}
	if err := v.Validate(); err != nil {
		t.Errorf("static volume does not validate: %v", err)
	}
	// Odd handles (csi-driver-nfs style, long, with slashes) still work: the handle is not a path.
	for _, h := range []string{"10.0.0.5#srv/nfs#legacy##", strings.Repeat("h", 300), "a/../b", ""} {
		if _, err := FromContext(h, ok()); err != nil {
			t.Errorf("FromContext(%q) = %v", h, err)
		}
	}
	// Attributes Kubernetes adds (prefixed keys) are tolerated; class-only keys that would be
	// silently ignored on a static PV (mode, uid, gid) are refused, naming the key.
	extra := ok()
	extra[ParamNFSVers] = "3"
	extra["csi.storage.k8s.io/pv/name"] = "pv"
	extra["storage.kubernetes.io/csiProvisionerIdentity"] = "123-nfs.paddock.dev"
	if v, err := FromContext("h", extra); err != nil || v.NFSVers != "3" {
		t.Errorf("FromContext(%v) = %+v, %v", extra, v, err)
	}
	for _, k := range []string{ParamMode, ParamUID, ParamGID, ParamOnDelete} {
		bad := ok()
		bad[k] = "1"
		var pe *ParamError
		if _, err := FromContext("h", bad); !errors.As(err, &pe) || pe.Key != k {
			t.Errorf("FromContext with %q = %v, want a ParamError naming it", k, err)
		}
	}

	bad := []struct {
		name string
		set  map[string]string
		del  string
		key  string
	}{
		{"no server", nil, ParamServer, ParamServer},
		{"no share", nil, ParamShare, ParamShare},
		{"no subDir", nil, ParamSubDir, ParamSubDir},
		{"server port", map[string]string{ParamServer: "10.0.0.5:2049"}, "", ParamServer},
		{"share relative", map[string]string{ParamShare: "srv"}, "", ParamShare},
		{"subDir traversal", map[string]string{ParamSubDir: "../../etc"}, "", ParamSubDir},
		{"subDir dot dot", map[string]string{ParamSubDir: ".."}, "", ParamSubDir},
		{"subDir absolute", map[string]string{ParamSubDir: "/etc"}, "", ParamSubDir},
		{"subDir root", map[string]string{ParamSubDir: "."}, "", ParamSubDir},
		{"subDir meta", map[string]string{ParamSubDir: ".paddock/trash/x"}, "", ParamSubDir},
		{"subDir NUL", map[string]string{ParamSubDir: "a\x00"}, "", ParamSubDir},
		{"subDir non-canonical", map[string]string{ParamSubDir: "a//b"}, "", ParamSubDir},
		{"bad nfsvers", map[string]string{ParamNFSVers: "5"}, "", ParamNFSVers},
		{"unknown attribute", map[string]string{"path": "/x"}, "", "path"},
		{"unknown attribute case", map[string]string{"subdir": "x"}, "", "subdir"},
		{"unknown onDelete", map[string]string{ParamOnDelete: "delete"}, "", ParamOnDelete},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ok()
			maps.Copy(ctx, tc.set)
			if tc.del != "" {
				delete(ctx, tc.del)
			}
			v, err := FromContext("h", ctx)
			if err == nil {
				t.Fatalf("FromContext(%v) = %+v, want an error", ctx, v)
			}
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Key != tc.key {
				t.Errorf("FromContext(%v) = %v, want a *ParamError for %q", ctx, err, tc.key)
			}
		})
	}
	if _, err := FromContext("h", nil); err == nil {
		t.Error("FromContext with nil attributes = nil, want an error")
	}
}

// Each static directory has a volume name of its own (two static PVs of one export must not share the
// export's name index entry), the same on every call (a retry finds its own claim), valid as a name
// and distinct from 0.1.0's single "static".
func TestStaticName(t *testing.T) {
	ctx := func(subDir string) map[string]string {
		return map[string]string{ParamServer: "10.0.0.5", ParamShare: "/srv/nfs", ParamSubDir: subDir}
	}
	long := strings.Repeat("d", MaxComponent) + "/" + strings.Repeat("e", MaxComponent)
	subDirs := []string{"scratch", "scratch-2", "team/scratch", "team", "a/b/c", long, LegacyStaticName}
	seen := map[string]string{}
	for _, d := range subDirs {
		a, err := FromContext("handle-a", ctx(d))
		if err != nil {
			t.Fatalf("FromContext(%q) = %v", d, err)
		}
		b, err := FromContext("another handle", ctx(d))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case a.Name != StaticName(d) || b.Name != a.Name:
			t.Errorf("subDir %q: names %q and %q, want StaticName %q whatever the handle", d, a.Name, b.Name, StaticName(d))
		case a.Name == LegacyStaticName:
			t.Errorf("subDir %q: name is 0.1.0's shared %q", d, a.Name)
		case !isStaticName(a.Name):
			t.Errorf("subDir %q: %q is not recognised as a static name", d, a.Name)
		}
		if err := ValidateName(a.Name); err != nil {
			t.Errorf("subDir %q: name %q: %v", d, a.Name, err)
		}
		if err := a.Validate(); err != nil {
			t.Errorf("subDir %q: volume does not validate: %v", d, err)
		}
		if o, dup := seen[a.Name]; dup {
			t.Errorf("subDirs %q and %q share the name %q", o, d, a.Name)
		}
		seen[a.Name] = d
	}
	// The same subDir on another export or server is the same name: the name index is per export.
	other := ctx("scratch")
	other[ParamServer], other[ParamShare] = "nfs2.example.com", "/export"
	if v, err := FromContext("h", other); err != nil || v.Name != StaticName("scratch") {
		t.Errorf("FromContext(%v) = %+v, %v", other, v, err)
	}
	for name, want := range map[string]bool{
		LegacyStaticName: true, StaticName("x"): true,
		"static-" + strings.Repeat("0", 32): true, "static-" + strings.Repeat("0", 33): false,
		"static-" + strings.Repeat("0", 64): false, "static-" + strings.Repeat("g", 32): false,
		"static-": false, "statics": false, "pvc-1": false, "Static": false, "static-" + strings.Repeat("F", 32): false,
	} {
		if got := isStaticName(name); got != want {
			t.Errorf("isStaticName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFileModeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		octal uint32
		want  os.FileMode
	}{
		{0o777, 0o777},
		{0o2770, os.ModeSetgid | 0o770},
		{0o4755, os.ModeSetuid | 0o755},
		{0o1777, os.ModeSticky | 0o777},
		{0o7000, os.ModeSetuid | os.ModeSetgid | os.ModeSticky},
	} {
		if got := FileMode(tc.octal); got != tc.want {
			t.Errorf("FileMode(%o) = %v, want %v", tc.octal, got, tc.want)
		}
		if got := Octal(tc.want); got != tc.octal {
			t.Errorf("Octal(%v) = %o, want %o", tc.want, got, tc.octal)
		}
	}
}
