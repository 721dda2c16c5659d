//go:build e2e

package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/volume"
)

var refused = []codes.Code{codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound}

// Scenario 6: hostile input through the real RPCs. Every call is refused with a clear message, and
// nothing on the server changes: the whole of /srv/nfs (every export, with the content hashes of a
// canary volume) is compared before and after each call.
func TestHostileInput(t *testing.T) {
	guardExport(t, exportA)
	guardExport(t, exportB)
	p := startPaddock(t, "all")
	canaryName := uniq("canary")
	canary := createVolume(t, p.Controller, canaryName, class(exportA))
	csub := subDirOf(t, canary)
	mustWrite(t, filepath.Join(exportA, csub, "precious.txt"), "tenant data")
	mustWrite(t, filepath.Join(exportA, csub, "nested", "more.bin"), string(make([]byte, 4096)))
	// A directory Paddock did not create (an admin's, or a previous installation's).
	foreign := uniq("foreign")
	mustWrite(t, filepath.Join(exportA, foreign, "theirs.txt"), "not Paddock's")
	// Something to point at outside the export.
	outside := filepath.Join(exportsRoot, uniq("outside"))
	mustWrite(t, filepath.Join(outside, "x"), "outside every export")
	t.Cleanup(func() { os.RemoveAll(outside) })

	state := listing(t, exportsRoot)
	t.Logf("server state: %d entries under %s", len(state), exportsRoot)
	check := func(t *testing.T, what string) {
		t.Helper()
		now := listing(t, exportsRoot)
		assertSame(t, what, state, now)
		state = now // report each change once, at the call that made it
	}

	t.Run("CreateVolume", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			params map[string]string
			want   []codes.Code
		}{
			{"subDir ../x", class(exportA, "subDir", "../x"), []codes.Code{codes.InvalidArgument}},
			{"subDir a/../../x", class(exportA, "subDir", "a/../../x"), []codes.Code{codes.InvalidArgument}},
			{"subDir /abs", class(exportA, "subDir", "/abs"), []codes.Code{codes.InvalidArgument}},
			{"subDir .paddock/trash/x", class(exportA, "subDir", ".paddock/trash/x"), []codes.Code{codes.InvalidArgument}},
			{"subDir .paddock", class(exportA, "subDir", ".paddock"), []codes.Code{codes.InvalidArgument}},
			{"subDir .PADDOCK/claims", class(exportA, "subDir", ".PADDOCK/claims"), []codes.Code{codes.InvalidArgument}},
			{"subDir .", class(exportA, "subDir", "."), []codes.Code{codes.InvalidArgument}},
			{"pvc name ..", class(exportA, "subDir", "${pvc.metadata.name}", volume.CSIPVCName, ".."), []codes.Code{codes.InvalidArgument}},
			{"pvc name a/b", class(exportA, "subDir", "${pvc.metadata.name}", volume.CSIPVCName, "a/b"), []codes.Code{codes.InvalidArgument}},
			{"pvc name ../x under a prefix", class(exportA, "subDir", "t/${pvc.metadata.name}", volume.CSIPVCName, "../x"), []codes.Code{codes.InvalidArgument}},
			{"namespace .. with pvc name", class(exportA, "subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}",
				volume.CSIPVCNamespace, "..", volume.CSIPVCName, "x"), []codes.Code{codes.InvalidArgument}},
			{"pvc name .paddock", class(exportA, "subDir", "${pvc.metadata.name}", volume.CSIPVCName, ".paddock"), []codes.Code{codes.InvalidArgument}},
			{"template onto another volume's directory", class(exportA, "subDir", "${pvc.metadata.name}", volume.CSIPVCName, csub),
				[]codes.Code{codes.FailedPrecondition, codes.AlreadyExists}},
			{"template onto another volume's directory, reuseExisting", class(exportA, "subDir", "${pvc.metadata.name}", volume.CSIPVCName, csub,
				"reuseExisting", "true"), []codes.Code{codes.FailedPrecondition, codes.AlreadyExists}},
			{"template onto a directory Paddock did not create", class(exportA, "subDir", foreign), []codes.Code{codes.AlreadyExists, codes.FailedPrecondition}},
			{"template inside another volume", class(exportA, "subDir", csub+"/${pv.metadata.name}"), []codes.Code{codes.FailedPrecondition}},
		} {
			_, err := p.Controller.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{
				Name: uniq("hostile"), Parameters: tc.params, VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}})
			wantCode(t, "CreateVolume "+tc.name, err, tc.want...)
			check(t, "CreateVolume "+tc.name)
		}
		for _, name := range []string{"..", "a/b", ".paddock", "."} {
			_, err := p.Controller.CreateVolume(ctxT(t, time.Minute), &csi.CreateVolumeRequest{
				Name: name, Parameters: class(exportA), VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwx)}})
			wantCode(t, "CreateVolume named "+name, err, codes.InvalidArgument)
			check(t, "CreateVolume named "+name)
		}
	})

	id := func(share, name, sub string, od volume.OnDelete, vers string) string {
		return volume.Volume{Server: server, Share: share, Name: name, SubDir: sub, OnDelete: od, NFSVers: vers}.ID()
	}
	// What a forged ID must get. refuse: InvalidArgument, FailedPrecondition or NotFound. denied: the
	// NFS server itself refuses to mount the share (not exported): paddock passes mount.nfs's "access
	// denied by server" on as Internal, which the CO retries. trusted: the node mounts what the ID
	// names; it has no way to check the controller's claims (see the report). succeed: the ID names
	// no volume that exists (no directory, or a directory that is not that volume's), so DeleteVolume
	// succeeds and touches nothing (CSI: already deleted; check proves nothing moved).
	const (
		refuse  = "refuse"
		denied  = "denied"
		trusted = "trusted"
		skip    = "skip" // covered by TestForgedDeleteCreatesNothing
		succeed = "succeed"
	)
	forged := []struct {
		name            string
		id              string
		delete, publish string
	}{
		{"export root through a split share", id(exportsRoot, "a", "a", volume.OnDeleteDelete, ""), skip, trusted},
		{"export root through a split share, v3", id(exportsRoot, "a", "a", volume.OnDeleteDelete, "3"), denied, trusted},
		{"export root through a split share, archive", id(exportsRoot, "a", "a", volume.OnDeleteArchive, ""), skip, trusted},
		{"raw: metadata area", "1#d##127.0.0.1#/srv/nfs/a#x#.paddock", refuse, refuse},
		{"raw: trash", "1#d##127.0.0.1#/srv/nfs/a#x#.paddock/trash", refuse, refuse},
		{"raw: trash as name", "1#d##127.0.0.1#/srv/nfs/a#.paddock#", refuse, refuse},
		{"raw: ../outside", "1#d##127.0.0.1#/srv/nfs/a#x#../" + filepath.Base(outside), refuse, refuse},
		{"raw: x/../..", "1#d##127.0.0.1#/srv/nfs/a#x#x/../..", refuse, refuse},
		{"raw: absolute subDir", "1#d##127.0.0.1#/srv/nfs/a#x#/etc", refuse, refuse},
		{"raw: export root as empty name", "1#d##127.0.0.1#/srv/nfs/a##", refuse, refuse},
		{"raw: non-canonical share", "1#d##127.0.0.1#/srv/nfs/a/..#x#a", refuse, refuse},
		{"not a Paddock ID (unknown version)", "2#d##127.0.0.1#/srv/nfs/a#x#" + csub, succeed, refuse},
		{"another volume's directory under a different name", id(exportA, "evil", csub, volume.OnDeleteDelete, ""), succeed, trusted},
		{"another volume's directory under a different name, archive", id(exportA, "evil", csub, volume.OnDeleteArchive, ""), succeed, trusted},
		{"another volume's directory under a different name, v3", id(exportA, "evil", csub, volume.OnDeleteDelete, "3"), succeed, trusted},
		{"a directory Paddock did not create", id(exportA, foreign, foreign, volume.OnDeleteDelete, ""), succeed, trusted},
		{"share outside every export (/etc)", id("/etc", "ssh", "ssh", volume.OnDeleteDelete, ""), denied, denied},
		{"share outside every export, next to them", id(outside, "x", "x", volume.OnDeleteDelete, ""), denied, denied},
		{"share inside the export: another volume's directory as the share", id(filepath.Join(exportA, csub), "x", "nested", volume.OnDeleteDelete, ""), skip, trusted},
		{"share inside the export, absent subDir", id(filepath.Join(exportA, csub), "x", "absent", volume.OnDeleteDelete, ""), skip, refuse},
		{"the canary's name and directory on another export", id(exportB, canaryName, csub, volume.OnDeleteDelete, ""), skip, refuse},
	}
	expect := func(t *testing.T, what, how string, err error) {
		t.Helper()
		switch how {
		case succeed: // CSI: an ID the plugin never issued names no volume, so it is already deleted
			if err != nil {
				t.Errorf("%s: %v, want success (nothing to delete)", what, err)
			}
		case refuse:
			wantCode(t, what, err, refused...)
		case denied:
			wantCode(t, what, err, append(refused, codes.Internal)...)
			if err != nil && !strings.Contains(err.Error(), "access denied by server") {
				t.Errorf("%s: want mount.nfs's reason \"access denied by server\" in %v", what, err)
			}
		}
	}

	t.Run("DeleteVolume", func(t *testing.T) {
		for _, tc := range forged {
			if tc.delete == skip {
				continue
			}
			_, err := p.Controller.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			expect(t, "DeleteVolume "+tc.name+" ("+tc.id+")", tc.delete, err)
			check(t, "DeleteVolume "+tc.name)
		}
	})

	t.Run("NodePublishVolume", func(t *testing.T) {
		dir := newDir(t, "hostile")
		for i, tc := range forged {
			target := filepath.Join(dir, "t", string(rune('a'+i)))
			err := publishErr(t, p.Node, tc.id, nil, target, mountCap(rwx), false)
			if tc.publish == trusted && err == nil {
				// The node mounts exactly the directory the ID names, and writes nothing on the server.
				v, perr := volume.ParseID(tc.id)
				m := mountAt(t, target)
				if perr != nil || m == nil || m.Source != server+":"+filepath.Join(v.Share, v.SubDir) {
					t.Errorf("NodePublishVolume %s: mounted %v, want exactly the directory the ID names", tc.name, m)
				}
				t.Logf("NOT REFUSED (the node trusts the volume handle): NodePublishVolume %s (%s) mounted %s", tc.name, tc.id, m.Source)
				unpublish(t, p.Node, tc.id, target)
			} else {
				if tc.publish == trusted {
					wantCode(t, "NodePublishVolume "+tc.name, err, refused...)
				} else {
					expect(t, "NodePublishVolume "+tc.name+" ("+tc.id+")", tc.publish, err)
				}
				if m := mountAt(t, target); m != nil {
					t.Errorf("NodePublishVolume %s failed but left a mount: %v", tc.name, m)
				}
			}
			check(t, "NodePublishVolume "+tc.name)
		}
		// Static PVs (a handle that is not a Paddock ID, with volumeAttributes).
		for i, attrs := range []map[string]string{
			{"server": server, "share": exportA, "subDir": ""},
			{"server": server, "share": exportA, "subDir": ".."},
			{"server": server, "share": exportA, "subDir": "../" + filepath.Base(outside)},
			{"server": server, "share": exportA, "subDir": ".paddock/trash"},
			{"server": server, "share": exportA, "subDir": "/etc"},
			{"server": server, "share": exportA + "/../..", "subDir": "etc"},
			{"server": server, "share": exportA, "subDir": "x", "mountOptions": "nolock"},
		} {
			target := filepath.Join(dir, "s", string(rune('a'+i)))
			err := publishErr(t, p.Node, "static-handle", attrs, target, mountCap(rwx), false)
			wantCode(t, "NodePublishVolume static "+attrs["share"]+" "+attrs["subDir"], err, codes.InvalidArgument)
			if m := mountAt(t, target); m != nil {
				t.Errorf("refused static publish left a mount: %v", m)
				unpublish(t, p.Node, "static-handle", target)
			}
			check(t, "NodePublishVolume static "+attrs["subDir"])
		}
	})

	// The canary is still the canary: published, its content reads back.
	target := filepath.Join(newDir(t, "canary"), "mount")
	publish(t, p.Node, canary, target, mountCap(rwx), false)
	if got := mustRead(t, filepath.Join(target, "precious.txt")); got != "tenant data" {
		t.Errorf("canary content: %q", got)
	}
	unpublish(t, p.Node, canary.GetVolumeId(), target)
	check(t, "canary publish")
	deleteVolume(t, p.Controller, canary.GetVolumeId())
}

// A forged DeleteVolume must leave the server as it was, even when it names nothing to delete: no
// metadata area may appear inside another tenant's volume (its directory used as the "share"), on an
// export Paddock has never used, or be attempted on the NFSv4 pseudo-root (the export root reached
// through a split share). Each is refused or, naming no directory, succeeds, and nothing changes.
func TestForgedDeleteCreatesNothing(t *testing.T) {
	guardExport(t, exportA)
	guardExport(t, exportB)
	p := startPaddock(t, "all")
	canaryName := uniq("canary")
	canary := createVolume(t, p.Controller, canaryName, class(exportA))
	csub := subDirOf(t, canary)
	mustWrite(t, filepath.Join(exportA, csub, "nested", "precious.txt"), "tenant data")
	id := func(share, name, sub string, od volume.OnDelete) string {
		return volume.Volume{Server: server, Share: share, Name: name, SubDir: sub, OnDelete: od}.ID()
	}
	state := listing(t, exportsRoot)
	for _, tc := range []struct {
		name     string
		id       string
		absentOK bool
	}{
		// Directories that are not the named volume's: no such volume exists, so OK, and nothing moves.
		{"export root through a split share (NFSv4 pseudo-root)", id(exportsRoot, "a", "a", volume.OnDeleteDelete), true},
		{"export root through a split share, archive", id(exportsRoot, "a", "a", volume.OnDeleteArchive), true},
		{"another volume's directory as the share", id(filepath.Join(exportA, csub), "x", "nested", volume.OnDeleteDelete), true},
		{"another volume's directory as the share, absent subDir", id(filepath.Join(exportA, csub), "x", "absent", volume.OnDeleteDelete), true},
		{"the canary's name and directory on an export Paddock never used", id(exportB, canaryName, csub, volume.OnDeleteDelete), true},
	} {
		_, err := p.Controller.DeleteVolume(ctxT(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: tc.id})
		if err == nil && tc.absentOK {
			t.Logf("DeleteVolume %s (%s): OK (names no volume that exists)", tc.name, tc.id)
		} else {
			wantCode(t, "DeleteVolume "+tc.name+" ("+tc.id+")", err, refused...)
		}
		now := listing(t, exportsRoot)
		assertSame(t, "DeleteVolume "+tc.name, state, now)
		state = now
	}
	if got := mustRead(t, filepath.Join(exportA, csub, "nested", "precious.txt")); got != "tenant data" {
		t.Errorf("canary content: %q", got)
	}
	deleteVolume(t, p.Controller, canary.GetVolumeId())
}
