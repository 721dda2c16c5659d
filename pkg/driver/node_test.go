package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/volume"
)

func publishReq(id, target string, c *csi.VolumeCapability, ro bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: c, Readonly: ro}
}

func TestNodePublishInvalid(t *testing.T) {
	h := start(t, harnessOpts{})
	vol := h.createVolume("pvc-n", params())
	id := vol.GetVolumeId()
	target := filepath.Join(h.podDir, "p", "mount")
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	forge := func(subDir string) string {
		return volume.Volume{Server: testServer, Share: testShare, SubDir: subDir, Name: "pvc-x", OnDelete: volume.OnDeleteDelete}.ID()
	}
	tests := []struct {
		name string
		req  *csi.NodePublishVolumeRequest
		code codes.Code
	}{
		{"no volume ID", publishReq("", target, rwx, false), codes.InvalidArgument},
		{"no target", publishReq(id, "", rwx, false), codes.InvalidArgument},
		{"relative target", publishReq(id, "pods/p/mount", rwx, false), codes.InvalidArgument},
		{"no capability", publishReq(id, target, nil, false), codes.InvalidArgument},
		{"block", publishReq(id, target, block, false), codes.InvalidArgument},
		{"ext4", publishReq(id, target, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
			AccessMode: rwx.AccessMode}, false), codes.InvalidArgument},
		{"forged: export root", publishReq(forge("."), target, rwx, false), codes.InvalidArgument},
		{"forged: trash", publishReq(forge(".paddock/trash"), target, rwx, false), codes.InvalidArgument},
		{"forged: claims", publishReq(forge(".paddock/claims"), target, rwx, false), codes.InvalidArgument},
		{"forged: outside", publishReq(forge("../outside"), target, rwx, false), codes.InvalidArgument},
		{"not Paddock, no attributes", publishReq("some-handle", target, rwx, false), codes.NotFound},
		{"static PV: subDir trash", &csi.NodePublishVolumeRequest{VolumeId: "static-1", TargetPath: target, VolumeCapability: rwx,
			VolumeContext: map[string]string{"server": testServer, "share": testShare, "subDir": ".paddock/trash"}}, codes.InvalidArgument},
		{"static PV: no subDir (export root)", &csi.NodePublishVolumeRequest{VolumeId: "static-1", TargetPath: target, VolumeCapability: rwx,
			VolumeContext: map[string]string{"server": testServer, "share": testShare}}, codes.InvalidArgument},
		{"static PV: subDir ..", &csi.NodePublishVolumeRequest{VolumeId: "static-1", TargetPath: target, VolumeCapability: rwx,
			VolumeContext: map[string]string{"server": testServer, "share": testShare, "subDir": ".."}}, codes.InvalidArgument},
		{"static PV: unknown attribute", &csi.NodePublishVolumeRequest{VolumeId: "static-1", TargetPath: target, VolumeCapability: rwx,
			VolumeContext: map[string]string{"server": testServer, "share": testShare, "subDir": "x", "sever": "typo"}}, codes.InvalidArgument},
		{"directory missing on the server", publishReq(forge("pvc-missing"), target, rwx, false), codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.node.NodePublishVolume(context.Background(), tc.req)
			wantCode(t, err, tc.code)
			if targets := h.nodeFake.Targets(); len(targets) != 0 {
				t.Fatalf("a refused publish mounted %v", targets)
			}
		})
	}
}

func TestNodePublishReadOnly(t *testing.T) {
	h := start(t, harnessOpts{})
	vol := h.createVolume("pvc-ro", params())
	type mode = csi.VolumeCapability_AccessMode_Mode
	tests := []struct {
		mode     mode
		readonly bool
		wantRO   bool
	}{
		{csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, false, false},
		{csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, false, false},
		{csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, false, false},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER, false, false},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, false, false},
		{csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, false, true},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, false, true},
		{csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, true, true},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, true, true},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, true, true},
	}
	for i, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			target := filepath.Join(h.podDir, "ro", string(rune('a'+i)), "mount")
			c := mountCap(tc.mode)
			c.GetMount().MountFlags = []string{"rw", "hard", "nconnect=4"}
			if _, err := h.node.NodePublishVolume(context.Background(), publishReq(vol.GetVolumeId(), target, c, tc.readonly)); err != nil {
				t.Fatal(err)
			}
			m, ok := h.nodeFake.Mounted(target)
			if !ok {
				t.Fatal("nothing mounted")
			}
			if m.Source != testServer+":"+testShare+"/pvc-ro" {
				t.Errorf("source %q", m.Source)
			}
			if got := slices.Contains(m.Options, "ro"); got != tc.wantRO {
				t.Errorf("options %v: ro=%t, want %t", m.Options, got, tc.wantRO)
			}
			if tc.wantRO && slices.Contains(m.Options, "rw") {
				t.Errorf("read-only mount keeps the class's rw flag: %v", m.Options)
			}
			if !slices.Contains(m.Options, "hard") || !slices.Contains(m.Options, "nconnect=4") {
				t.Errorf("mount flags lost: %v", m.Options)
			}
			if _, err := h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNodePublishIdempotentAndConflicting(t *testing.T) {
	h := start(t, harnessOpts{})
	vol := h.createVolume("pvc-p", params("nfsvers", "4.1"))
	other := h.createVolume("pvc-q", params())
	target := filepath.Join(h.podDir, "p", "mount")
	req := publishReq(vol.GetVolumeId(), target, rwx, false)
	for i := 0; i < 3; i++ {
		if _, err := h.node.NodePublishVolume(context.Background(), req); err != nil {
			t.Fatalf("publish #%d = %v", i, err)
		}
	}
	if got := h.nodeFake.Calls(mounttest.OpMount); got != 1 {
		t.Errorf("three publishes mounted %d times, want 1", got)
	}
	m, _ := h.nodeFake.Mounted(target)
	if !slices.Contains(m.Options, "nfsvers=4.1") {
		t.Errorf("pinned NFS version not passed: %v", m.Options)
	}
	// The pod sees (and writes) the volume's directory.
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("from the pod"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(h.export, "pvc-p", "hello")); err != nil || string(b) != "from the pod" {
		t.Fatalf("write through the mount: %q, %v", b, err)
	}
	_, err := h.node.NodePublishVolume(context.Background(), publishReq(vol.GetVolumeId(), target, rwx, true))
	wantCode(t, err, codes.AlreadyExists)
	_, err = h.node.NodePublishVolume(context.Background(), publishReq(other.GetVolumeId(), target, rwx, false))
	wantCode(t, err, codes.AlreadyExists)
	if got := h.nodeFake.Calls(mounttest.OpMount); got != 1 {
		t.Errorf("conflicting publishes mounted: %d mounts", got)
	}
	// A mount failure is reported, not swallowed.
	h.nodeFake.FailNext(mounttest.OpMount, errors.New("mount.nfs: Connection refused"))
	_, err = h.node.NodePublishVolume(context.Background(), publishReq(other.GetVolumeId(), filepath.Join(h.podDir, "q", "mount"), rwx, false))
	wantCode(t, err, codes.Internal, "Connection refused")

	// Unpublish removes the mount and the target; a repeat is fine.
	for i := 0; i < 2; i++ {
		if _, err := h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target}); err != nil {
			t.Fatalf("unpublish #%d = %v", i, err)
		}
	}
	if exists(target) || len(h.nodeFake.Targets()) != 0 {
		t.Fatalf("after unpublish: target exists %t, mounts %v", exists(target), h.nodeFake.Targets())
	}
	if b, err := os.ReadFile(filepath.Join(h.export, "pvc-p", "hello")); err != nil || string(b) != "from the pod" {
		t.Fatalf("unpublish touched the volume's data: %q, %v", b, err)
	}
}

func TestNodePublishStaticPV(t *testing.T) {
	h := start(t, harnessOpts{mode: ModeNode})
	if err := os.MkdirAll(filepath.Join(h.export, "legacy", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.export, "legacy", "app", "data"), []byte("static"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(h.podDir, "s", "mount")
	req := &csi.NodePublishVolumeRequest{VolumeId: "my-hand-made-pv", TargetPath: target, VolumeCapability: rwx,
		VolumeContext: map[string]string{"server": testServer, "share": testShare, "subDir": "legacy/app"}}
	if _, err := h.node.NodePublishVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	m, ok := h.nodeFake.Mounted(target)
	if !ok || m.Source != testServer+":"+testShare+"/legacy/app" {
		t.Fatalf("mounted %+v, %t", m, ok)
	}
	if b, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(b) != "static" {
		t.Fatalf("static volume content: %q, %v", b, err)
	}
}

func TestNodeUnpublishAndStats(t *testing.T) {
	h := start(t, harnessOpts{})
	vol := h.createVolume("pvc-u", params())
	id := vol.GetVolumeId()
	// A target that never existed, and one that exists but has nothing mounted.
	missing := filepath.Join(h.podDir, "never", "mount")
	if _, err := h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: missing}); err != nil {
		t.Errorf("unpublish of a missing target = %v", err)
	}
	plain := filepath.Join(h.podDir, "plain")
	if err := os.Mkdir(plain, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: plain}); err != nil {
		t.Errorf("unpublish of an unmounted target = %v", err)
	}
	if exists(plain) {
		t.Error("unmounted target directory not removed")
	}
	_, err := h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{TargetPath: plain})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument)
	if got := h.nodeFake.Calls(mounttest.OpMount); got != 0 {
		t.Errorf("unpublish mounted something: %d", got)
	}

	// Stats: NotFound where nothing is mounted (even an existing directory), figures where it is.
	_, err = h.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: h.podDir})
	wantCode(t, err, codes.NotFound)
	_, err = h.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: missing})
	wantCode(t, err, codes.NotFound)
	_, err = h.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument)
	target := filepath.Join(h.podDir, "st", "mount")
	if _, err := h.node.NodePublishVolume(context.Background(), publishReq(id, target, rwx, false)); err != nil {
		t.Fatal(err)
	}
	st, err := h.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil {
		t.Fatal(err)
	}
	var bytes, inodes bool
	for _, u := range st.GetUsage() {
		if u.GetTotal() <= 0 || u.GetAvailable() < 0 || u.GetUsed() < 0 {
			t.Errorf("implausible usage %v", u)
		}
		bytes = bytes || u.GetUnit() == csi.VolumeUsage_BYTES
		inodes = inodes || u.GetUnit() == csi.VolumeUsage_INODES
	}
	if !bytes || !inodes {
		t.Errorf("usage %v lacks bytes or inodes", st.GetUsage())
	}
}

func TestNodeInfoAndCapabilities(t *testing.T) {
	h := start(t, harnessOpts{mode: ModeNode})
	info, err := h.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo = %v, %v", info, err)
	}
	caps, err := h.node.NodeGetCapabilities(context.Background(), &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range caps.GetCapabilities() {
		have[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME, csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
	} {
		if !have[want] {
			t.Errorf("node capabilities %v: %v missing", caps.GetCapabilities(), want)
		}
	}
}

// A hung mount (dead server) returns DeadlineExceeded instead of wedging the plugin.
func TestNodePublishHungMount(t *testing.T) {
	h := start(t, harnessOpts{})
	vol := h.createVolume("pvc-h", params())
	h.nodeFake.Timeout = 200 * time.Millisecond // the real mounter's deadline
	b := h.nodeFake.BlockNext(mounttest.OpMount)
	startT := time.Now()
	_, err := h.node.NodePublishVolume(context.Background(), publishReq(vol.GetVolumeId(), filepath.Join(h.podDir, "h", "mount"), rwx, false))
	wantCode(t, err, codes.DeadlineExceeded)
	if took := time.Since(startT); took > 5*time.Second {
		t.Errorf("hung publish took %v", took)
	}
	b.Release()
	// The node still serves other calls.
	if _, err := h.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestGracefulShutdown(t *testing.T) {
	h := start(t, harnessOpts{grace: 20 * time.Second})
	vol := h.createVolume("pvc-g", params())
	b := h.nodeFake.BlockNext(mounttest.OpMount)
	published := make(chan error, 1)
	target := filepath.Join(h.podDir, "g", "mount")
	go func() {
		_, err := h.node.NodePublishVolume(context.Background(), publishReq(vol.GetVolumeId(), target, rwx, false))
		published <- err
	}()
	<-b.Entered // the call is in flight, inside the mounter
	h.cancel()
	select {
	case err := <-h.served:
		t.Fatalf("Serve returned (%v) while a call was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	b.Release()
	if err := <-published; err != nil {
		t.Fatalf("in-flight publish = %v, want it to complete", err)
	}
	select {
	case err := <-h.served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
		h.served <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last call finished")
	}
	if _, ok := h.nodeFake.Mounted(target); !ok {
		t.Error("the completed publish left nothing mounted")
	}
	if exists(h.sock) {
		t.Error("socket file left behind")
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	h := start(t, harnessOpts{grace: 100 * time.Millisecond})
	vol := h.createVolume("pvc-g", params())
	b := h.nodeFake.BlockNext(mounttest.OpMount)
	defer b.Release()
	published := make(chan error, 1)
	go func() {
		_, err := h.node.NodePublishVolume(context.Background(), publishReq(vol.GetVolumeId(), filepath.Join(h.podDir, "g", "mount"), rwx, false))
		published <- err
	}()
	<-b.Entered
	h.cancel()
	select {
	case err := <-h.served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
		h.served <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
	if err := <-published; err == nil {
		t.Fatal("a call cut off by shutdown reported success")
	}
	if exists(h.sock) {
		t.Error("socket file left behind")
	}
}
