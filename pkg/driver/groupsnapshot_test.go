package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestGroupSnapshotLifecycle(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	gc := csi.NewGroupControllerClient(h.conn)
	a := h.createVolume("pvc-a", params()).GetVolumeId()
	b := h.createVolume("pvc-b", params()).GetVolumeId()
	c := h.createVolume("pvc-c", params()).GetVolumeId()
	if err := os.WriteFile(filepath.Join(h.export, "pvc-a", "f"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	caps, err := gc.GroupControllerGetCapabilities(ctx, &csi.GroupControllerGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 1 {
		t.Fatalf("capabilities %v %v", caps, err)
	}
	req := &csi.CreateVolumeGroupSnapshotRequest{Name: "group-1", SourceVolumeIds: []string{a, b}}
	resp, err := gc.CreateVolumeGroupSnapshot(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	g := resp.GetGroupSnapshot()
	if len(g.GetSnapshots()) != 2 || !g.GetReadyToUse() || g.GetCreationTime() == nil {
		t.Fatalf("group %v", g)
	}
	for _, s := range g.GetSnapshots() {
		if s.GetGroupSnapshotId() != g.GetGroupSnapshotId() {
			t.Errorf("member %s has group %q", s.GetSnapshotId(), s.GetGroupSnapshotId())
		}
	}
	// Idempotent; other sources under the same name are AlreadyExists.
	again, err := gc.CreateVolumeGroupSnapshot(ctx, req)
	if err != nil || again.GetGroupSnapshot().GetGroupSnapshotId() != g.GetGroupSnapshotId() {
		t.Fatalf("retry: %v %v", again, err)
	}
	_, err = gc.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "group-1", SourceVolumeIds: []string{a, c}})
	wantCode(t, err, codes.AlreadyExists)
	// A member restores like any snapshot and is listed with its group.
	var memberOfA string
	for _, s := range g.GetSnapshots() {
		if s.GetSourceVolumeId() == a {
			memberOfA = s.GetSnapshotId()
		}
	}
	if _, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-r", Parameters: params(), VolumeCapabilities: []*csi.VolumeCapability{rwx},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: memberOfA}}}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(h.export, "pvc-r", "f")); err != nil || string(b) != "a" {
		t.Errorf("restored member: %q %v", b, err)
	}
	ls, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: memberOfA})
	if err != nil || len(ls.GetEntries()) != 1 || ls.GetEntries()[0].GetSnapshot().GetGroupSnapshotId() != g.GetGroupSnapshotId() {
		t.Errorf("ListSnapshots(member) = %v, %v", ls, err)
	}
	// Members are deleted with their group, not alone.
	_, err = h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: memberOfA})
	wantCode(t, err, codes.FailedPrecondition, g.GetGroupSnapshotId())
	got, err := gc.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()})
	if err != nil || len(got.GetGroupSnapshot().GetSnapshots()) != 2 {
		t.Fatalf("GetVolumeGroupSnapshot = %v, %v", got, err)
	}
	_, err = gc.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: []string{memberOfA}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = gc.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: []string{"1s##x#/y#z"}})
	wantCode(t, err, codes.InvalidArgument)
	for i := 0; i < 2; i++ {
		if _, err := gc.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = gc.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()})
	wantCode(t, err, codes.NotFound)
}

func TestGroupSnapshotInvalid(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	gc := csi.NewGroupControllerClient(h.conn)
	a := h.createVolume("pvc-a", params()).GetVolumeId()
	elsewhere := volume.Volume{Server: "other.example", Share: testShare, SubDir: "x", Name: "x", OnDelete: volume.OnDeleteDelete}.ID()
	before := listing(t, filepath.Dir(h.export))
	for _, tc := range []struct {
		name string
		req  *csi.CreateVolumeGroupSnapshotRequest
		code codes.Code
	}{
		{"no name", &csi.CreateVolumeGroupSnapshotRequest{SourceVolumeIds: []string{a}}, codes.InvalidArgument},
		{"no sources", &csi.CreateVolumeGroupSnapshotRequest{Name: "g"}, codes.InvalidArgument},
		{"twice the same source", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{a, a}}, codes.InvalidArgument},
		{"parameter", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{a}, Parameters: map[string]string{"x": "y"}}, codes.InvalidArgument},
		{"unknown source", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"vol-x"}}, codes.NotFound},
		{"two exports", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{a, elsewhere}}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gc.CreateVolumeGroupSnapshot(ctx, tc.req)
			wantCode(t, err, tc.code)
		})
	}
	forged := []string{"1g##nfs.example#/export#..", "1g##nfs.example#/export#../../outside", "1g##nfs.example#/export/..#aaaaaaaaaaaaaaaaaaaaaaaaaa"}
	for _, id := range forged {
		_, err := gc.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id})
		wantCode(t, err, codes.NotFound)
		_, err = gc.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id})
		wantCode(t, err, codes.InvalidArgument)
	}
	if _, err := gc.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: "never-issued"}); err != nil {
		t.Errorf("delete of an ID never issued: %v", err)
	}
	_, err := gc.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = gc.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	// A plain snapshot cannot take a group member's name.
	g := volume.GroupOf(volume.Volume{Server: testServer, Share: testShare}, "g")
	_, err = h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: g.MemberName(a), SourceVolumeId: a})
	wantCode(t, err, codes.InvalidArgument)
	if after := listing(t, filepath.Dir(h.export)); after != before {
		t.Errorf("refused calls changed the files:\n%s\n---\n%s", before, after)
	}
}
