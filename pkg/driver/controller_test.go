package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/paddock-csi/paddock/pkg/volume"
)

func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		mode           Mode
		wantController bool
	}{{ModeAll, true}, {ModeController, true}, {ModeNode, false}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			h := start(t, harnessOpts{mode: tc.mode})
			info, err := h.ident.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
			if err != nil || info.GetName() != DefaultName || info.GetVendorVersion() != "v9.9.9-test" {
				t.Fatalf("GetPluginInfo = %v, %v", info, err)
			}
			caps, err := h.ident.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var controller, expansion bool
			for _, c := range caps.GetCapabilities() {
				if c.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE {
					controller = true
				}
				if c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE {
					expansion = true
				}
			}
			if controller != tc.wantController || expansion != tc.wantController {
				t.Errorf("capabilities %v: controller %t expansion %t, want %t", caps.GetCapabilities(), controller, expansion, tc.wantController)
			}
			probe, err := h.ident.Probe(context.Background(), &csi.ProbeRequest{})
			if err != nil || !probe.GetReady().GetValue() {
				t.Errorf("Probe = %v, %v", probe, err)
			}
			// Only the mode's services are served.
			_, cerr := h.ctrl.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
			_, nerr := h.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
			if (cerr == nil) != tc.wantController {
				t.Errorf("controller service served = %t, want %t (%v)", cerr == nil, tc.wantController, cerr)
			}
			if (nerr == nil) != (tc.mode != ModeController) {
				t.Errorf("node service served = %t in %s mode (%v)", nerr == nil, tc.mode, nerr)
			}
		})
	}
}

func TestNewRefusesIncompleteSetups(t *testing.T) {
	ok := Options{Name: DefaultName, Mode: ModeAll, NodeID: "n", FSTimeout: 1}
	if _, err := New(ok, nil, nil); err == nil {
		t.Error("New in all mode without a workspace or mounter succeeded")
	}
	bad := []Options{
		{Name: DefaultName, Mode: "both", NodeID: "n", FSTimeout: 1},
		{Name: "", Mode: ModeNode, NodeID: "n", FSTimeout: 1},
		{Name: DefaultName, Mode: ModeNode, FSTimeout: 1},
		{Name: DefaultName, Mode: ModeNode, NodeID: "n"},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
}

func TestCreateVolume(t *testing.T) {
	h := start(t, harnessOpts{})
	const name = "pvc-0b9d8a36-93f2-4d3a-a0de-4b7d8d3c2f10"
	req := &csi.CreateVolumeRequest{Name: name, Parameters: params("mode", "0750", "uid", "1000", "gid", "2000"),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}
	resp, err := h.ctrl.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVolume()
	if len(v.GetVolumeId()) >= 128 {
		t.Errorf("volume ID is %d bytes: %q", len(v.GetVolumeId()), v.GetVolumeId())
	}
	if v.GetCapacityBytes() != 1<<30 {
		t.Errorf("capacity %d", v.GetCapacityBytes())
	}
	vc := v.GetVolumeContext()
	if vc["server"] != testServer || vc["share"] != testShare || vc["subDir"] != name {
		t.Errorf("volume context = %v", vc)
	}
	fi, err := os.Stat(filepath.Join(h.export, name))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("volume directory: %v, %v", fi, err)
	}
	// Same name again: same volume.
	again, err := h.ctrl.CreateVolume(context.Background(), req)
	if err != nil || again.GetVolume().GetVolumeId() != v.GetVolumeId() || again.GetVolume().GetCapacityBytes() != 1<<30 {
		t.Fatalf("repeated CreateVolume = %v, %v", again, err)
	}
	// Same name, incompatible size.
	for _, cr := range []*csi.CapacityRange{{RequiredBytes: 2 << 30}, {RequiredBytes: 1, LimitBytes: 1 << 20}} {
		bigger := &csi.CreateVolumeRequest{Name: name, Parameters: req.Parameters, VolumeCapabilities: req.VolumeCapabilities, CapacityRange: cr}
		_, err := h.ctrl.CreateVolume(context.Background(), bigger)
		wantCode(t, err, codes.AlreadyExists)
	}
	// An impossible range.
	_, err = h.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-r", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, CapacityRange: &csi.CapacityRange{RequiredBytes: 10, LimitBytes: 5}})
	wantCode(t, err, codes.OutOfRange)
	// A directory that exists without Paddock's claim.
	if err := os.Mkdir(filepath.Join(h.export, "pvc-squatted"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = h.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-squatted", Parameters: params(),
		VolumeCapabilities: []*csi.VolumeCapability{rwx}})
	wantCode(t, err, codes.AlreadyExists, "reuseExisting")

	// ValidateVolumeCapabilities, ControllerGetVolume and expansion of the real volume.
	val, err := h.ctrl.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: v.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{rwx}})
	if err != nil || val.GetConfirmed() == nil {
		t.Errorf("ValidateVolumeCapabilities = %v, %v", val, err)
	}
	val, err = h.ctrl.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: v.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}}})
	if err != nil || val.GetConfirmed() != nil || val.GetMessage() == "" {
		t.Errorf("ValidateVolumeCapabilities(block) = %v, %v; want unconfirmed with a message", val, err)
	}
	got, err := h.ctrl.ControllerGetVolume(context.Background(), &csi.ControllerGetVolumeRequest{VolumeId: v.GetVolumeId()})
	if err != nil || got.GetVolume().GetVolumeContext()["subDir"] != name {
		t.Errorf("ControllerGetVolume = %v, %v", got, err)
	}
	exp, err := h.ctrl.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{
		VolumeId: v.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 30}})
	if err != nil || exp.GetCapacityBytes() != 3<<30 || exp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume = %v, %v", exp, err)
	}
	// After expansion CreateVolume's idempotency sees the new size.
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 3 << 30}
	if again, err := h.ctrl.CreateVolume(context.Background(), req); err != nil || again.GetVolume().GetCapacityBytes() != 3<<30 {
		t.Errorf("CreateVolume after expansion = %v, %v", again, err)
	}
}

func TestCreateVolumeInvalid(t *testing.T) {
	h := start(t, harnessOpts{})
	h.createVolume("pvc-existing", params()) // so the export has its metadata area
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	caps := []*csi.VolumeCapability{rwx}
	tests := []struct {
		name    string
		req     *csi.CreateVolumeRequest
		mention []string
	}{
		{"no name", &csi.CreateVolumeRequest{Parameters: params(), VolumeCapabilities: caps}, []string{"name"}},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params()}, []string{"capabilit"}},
		{"block", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params(), VolumeCapabilities: []*csi.VolumeCapability{rwx, block}}, []string{"block"}},
		{"unknown parameter", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params("onDelet", "retain"), VolumeCapabilities: caps}, []string{"onDelet"}},
		{"no server", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: map[string]string{"share": testShare}, VolumeCapabilities: caps}, []string{"server"}},
		{"bad mode", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params("mode", "999"), VolumeCapabilities: caps}, []string{"mode"}},
		{"clone across exports", &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params(), VolumeCapabilities: caps,
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{
				VolumeId: "1#d##other.example#/export#pvc-src#"}}}}, []string{"between exports"}},
		{"name with a slash", &csi.CreateVolumeRequest{Name: "../pvc", Parameters: params(), VolumeCapabilities: caps}, nil},
		{"name dot dot", &csi.CreateVolumeRequest{Name: "..", Parameters: params(), VolumeCapabilities: caps}, nil},
	}
	for _, sub := range []string{"../x", "/abs", ".paddock/x", ".paddock", ".PADDOCK/trash", "a/../../x", "a/../.paddock", "./x", "", "."} {
		tests = append(tests, struct {
			name    string
			req     *csi.CreateVolumeRequest
			mention []string
		}{"subDir " + sub, &csi.CreateVolumeRequest{Name: "pvc-a", Parameters: params("subDir", sub), VolumeCapabilities: caps}, []string{"subDir"}})
	}
	for _, hostile := range []struct{ key, value, tmpl string }{
		{"csi.storage.k8s.io/pvc/name", "..", "${pvc.metadata.name}"},
		{"csi.storage.k8s.io/pvc/name", ".", "${pvc.metadata.name}"},
		{"csi.storage.k8s.io/pvc/name", "../../etc", "${pvc.metadata.name}"},
		{"csi.storage.k8s.io/pvc/namespace", "..", "${pvc.metadata.namespace}/${pvc.metadata.name}"},
		{"csi.storage.k8s.io/pvc/name", "paddock", ".${pvc.metadata.name}/x"},
		{"csi.storage.k8s.io/pvc/name", "", "${pvc.metadata.name}"},
	} {
		p := params("subDir", hostile.tmpl, hostile.key, hostile.value)
		if hostile.key != "csi.storage.k8s.io/pvc/name" {
			p["csi.storage.k8s.io/pvc/name"] = "claim"
		}
		tests = append(tests, struct {
			name    string
			req     *csi.CreateVolumeRequest
			mention []string
		}{"template " + hostile.tmpl + " with " + hostile.key + "=" + hostile.value,
			&csi.CreateVolumeRequest{Name: "pvc-a", Parameters: p, VolumeCapabilities: caps}, []string{"subDir"}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, outside := listing(t, h.export), listing(t, h.outside)
			_, err := h.ctrl.CreateVolume(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.mention...)
			if got := listing(t, h.export); got != before {
				t.Errorf("refused CreateVolume changed the export:\n%s\n---\n%s", before, got)
			}
			if got := listing(t, h.outside); got != outside {
				t.Errorf("refused CreateVolume changed the directory beside the export")
			}
		})
	}
}

func TestDeleteVolume(t *testing.T) {
	h := start(t, harnessOpts{})
	victim := h.createVolume("pvc-victim", params())
	if err := os.WriteFile(filepath.Join(h.export, "pvc-victim", "data"), []byte("victim's"), 0o644); err != nil {
		t.Fatal(err)
	}
	forge := func(name, subDir string, od volume.OnDelete) string {
		return volume.Volume{Server: testServer, Share: testShare, SubDir: subDir, Name: name, OnDelete: od}.ID()
	}
	tests := []struct {
		name string
		id   string
		code codes.Code
	}{
		{"not a Paddock ID", "nfs.example:/export/pvc-victim", codes.OK},
		{"another driver's handle", "vol-0123456789", codes.OK},
		{"export root", forge("pvc-x", ".", volume.OnDeleteDelete), codes.InvalidArgument},
		{"export root by slash", forge("pvc-x", "/", volume.OnDeleteDelete), codes.InvalidArgument},
		{"metadata area", forge("pvc-x", ".paddock", volume.OnDeleteDelete), codes.InvalidArgument},
		{"trash", forge("pvc-x", ".paddock/trash", volume.OnDeleteDelete), codes.InvalidArgument},
		{"claims", forge("pvc-x", ".paddock/claims", volume.OnDeleteArchive), codes.InvalidArgument},
		{"trash, case folded", forge("pvc-x", ".Paddock/trash", volume.OnDeleteDelete), codes.InvalidArgument},
		{"outside", forge("pvc-x", "../outside", volume.OnDeleteDelete), codes.InvalidArgument},
		{"outside through a volume", forge("pvc-x", "pvc-victim/../../outside", volume.OnDeleteDelete), codes.InvalidArgument},
		// The thief's volume does not exist (the directory is another volume's): OK, nothing touched.
		{"another volume's directory", forge("pvc-thief", "pvc-victim", volume.OnDeleteDelete), codes.OK},
		{"another volume's directory, archive", forge("pvc-thief", "pvc-victim", volume.OnDeleteArchive), codes.OK},
		{"truncated ID", victim.GetVolumeId()[:len(victim.GetVolumeId())-3] + "#x#y", codes.InvalidArgument},
		{"never created", forge("pvc-never", "pvc-never", volume.OnDeleteDelete), codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, outside := listing(t, h.export), listing(t, h.outside)
			_, err := h.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			wantCode(t, err, tc.code)
			if got := listing(t, h.export); got != before {
				t.Errorf("DeleteVolume(%q) changed the export:\n%s\n---\n%s", tc.id, before, got)
			}
			if got := listing(t, h.outside); got != outside {
				t.Errorf("DeleteVolume(%q) changed the directory beside the export", tc.id)
			}
		})
	}
	_, err := h.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument)

	// The real delete moves the directory into the trash; a repeat is a no-op.
	for i := 0; i < 2; i++ {
		if _, err := h.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: victim.GetVolumeId()}); err != nil {
			t.Fatalf("DeleteVolume #%d = %v", i, err)
		}
	}
	if exists(filepath.Join(h.export, "pvc-victim")) {
		t.Fatal("volume directory still in place")
	}
}

func TestUnknownVolumesNotFound(t *testing.T) {
	h := start(t, harnessOpts{})
	h.createVolume("pvc-real", params())
	missing := volume.Volume{Server: testServer, Share: testShare, SubDir: "pvc-missing", Name: "pvc-missing", OnDelete: volume.OnDeleteDelete}.ID()
	for _, id := range []string{"not-a-paddock-id", missing, "1#garbage"} {
		_, err := h.ctrl.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
			VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{rwx}})
		wantCode(t, err, codes.NotFound)
		_, err = h.ctrl.ControllerGetVolume(context.Background(), &csi.ControllerGetVolumeRequest{VolumeId: id})
		wantCode(t, err, codes.NotFound)
		_, err = h.ctrl.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{
			VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 1}})
		wantCode(t, err, codes.NotFound)
	}
	if exists(filepath.Join(h.export, "pvc-missing")) {
		t.Error("a lookup created the volume")
	}
	_, err := h.ctrl.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: missing})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.ctrl.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{VolumeId: missing})
	wantCode(t, err, codes.InvalidArgument)
}

func TestControllerCapabilities(t *testing.T) {
	h := start(t, harnessOpts{mode: ModeController})
	resp, err := h.ctrl.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.GetCapabilities() {
		got = append(got, c.GetRpc().GetType().String())
	}
	for _, want := range []string{"CREATE_DELETE_VOLUME", "EXPAND_VOLUME", "GET_VOLUME"} {
		if !strings.Contains(strings.Join(got, ","), want) {
			t.Errorf("controller capabilities %v lack %s", got, want)
		}
	}
}
