package volume

import (
	"fmt"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// CheckCapability accepts every CSI mount access mode and refuses raw block: an NFS directory has no
// block device behind it.
func CheckCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("volume capability is missing")
	}
	if c.GetBlock() != nil {
		return fmt.Errorf("raw block access is not supported: an NFS directory can only be mounted")
	}
	if c.GetMount() == nil {
		return fmt.Errorf("volume capability has neither mount nor block access type")
	}
	if fs := c.GetMount().GetFsType(); fs != "" && fs != "nfs" && fs != "nfs4" {
		return fmt.Errorf("fsType %q is not supported: Paddock volumes are NFS (leave fsType empty)", fs)
	}
	m := c.GetAccessMode()
	if m == nil || m.GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
		return fmt.Errorf("access mode is missing or UNKNOWN")
	}
	if _, ok := csi.VolumeCapability_AccessMode_Mode_name[int32(m.GetMode())]; !ok {
		return fmt.Errorf("access mode %d is not a CSI access mode", m.GetMode())
	}
	return nil
}

// CheckCapabilities checks a whole list; an empty list is an error (the CSI spec requires one).
func CheckCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("volume capabilities are missing")
	}
	for i, c := range caps {
		if err := CheckCapability(c); err != nil {
			return fmt.Errorf("volume capability %d: %w", i, err)
		}
	}
	return nil
}

// ReadOnlyMode tells whether an access mode only reads, so the node mounts it "ro".
func ReadOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// CapabilityMountFlags returns the mount flags the capabilities carry (a class's mountOptions; every
// capability of one request carries the same), refusing capabilities that disagree.
func CapabilityMountFlags(caps []*csi.VolumeCapability) ([]string, error) {
	var flags []string
	for i, c := range caps {
		f := c.GetMount().GetMountFlags()
		if i > 0 && !slices.Equal(f, flags) {
			return nil, fmt.Errorf("volume capability %d: mount flags %q differ from capability 0's %q", i, f, flags)
		}
		flags = f
	}
	return flags, nil
}
