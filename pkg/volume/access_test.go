package volume

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fsType string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

// allModes is every known CSI access mode except UNKNOWN, read from the generated enum so a new mode
// in a future spec is covered automatically.
func allModes(t *testing.T) []csi.VolumeCapability_AccessMode_Mode {
	var modes []csi.VolumeCapability_AccessMode_Mode
	for n := range csi.VolumeCapability_AccessMode_Mode_name {
		if n != int32(csi.VolumeCapability_AccessMode_UNKNOWN) {
			modes = append(modes, csi.VolumeCapability_AccessMode_Mode(n))
		}
	}
	if len(modes) < 7 {
		t.Fatalf("only %d CSI access modes known", len(modes))
	}
	return modes
}

func TestCheckCapabilityMountModes(t *testing.T) {
	named := []csi.VolumeCapability_AccessMode_Mode{
		csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,        // RWO
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,   //
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,    // ROX
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,  //
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,   // RWX
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, // RWOP
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,  //
	}
	for _, m := range append(named, allModes(t)...) {
		for _, fs := range []string{"", "nfs", "nfs4"} {
			if err := CheckCapability(mountCap(m, fs)); err != nil {
				t.Errorf("mount %s fsType %q: %v", m, fs, err)
			}
		}
	}
}

func TestCheckCapabilityRefused(t *testing.T) {
	tests := []struct {
		name    string
		c       *csi.VolumeCapability
		mention string
	}{
		{"nil", nil, "missing"},
		{"empty", &csi.VolumeCapability{}, "neither mount nor block"},
		{"no access type", &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}},
			"neither mount nor block"},
		{"nil access mode", &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}},
			"access mode"},
		{"unknown mode", mountCap(csi.VolumeCapability_AccessMode_UNKNOWN, ""), "UNKNOWN"},
		{"undefined mode", mountCap(csi.VolumeCapability_AccessMode_Mode(99), ""), "not a CSI access mode"},
		{"negative mode", mountCap(csi.VolumeCapability_AccessMode_Mode(-1), ""), "not a CSI access mode"},
		{"ext4", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4"), "ext4"},
		{"xfs", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "xfs"), "xfs"},
		{"NFS upper", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "NFS"), "NFS"},
		{"nfs3", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "nfs3"), "nfs3"},
		{"cifs", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "cifs"), "cifs"},
	}
	for _, m := range allModes(t) {
		tests = append(tests, struct {
			name    string
			c       *csi.VolumeCapability
			mention string
		}{"block " + m.String(), blockCap(m), "block"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCapability(tc.c)
			if err == nil {
				t.Fatalf("CheckCapability(%v) = nil, want an error", tc.c)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestCheckCapabilities(t *testing.T) {
	rwx := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")
	rox := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "nfs")
	if err := CheckCapabilities([]*csi.VolumeCapability{rwx, rox}); err != nil {
		t.Errorf("CheckCapabilities(rwx, rox) = %v", err)
	}
	if err := CheckCapabilities(nil); err == nil {
		t.Error("CheckCapabilities(nil) = nil, want an error")
	}
	if err := CheckCapabilities([]*csi.VolumeCapability{}); err == nil {
		t.Error("CheckCapabilities([]) = nil, want an error")
	}
	err := CheckCapabilities([]*csi.VolumeCapability{rwx, blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
	if err == nil || !strings.Contains(err.Error(), "capability 1") {
		t.Errorf("CheckCapabilities(rwx, block) = %v, want an error naming capability 1", err)
	}
	if err := CheckCapabilities([]*csi.VolumeCapability{rwx, nil}); err == nil {
		t.Error("CheckCapabilities(rwx, nil) = nil, want an error")
	}
}

func TestReadOnlyMode(t *testing.T) {
	for _, m := range append(allModes(t), csi.VolumeCapability_AccessMode_UNKNOWN, csi.VolumeCapability_AccessMode_Mode(99)) {
		want := m == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY || m == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		if got := ReadOnlyMode(mountCap(m, "")); got != want {
			t.Errorf("ReadOnlyMode(%s) = %v, want %v", m, got, want)
		}
	}
	if ReadOnlyMode(nil) {
		t.Error("ReadOnlyMode(nil) = true")
	}
	if ReadOnlyMode(&csi.VolumeCapability{}) {
		t.Error("ReadOnlyMode(no access mode) = true")
	}
}
