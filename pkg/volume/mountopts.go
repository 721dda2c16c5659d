package volume

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MountOptions is a class's (or a PV's) mountOptions, checked once and split into what each side uses.
// The node mounts a volume with the options as given. The controller mounts the whole export for
// itself with the same options minus those that only make sense where pods run, never takes a file
// lock and so always mounts with nolock. That keeps a pod without rpcbind (the controller's)
// from needing rpc.statd for NFSv3.
type MountOptions struct {
	// Vers is the NFS version the options pin (nfsvers= or vers=), "" when they pin none.
	Vers string
	// Node is every option but the version, in the order given (the node adds the version back).
	Node []string
	// Controller is the controller's canonical set: sorted, without duplicates, without the version,
	// node-only options and lock choices, and with nolock.
	Controller []string
}

// ControllerString is the controller's options as one comma-separated string: the key two classes'
// held mounts of one export share only if they are equal.
func (m MountOptions) ControllerString() string { return strings.Join(m.Controller, ",") }

// MountOptionsField is how errors name the source of mount options.
const MountOptionsField = "mountOptions"

// refusedOptions can never be right for a CSI mount: the call must return with the export mounted,
// in the place and state it asked for.
var refusedOptions = map[string]string{
	"bg":      "a background mount returns before the export is mounted",
	"remount": "it changes an existing mount instead of making one",
	"bind":    "it is not an NFS mount", "rbind": "it is not an NFS mount", "move": "it is not an NFS mount",
	"user": "it is an fstab option for unprivileged mounts", "users": "it is an fstab option for unprivileged mounts",
	"owner": "it is an fstab option for unprivileged mounts", "group": "it is an fstab option for unprivileged mounts",
}

// nodeOnlyOptions matter only where pods use the mount: they are left out of the controller's mount,
// which is private to the controller, always read-write, and never executes anything.
var nodeOnlyOptions = map[string]bool{
	"ro": true, "rw": true, "exec": true, "noexec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"nostrictatime": true, "lazytime": true, "nolazytime": true, "diratime": true, "nodiratime": true,
	"iversion": true, "noiversion": true, "mand": true, "nomand": true, "silent": true, "loud": true,
	"_netdev": true, "nofail": true, "auto": true, "noauto": true, "nouser": true, "defaults": true,
	"fsc": true, // FS-Cache needs cachefilesd, a node daemon
}

// nodeOnlyPrefixes are node-only options with a value.
var nodeOnlyPrefixes = []string{"context=", "fscontext=", "defcontext=", "rootcontext=", "x-", "comment="}

// ParseMountOptions checks mount options and splits them. Each entry may hold several options
// separated by commas, as mount(8) takes them. The error names the option and the reason.
func ParseMountOptions(opts []string) (MountOptions, error) {
	var m MountOptions
	for _, entry := range opts {
		for _, o := range strings.Split(entry, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			if err := checkOption(o); err != nil {
				return MountOptions{}, fmt.Errorf("%s: option %q %w", MountOptionsField, o, err)
			}
			k, val, hasVal := strings.Cut(o, "=")
			if k == "nfsvers" || k == "vers" {
				if !hasVal {
					return MountOptions{}, fmt.Errorf("%s: option %q has no version", MountOptionsField, o)
				}
				if err := validateNFSVers(val); err != nil {
					return MountOptions{}, fmt.Errorf("%s: option %q: %w", MountOptionsField, o, err)
				}
				if m.Vers != "" && m.Vers != val {
					return MountOptions{}, fmt.Errorf("%s: NFS version given twice, %q and %q", MountOptionsField, m.Vers, val)
				}
				m.Vers = val
				continue
			}
			m.Node = append(m.Node, o)
			if controllerDrops(k, o) {
				continue
			}
			m.Controller = append(m.Controller, o)
		}
	}
	m.Controller = append(m.Controller, "nolock")
	slices.Sort(m.Controller)
	m.Controller = slices.Compact(m.Controller)
	return m, nil
}

func checkOption(o string) error {
	for _, r := range o {
		if r < 0x21 || r == 0x7f {
			return fmt.Errorf("holds a space or control character")
		}
	}
	if why, ok := refusedOptions[o]; ok {
		return fmt.Errorf("is refused: %s", why)
	}
	return nil
}

func controllerDrops(key, o string) bool {
	if nodeOnlyOptions[o] {
		return true
	}
	for _, p := range nodeOnlyPrefixes {
		if strings.HasPrefix(o, p) {
			return true
		}
	}
	// The controller takes no file locks: its own nolock replaces whatever the class chose.
	return key == "lock" || key == "nolock" || key == "local_lock"
}

// WithMountOptions sets how the controller mounts v's export from a class's or PV's mountOptions. A
// version they pin becomes the volume's when it has none, and must agree with it when it has one.
func (v Volume) WithMountOptions(opts []string) (Volume, error) {
	m, err := ParseMountOptions(opts)
	if err != nil {
		return v, err
	}
	switch {
	case m.Vers == "":
	case v.NFSVers == "":
		v.NFSVers = m.Vers
	case v.NFSVers != m.Vers:
		return v, fmt.Errorf("%s: nfsvers=%s disagrees with the volume's NFS version %s (parameter nfsvers or its ID)", MountOptionsField, m.Vers, v.NFSVers)
	}
	v.MountOptions = m.ControllerString()
	return v, nil
}

// FromPV finds the volume of a PV of this driver: from a Paddock volume ID, or for a static PV from its
// volumeAttributes (FromContext), mounted with the PV's mountOptions.
func FromPV(handle string, attrs map[string]string, mountOptions []string) (Volume, error) {
	v, err := ParseID(handle)
	if errors.Is(err, ErrNotPaddockID) {
		v, err = FromContext(handle, attrs)
	}
	if err != nil {
		return v, err
	}
	return v.WithMountOptions(mountOptions)
}
