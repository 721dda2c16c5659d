package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

// twoNodes knows node-1 (limit from the map) and node-2.
type fakeNodes map[string]int64

func (f fakeNodes) Lookup(_ context.Context, id string) (NodeInfo, error) {
	max, ok := f[id]
	if !ok {
		return NodeInfo{}, fmt.Errorf("%w: %s", ErrUnknownNode, id)
	}
	return NodeInfo{MaxVolumes: max}, nil
}

func cpub(id, node string, c *csi.VolumeCapability, ro bool) *csi.ControllerPublishVolumeRequest {
	return &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: c, Readonly: ro}
}

func TestControllerPublish(t *testing.T) {
	h := start(t, harnessOpts{nodes: fakeNodes{"node-1": 2, "node-2": 0}})
	ctx := context.Background()
	rwo := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	a := h.createVolume("pvc-a", params()).GetVolumeId()
	b := h.createVolume("pvc-b", params()).GetVolumeId()
	c := h.createVolume("pvc-c", params()).GetVolumeId()
	gone := h.createVolume("pvc-gone", params()).GetVolumeId()
	if err := h.d().Delete(ctx, DeleteRequest{ID: gone}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		req  *csi.ControllerPublishVolumeRequest
		code codes.Code
	}{
		{"no volume", cpub("", "node-1", rwo, false), codes.InvalidArgument},
		{"no node", cpub(a, "", rwo, false), codes.InvalidArgument},
		{"no capability", cpub(a, "node-1", nil, false), codes.InvalidArgument},
		{"not a Paddock ID", cpub("vol-x", "node-1", rwo, false), codes.NotFound},
		{"deleted volume", cpub(gone, "node-1", rwo, false), codes.NotFound},
		{"unknown node", cpub(a, "node-9", rwo, false), codes.NotFound},
		{"publish a", cpub(a, "node-1", rwo, false), codes.OK},
		{"again: idempotent", cpub(a, "node-1", rwo, false), codes.OK},
		{"readonly differs", cpub(a, "node-1", rwo, true), codes.AlreadyExists},
		{"single-node volume on a second node", cpub(a, "node-2", rwo, false), codes.FailedPrecondition},
		{"multi-node publish of a single-node-published volume", cpub(a, "node-2", rwx, false), codes.FailedPrecondition},
		{"publish b to node-1 (its limit 2)", cpub(b, "node-1", rwx, false), codes.OK},
		{"b also on node-2 (multi-node)", cpub(b, "node-2", rwx, true), codes.OK},
		{"c: node-1 is full", cpub(c, "node-1", rwx, false), codes.ResourceExhausted},
		{"c on node-2 (no limit)", cpub(c, "node-2", rwx, false), codes.OK},
	}
	for _, s := range steps {
		_, err := h.ctrl.ControllerPublishVolume(ctx, s.req)
		if s.code == codes.OK {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			continue
		}
		wantCode(t, err, s.code)
	}
	// The records are on the export and visible in ListVolumes and ControllerGetVolume.
	if ents, err := os.ReadDir(filepath.Join(h.export, ".paddock", "publications")); err != nil || len(ents) != 3 {
		t.Errorf("publication records: %v %v", ents, err)
	}
	gv, err := h.ctrl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: b})
	if err != nil || fmt.Sprint(gv.GetStatus().GetPublishedNodeIds()) != "[node-1 node-2]" {
		t.Errorf("ControllerGetVolume(b) = %v, %v", gv, err)
	}
	lv, err := h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range lv.GetEntries() {
		if e.GetVolume().GetVolumeId() == a && fmt.Sprint(e.GetStatus().GetPublishedNodeIds()) != "[node-1]" {
			t.Errorf("ListVolumes: a published to %v", e.GetStatus().GetPublishedNodeIds())
		}
	}
	// A published volume cannot be deleted.
	_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: a})
	wantCode(t, err, codes.FailedPrecondition, "node-1")
	// Unpublish frees the slot; it is idempotent, and unknown volumes and nodes are unpublished.
	for i := 0; i < 2; i++ {
		if _, err := h.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: a, NodeId: "node-1"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, req := range []*csi.ControllerUnpublishVolumeRequest{{VolumeId: "vol-x", NodeId: "node-1"}, {VolumeId: a, NodeId: "node-9"}, {VolumeId: gone}} {
		if _, err := h.ctrl.ControllerUnpublishVolume(ctx, req); err != nil {
			t.Errorf("ControllerUnpublishVolume(%v) = %v", req, err)
		}
	}
	_, err = h.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{NodeId: "node-1"})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := h.ctrl.ControllerPublishVolume(ctx, cpub(c, "node-1", rwx, false)); err != nil {
		t.Fatalf("publish after a slot was freed: %v", err)
	}
	// Now a can go to node-2 (single-node, nobody else has it) and then be deleted after unpublish.
	if _, err := h.ctrl.ControllerPublishVolume(ctx, cpub(a, "node-2", rwo, false)); err != nil {
		t.Fatal(err)
	}
	// Unpublish from every node (empty node ID).
	if _, err := h.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: a}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: a}); err != nil {
		t.Fatal(err)
	}
}

// In --mode=all the local node is the only node and the --max-volumes-per-node flag its limit.
func TestControllerPublishLocalNode(t *testing.T) {
	h := start(t, harnessOpts{maxVolumes: 1})
	ctx := context.Background()
	a := h.createVolume("pvc-a", params()).GetVolumeId()
	b := h.createVolume("pvc-b", params()).GetVolumeId()
	_, err := h.ctrl.ControllerPublishVolume(ctx, cpub(a, "node-2", rwx, false))
	wantCode(t, err, codes.NotFound, "node-1")
	if _, err := h.ctrl.ControllerPublishVolume(ctx, cpub(a, "node-1", rwx, false)); err != nil {
		t.Fatal(err)
	}
	_, err = h.ctrl.ControllerPublishVolume(ctx, cpub(b, "node-1", rwx, false))
	wantCode(t, err, codes.ResourceExhausted)
	if !errors.Is(fmt.Errorf("x: %w", ErrUnknownNode), ErrUnknownNode) {
		t.Fatal("ErrUnknownNode does not wrap")
	}
}

func TestControllerModifyVolume(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	id := h.createVolume("pvc-m", params()).GetVolumeId()
	tests := []struct {
		name    string
		id      string
		params  map[string]string
		code    codes.Code
		mention []string
	}{
		{"no volume ID", "", map[string]string{"mode": "0700"}, codes.InvalidArgument, nil},
		{"no parameters", id, nil, codes.InvalidArgument, nil},
		{"unknown key", id, map[string]string{"XXX_FakeKey": "v"}, codes.InvalidArgument, []string{"XXX_FakeKey", "gid, mode, uid"}},
		{"class-only key", id, map[string]string{"onDelete": "retain"}, codes.InvalidArgument, []string{"onDelete"}},
		{"bad mode", id, map[string]string{"mode": "999"}, codes.InvalidArgument, []string{"mode"}},
		{"bad uid", id, map[string]string{"uid": "-1"}, codes.InvalidArgument, []string{"uid"}},
		{"not a volume", "non-existing-volume-id", map[string]string{"mode": "0700"}, codes.NotFound, nil},
		{"ok", id, map[string]string{"mode": "02750"}, codes.OK, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.ctrl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: tc.id, MutableParameters: tc.params})
			if tc.code == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.mention...)
		})
	}
	fi, err := os.Stat(filepath.Join(h.export, "pvc-m"))
	if err != nil || fi.Mode().Perm() != 0o750 || fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("mode after modify: %v %v", fi.Mode(), err)
	}
	// Deleted volume: NotFound, nothing created.
	if err := h.d().Delete(ctx, DeleteRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	_, err = h.ctrl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: id, MutableParameters: map[string]string{"mode": "0700"}})
	wantCode(t, err, codes.NotFound)
}

func TestCreateVolumeMutableParameters(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	_, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-x", Parameters: params(), VolumeCapabilities: []*csi.VolumeCapability{rwx},
		MutableParameters: map[string]string{"XXX_FakeKey": "v"}})
	wantCode(t, err, codes.InvalidArgument, "XXX_FakeKey")
	if _, err := os.Lstat(filepath.Join(h.export, "pvc-x")); !os.IsNotExist(err) {
		t.Errorf("refused create made the directory: %v", err)
	}
	if _, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-y", Parameters: params("mode", "0777"), VolumeCapabilities: []*csi.VolumeCapability{rwx},
		MutableParameters: map[string]string{"mode": "0705"}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(h.export, "pvc-y")); err != nil || fi.Mode().Perm() != 0o705 {
		t.Errorf("mutable mode not applied: %v %v", fi.Mode(), err)
	}
}
