package driver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

func stageReq(id, staging string, c *csi.VolumeCapability) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: c}
}

func stagedPublishReq(id, staging, target string, c *csi.VolumeCapability, ro bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c, Readonly: ro}
}

func TestNodeStageInvalid(t *testing.T) {
	h := start(t, harnessOpts{})
	id := h.createVolume("pvc-s", params()).GetVolumeId()
	staging := filepath.Join(h.podDir, "staging")
	tests := []struct {
		name string
		req  *csi.NodeStageVolumeRequest
		code codes.Code
	}{
		{"no volume ID", stageReq("", staging, rwx), codes.InvalidArgument},
		{"no staging path", stageReq(id, "", rwx), codes.InvalidArgument},
		{"relative staging path", stageReq(id, "pods/staging", rwx), codes.InvalidArgument},
		{"no capability", stageReq(id, staging, nil), codes.InvalidArgument},
		{"not Paddock, no attributes", stageReq("handle", staging, rwx), codes.NotFound},
		{"directory missing on the server", stageReq(volume.Volume{Server: testServer, Share: testShare, SubDir: "pvc-missing", Name: "pvc-missing", OnDelete: volume.OnDeleteDelete}.ID(), staging, rwx), codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.node.NodeStageVolume(context.Background(), tc.req)
			wantCode(t, err, tc.code)
			if targets := h.nodeFake.Targets(); len(targets) != 0 {
				t.Fatalf("a refused stage mounted %v", targets)
			}
		})
	}
	_, err := h.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{StagingTargetPath: staging})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument)
}

// One NFS mount per volume and node: publishes bind-mount the staging path.
func TestNodeStagePublishBind(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	id := h.createVolume("pvc-b", params()).GetVolumeId()
	staging := filepath.Join(h.podDir, "globalmount")
	c := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	c.GetMount().MountFlags = []string{"hard", "nfsvers=4.1"}
	for i := 0; i < 2; i++ { // idempotent
		if _, err := h.node.NodeStageVolume(ctx, stageReq(id, staging, c)); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.nodeFake.Calls(mounttest.OpMount); got != 1 {
		t.Errorf("%d NFS mounts for two stages, want 1", got)
	}
	m, ok := h.nodeFake.Mounted(staging)
	if !ok || m.Source != testServer+":"+testShare+"/pvc-b" || !slices.Contains(m.Options, "nfsvers=4.1") || m.ReadOnly {
		t.Fatalf("staging mount %+v", m)
	}
	// Another volume at the same staging path is refused.
	other := h.createVolume("pvc-other", params()).GetVolumeId()
	_, err := h.node.NodeStageVolume(ctx, stageReq(other, staging, c))
	wantCode(t, err, codes.AlreadyExists)

	a, b := filepath.Join(h.podDir, "a", "mount"), filepath.Join(h.podDir, "b", "mount")
	if _, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, a, c, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, b, c, true)); err != nil {
		t.Fatal(err)
	}
	if got := h.nodeFake.Calls(mounttest.OpMount); got != 1 {
		t.Errorf("%d NFS mounts after two publishes, want still 1", got)
	}
	ma, _ := h.nodeFake.Mounted(a)
	mb, _ := h.nodeFake.Mounted(b)
	if !slices.Contains(ma.Options, "bind") || ma.ReadOnly || !mb.ReadOnly || ma.Source != m.Source {
		t.Errorf("publishes: %+v and %+v", ma, mb)
	}
	// Data written through one publish is the export's.
	if err := os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(h.export, "pvc-b", "f")); err != nil || string(b) != "x" {
		t.Errorf("export: %q %v", b, err)
	}
	// Republishing a target read-write that is published read-only is AlreadyExists; the same is OK.
	_, err = h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, b, c, false))
	wantCode(t, err, codes.AlreadyExists)
	if _, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, b, c, true)); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{a, b} {
		for i := 0; i < 2; i++ {
			if _, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if ts := h.nodeFake.Targets(); len(ts) != 0 {
		t.Errorf("mounts left: %v", ts)
	}
	if fi, err := os.Stat(staging); err != nil || !fi.IsDir() {
		t.Errorf("staging directory (the CO's) should stay: %v", err)
	}
}

func TestNodePublishStagedChecks(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	id := h.createVolume("pvc-c", params()).GetVolumeId()
	staging := filepath.Join(h.podDir, "globalmount")
	target := filepath.Join(h.podDir, "p", "mount")
	// Not staged.
	_, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, target, rwx, false))
	wantCode(t, err, codes.FailedPrecondition, "NodeStageVolume")
	_, err = h.node.NodePublishVolume(ctx, stagedPublishReq(id, "rel/staging", target, rwx, false))
	wantCode(t, err, codes.InvalidArgument)
	// A reader-only mode stages read-only; a read-write publish of it is refused, a read-only one works.
	rox := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)
	if _, err := h.node.NodeStageVolume(ctx, stageReq(id, staging, rox)); err != nil {
		t.Fatal(err)
	}
	if m, _ := h.nodeFake.Mounted(staging); !m.ReadOnly {
		t.Errorf("ROX stage not read-only: %+v", m)
	}
	_, err = h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, target, rwx, false))
	wantCode(t, err, codes.FailedPrecondition, "read-only")
	if _, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, target, rox, false)); err != nil {
		t.Fatal(err)
	}
	if m, _ := h.nodeFake.Mounted(target); !m.ReadOnly {
		t.Errorf("ROX publish not read-only: %+v", m)
	}
	// The staging path staged another volume: refused.
	other := h.createVolume("pvc-o", params()).GetVolumeId()
	_, err = h.node.NodePublishVolume(ctx, stagedPublishReq(other, staging, filepath.Join(h.podDir, "q", "mount"), rox, false))
	wantCode(t, err, codes.FailedPrecondition)
}

// RWOP: the staging mount is not a second publish; a second target is.
func TestNodePublishStagedSingleWriter(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	id := h.createVolume("pvc-rwop", params()).GetVolumeId()
	staging := filepath.Join(h.podDir, "globalmount")
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	if _, err := h.node.NodeStageVolume(ctx, stageReq(id, staging, c)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, filepath.Join(h.podDir, "a", "m"), c, false)); err != nil {
		t.Fatal(err)
	}
	_, err := h.node.NodePublishVolume(ctx, stagedPublishReq(id, staging, filepath.Join(h.podDir, "b", "m"), c, false))
	wantCode(t, err, codes.FailedPrecondition)
}

func TestNodeExpandVolume(t *testing.T) {
	h := start(t, harnessOpts{})
	ctx := context.Background()
	id := h.createVolume("pvc-e", params()).GetVolumeId()
	other := h.createVolume("pvc-f", params()).GetVolumeId()
	target := filepath.Join(h.podDir, "e", "mount")
	if _, err := h.node.NodePublishVolume(ctx, publishReq(id, target, rwx, false)); err != nil {
		t.Fatal(err)
	}
	rng := &csi.CapacityRange{RequiredBytes: 2 << 30}
	tests := []struct {
		name string
		req  *csi.NodeExpandVolumeRequest
		code codes.Code
	}{
		{"no volume ID", &csi.NodeExpandVolumeRequest{VolumePath: target}, codes.InvalidArgument},
		{"no path", &csi.NodeExpandVolumeRequest{VolumeId: id}, codes.InvalidArgument},
		{"nothing mounted", &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: "some/path"}, codes.NotFound},
		{"another volume mounted", &csi.NodeExpandVolumeRequest{VolumeId: other, VolumePath: target}, codes.NotFound},
		{"impossible range", &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 2, LimitBytes: 1}}, codes.OutOfRange},
		{"ok", &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, CapacityRange: rng}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.node.NodeExpandVolume(ctx, tc.req)
			if tc.code == codes.OK {
				if err != nil || resp.GetCapacityBytes() != rng.RequiredBytes {
					t.Fatalf("NodeExpandVolume = %v, %v", resp, err)
				}
				return
			}
			wantCode(t, err, tc.code)
		})
	}
}

func TestNodeGetInfoTopologyAndLimit(t *testing.T) {
	h := start(t, harnessOpts{maxVolumes: 7, topology: map[string]string{"topology.kubernetes.io/zone": "a"}})
	info, err := h.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetMaxVolumesPerNode() != 7 || info.GetAccessibleTopology().GetSegments()["topology.kubernetes.io/zone"] != "a" {
		t.Errorf("NodeGetInfo = %v", info)
	}
}

func TestParseTopology(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
		ok   bool
	}{
		{"", nil, true},
		{"a=1", map[string]string{"a": "1"}, true},
		{"a=1, b=2", map[string]string{"a": "1", "b": "2"}, true},
		{"a", nil, false},
		{"a=", nil, false},
		{"=1", nil, false},
		{"a=1,a=2", nil, false},
	} {
		got, err := ParseTopology(tc.in)
		if (err == nil) != tc.ok || (tc.ok && len(got) != len(tc.want)) {
			t.Errorf("ParseTopology(%q) = %v, %v", tc.in, got, err)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseTopology(%q)[%s] = %q, want %q", tc.in, k, got[k], v)
			}
		}
	}
}
