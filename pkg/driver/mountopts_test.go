package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

func capWithFlags(flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
}

// The class's mountOptions (the capabilities' mount flags) decide how the controller mounts the
// export: node-only options left out, nolock added, the version pinned in the ID; a delete by ID alone
// mounts the export the same way, and a delete carrying the PV's options uses those.
func TestClassMountOptionsReachTheController(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	held := func() []string {
		var got []string
		for _, tgt := range h.ctrlFake.Targets() {
			m, _ := h.ctrlFake.Mounted(tgt)
			got = append(got, strings.Join(m.Options, ","))
		}
		slices.Sort(got)
		return got
	}
	resp, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-3", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{capWithFlags("nfsvers=3,hard", "noexec", "lock")}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := volume.ParseID(resp.GetVolume().GetVolumeId())
	if err != nil || v.NFSVers != "3" || resp.GetVolume().GetVolumeContext()["nfsvers"] != "3" {
		t.Fatalf("volume %+v (%v), context %v: want NFS version 3 pinned", v, err, resp.GetVolume().GetVolumeContext())
	}
	if want := []string{"hard,nolock,nfsvers=3"}; !slices.Equal(held(), want) {
		t.Fatalf("controller mounts %q, want %q", held(), want)
	}
	// Another class on the same export with other options gets a mount of its own.
	if _, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-41", Parameters: params("nfsvers", "4.1"),
		VolumeCapabilities: []*csi.VolumeCapability{capWithFlags("nconnect=4")}}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"hard,nolock,nfsvers=3", "nconnect=4,nolock,nfsvers=4.1"}; !slices.Equal(held(), want) {
		t.Fatalf("controller mounts %q, want %q", held(), want)
	}
	// DeleteVolume by ID alone: the export is mounted as it was last known; no new mount.
	mounts := h.ctrlFake.Calls(mounttest.OpMount)
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	if got := h.ctrlFake.Calls(mounttest.OpMount); got != mounts {
		t.Errorf("DeleteVolume by ID mounted the export again (%d mounts, had %d)", got, mounts)
	}
	// A delete with the PV's options uses them.
	vol := h.createVolume("pvc-d", params())
	if err := h.d().Delete(ctx, DeleteRequest{ID: vol.GetVolumeId(), MountOptions: []string{"soft", "timeo=50"}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(held(), "nolock,soft,timeo=50") {
		t.Errorf("controller mounts %q lack the PV's options", held())
	}
	if exists(h.export + "/pvc-d") {
		t.Error("pvc-d not deleted")
	}
}

func TestMountOptionsRefused(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		p       map[string]string
		caps    []*csi.VolumeCapability
		mention []string
	}{
		{"background mount", params(), []*csi.VolumeCapability{capWithFlags("bg")}, []string{"pvc-x", `mountOptions: option "bg" is refused`}},
		{"version disagrees with the parameter", params("nfsvers", "4.1"), []*csi.VolumeCapability{capWithFlags("nfsvers=3")},
			[]string{"pvc-x", "nfsvers=3 disagrees with the volume's NFS version 4.1"}},
		{"capabilities disagree", params(), []*csi.VolumeCapability{capWithFlags("hard"), capWithFlags("soft")},
			[]string{"pvc-x", "volume capability 1: mount flags"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, h.export)
			_, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-x", Parameters: tc.p, VolumeCapabilities: tc.caps})
			wantCode(t, err, codes.InvalidArgument, tc.mention...)
			if after := listing(t, h.export); after != before {
				t.Errorf("a refused CreateVolume changed the export:\n%s", after)
			}
		})
	}
	// The node refuses the same option.
	vol := h.createVolume("pvc-n", params())
	_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.GetVolumeId(),
		TargetPath: fmt.Sprintf("%s/target", h.podDir), VolumeCapability: capWithFlags("hard,bg")})
	wantCode(t, err, codes.InvalidArgument, `option "bg" is refused`)
	if err := h.d().Delete(ctx, DeleteRequest{ID: vol.GetVolumeId(), MountOptions: []string{"bg"}}); err == nil || !strings.Contains(err.Error(), `option "bg"`) {
		t.Errorf("Delete with a PV's refused option = %v", err)
	}
}
