package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestControllerCapabilitiesAdvertised(t *testing.T) {
	h := start(t, harnessOpts{})
	resp, err := h.ctrl.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[csi.ControllerServiceCapability_RPC_Type]bool{}
	for _, c := range resp.GetCapabilities() {
		have[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES, csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT, csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH, csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME, csi.ControllerServiceCapability_RPC_PUBLISH_READONLY,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES, csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
	} {
		if !have[want] {
			t.Errorf("capability %v not advertised", want)
		}
	}
}

func TestSnapshotLifecycle(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	src := h.createVolume("pvc-src", params())
	if err := os.WriteFile(filepath.Join(h.export, "pvc-src", "data"), []byte("v1"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(h.outside, filepath.Join(h.export, "pvc-src", "escape")); err != nil {
		t.Fatal(err)
	}
	outsideBefore := listing(t, h.outside)

	_, err := h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{SourceVolumeId: src.GetVolumeId()})
	wantCode(t, err, codes.InvalidArgument, "name")
	_, err = h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s"})
	wantCode(t, err, codes.InvalidArgument, "source_volume_id")
	_, err = h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "1#d##nfs.example#/export#pvc-none#"})
	wantCode(t, err, codes.NotFound)
	_, err = h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: src.GetVolumeId(), Parameters: map[string]string{"typo": "1"}})
	wantCode(t, err, codes.InvalidArgument, "typo")

	req := &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: src.GetVolumeId(),
		Parameters: map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "snap"}}
	snap, err := h.ctrl.CreateSnapshot(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	s := snap.GetSnapshot()
	if !s.GetReadyToUse() || s.GetSizeBytes() != 2 || s.GetSourceVolumeId() != src.GetVolumeId() || s.GetCreationTime() == nil || len(s.GetSnapshotId()) > 128 {
		t.Fatalf("snapshot %v", s)
	}
	again, err := h.ctrl.CreateSnapshot(ctx, req)
	if err != nil || again.GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
		t.Fatalf("repeat CreateSnapshot = %v, %v", again, err)
	}
	other := h.createVolume("pvc-other", params())
	_, err = h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: other.GetVolumeId()})
	wantCode(t, err, codes.AlreadyExists)

	got, err := h.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: s.GetSnapshotId()})
	if err != nil || got.GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
		t.Fatalf("GetSnapshot = %v, %v", got, err)
	}
	_, err = h.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "none-exist-id"})
	wantCode(t, err, codes.NotFound)

	// Restore and clone.
	if err := os.WriteFile(filepath.Join(h.export, "pvc-src", "data"), []byte("v2-later"), 0o640); err != nil {
		t.Fatal(err)
	}
	fromSnap := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: s.GetSnapshotId()}}}
	rv, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-restore", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, VolumeContentSource: fromSnap})
	if err != nil {
		t.Fatal(err)
	}
	if rv.GetVolume().GetContentSource().GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
		t.Fatalf("restored volume's content source: %v", rv.GetVolume().GetContentSource())
	}
	if b, _ := os.ReadFile(filepath.Join(h.export, "pvc-restore", "data")); string(b) != "v1" {
		t.Fatalf("restored data = %q, want the snapshot's v1", b)
	}
	if l, err := os.Readlink(filepath.Join(h.export, "pvc-restore", "escape")); err != nil || l != h.outside {
		t.Fatalf("restored symlink = %q, %v", l, err)
	}
	fromVol := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src.GetVolumeId()}}}
	if _, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-clone", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, VolumeContentSource: fromVol}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(h.export, "pvc-clone", "data")); string(b) != "v2-later" {
		t.Fatalf("cloned data = %q", b)
	}
	// Same name, another source: AlreadyExists.
	_, err = h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-clone", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, VolumeContentSource: fromSnap})
	wantCode(t, err, codes.AlreadyExists)
	for name, cs := range map[string]*csi.VolumeContentSource{
		"unknown snapshot": {Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "non-existing-snapshot-id"}}},
		"missing snapshot": {Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "1s##nfs.example#/export#gone"}}},
		"unknown volume":   {Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "1#d##nfs.example#/export#pvc-none#"}}},
	} {
		_, err = h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-x", Parameters: params(),
			VolumeCapabilities: []*csi.VolumeCapability{rwx}, VolumeContentSource: cs})
		t.Run(name, func(t *testing.T) { wantCode(t, err, codes.NotFound) })
	}
	if exists(filepath.Join(h.export, "pvc-x")) {
		t.Fatal("a failed restore left a directory")
	}

	// Listing, filters and pagination.
	for i := 2; i <= 4; i++ {
		if _, err := h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: fmt.Sprintf("snapshot-%d", i), SourceVolumeId: other.GetVolumeId()}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || len(all.GetEntries()) != 4 || all.GetNextToken() != "" {
		t.Fatalf("ListSnapshots = %v, %v", all, err)
	}
	bySrc, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: src.GetVolumeId()})
	if err != nil || len(bySrc.GetEntries()) != 1 || bySrc.GetEntries()[0].GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
		t.Fatalf("ListSnapshots by source = %v, %v", bySrc, err)
	}
	for _, r := range []*csi.ListSnapshotsRequest{{SnapshotId: "none-exist-id"}, {SourceVolumeId: "1#d##nfs.example#/export#pvc-none#"},
		{SnapshotId: "1s##nfs.example#/export#gone"}} {
		if l, err := h.ctrl.ListSnapshots(ctx, r); err != nil || len(l.GetEntries()) != 0 {
			t.Fatalf("ListSnapshots(%v) = %v, %v", r, l, err)
		}
	}
	var paged []string
	token := ""
	for {
		p, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 3, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.GetEntries()) > 3 {
			t.Fatalf("page of %d entries", len(p.GetEntries()))
		}
		for _, e := range p.GetEntries() {
			paged = append(paged, e.GetSnapshot().GetSnapshotId())
		}
		if token = p.GetNextToken(); token == "" {
			break
		}
	}
	if len(paged) != 4 {
		t.Fatalf("paged listing: %v", paged)
	}
	_, err = h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: "invalid-token"})
	wantCode(t, err, codes.Aborted)

	// Delete: invalid IDs succeed and touch nothing; a real one is gone afterwards.
	_, err = h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "reallyfakesnapshotid"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "1s##nfs.example#/export#.."})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: s.GetSnapshotId()}); err != nil {
		t.Fatal(err)
	}
	_, err = h.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: s.GetSnapshotId()})
	wantCode(t, err, codes.NotFound)
	if got := listing(t, h.outside); got != outsideBefore {
		t.Fatal("a snapshot call touched a directory outside the export")
	}
}

func TestListVolumesPagination(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	empty, err := h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(empty.GetEntries()) != 0 {
		t.Fatalf("ListVolumes on a fresh controller = %v, %v", empty, err)
	}
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		v := h.createVolume(fmt.Sprintf("pvc-%d", i), params("onDelete", []string{"delete", "archive", "retain"}[i%3]))
		want[v.GetVolumeId()] = true
	}
	for _, max := range []int32{0, 1, 2, 3, 7, 100} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			seen := map[string]bool{}
			token := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				p, err := h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: max, StartingToken: token})
				if err != nil {
					t.Fatal(err)
				}
				if max > 0 && len(p.GetEntries()) > int(max) {
					t.Fatalf("%d entries, max %d", len(p.GetEntries()), max)
				}
				for _, e := range p.GetEntries() {
					id := e.GetVolume().GetVolumeId()
					if !want[id] || seen[id] {
						t.Fatalf("unexpected or repeated %q", id)
					}
					seen[id] = true
				}
				if token = p.GetNextToken(); token == "" {
					break
				}
			}
			if len(seen) != len(want) {
				t.Fatalf("saw %d of %d volumes", len(seen), len(want))
			}
		})
	}
	// The last volume of a page deleted before the next page is asked for: the token still works.
	p, _ := h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2})
	for _, e := range p.GetEntries() {
		if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: e.GetVolume().GetVolumeId()}); err != nil {
			t.Fatal(err)
		}
	}
	rest, err := h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: p.GetNextToken()})
	if err != nil || len(rest.GetEntries()) != 5 {
		t.Fatalf("after deleting the first page: %v, %v", rest, err)
	}
	_, err = h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "invalid-token"})
	wantCode(t, err, codes.Aborted)
	_, err = h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: -1})
	wantCode(t, err, codes.InvalidArgument)
}

func TestGetCapacityAndHealth(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	c, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil || c.GetAvailableCapacity() != 0 {
		t.Fatalf("GetCapacity without parameters = %v, %v", c, err)
	}
	c, err = h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: params()})
	if err != nil || c.GetAvailableCapacity() <= 0 {
		t.Fatalf("GetCapacity = %v, %v", c, err)
	}
	_, err = h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: params("bogus", "1")})
	wantCode(t, err, codes.InvalidArgument, "bogus")

	v := h.createVolume("pvc-h", params())
	_, err = h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: "1#d##nfs.example#/export#pvc-none#"})
	wantCode(t, err, codes.NotFound)
	hr, err := h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: v.GetVolumeId()})
	if err != nil || hr.GetVolumeHealth().GetVolumeId() != v.GetVolumeId() || len(hr.GetVolumeHealth().GetHealthStatuses()) != 0 {
		t.Fatalf("healthy volume: %v, %v", hr, err)
	}
	if lh, err := h.ctrl.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{}); err != nil || len(lh.GetEntries()) != 0 {
		t.Fatalf("ControllerListVolumeHealth = %v, %v", lh, err)
	}
	if err := os.Remove(filepath.Join(h.export, "pvc-h")); err != nil {
		t.Fatal(err)
	}
	hr, err = h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: v.GetVolumeId()})
	if err != nil || len(hr.GetVolumeHealth().GetHealthStatuses()) != 1 || hr.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_DATA_LOSS {
		t.Fatalf("vanished volume: %v, %v", hr, err)
	}
	lh, err := h.ctrl.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	if err != nil || len(lh.GetEntries()) != 1 || lh.GetEntries()[0].GetVolumeId() != v.GetVolumeId() {
		t.Fatalf("ControllerListVolumeHealth = %v, %v", lh, err)
	}
}

func TestNodeGetVolumeHealth(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	v := h.createVolume("pvc-n", params())
	_, err := h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.GetVolumeId()})
	wantCode(t, err, codes.NotFound, "not published")
	target := filepath.Join(h.podDir, "t1")
	if _, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: v.GetVolumeId(), TargetPath: target, VolumeCapability: rwx}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []*csi.NodeGetVolumeHealthRequest{{VolumeId: v.GetVolumeId()}, {VolumeId: v.GetVolumeId(), VolumePublishPath: target}} {
		r, err := h.node.NodeGetVolumeHealth(ctx, req)
		if err != nil || r.GetVolumeHealth().GetVolumeId() != v.GetVolumeId() || len(r.GetVolumeHealth().GetHealthStatuses()) != 0 {
			t.Fatalf("NodeGetVolumeHealth(%v) = %v, %v", req, r, err)
		}
	}
	_, err = h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.GetVolumeId(), VolumePublishPath: filepath.Join(h.podDir, "nope")})
	wantCode(t, err, codes.NotFound)
	// The directory vanished on the server: statfs through the mount fails, so it is inaccessible.
	if err := os.Remove(filepath.Join(h.export, "pvc-n")); err != nil {
		t.Fatal(err)
	}
	r, err := h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.GetVolumeId(), VolumePublishPath: target})
	if err != nil || len(r.GetVolumeHealth().GetHealthStatuses()) != 1 || r.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
		t.Fatalf("NodeGetVolumeHealth of a vanished directory = %v, %v", r, err)
	}
}
