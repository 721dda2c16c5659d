package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// StorageClass parameter keys. They are plain camelCase, never prefixed.
const (
	ParamServer           = "server"
	ParamShare            = "share"
	ParamSubDir           = "subDir"
	ParamOnDelete         = "onDelete"
	ParamArchiveRetention = "archiveRetention"
	ParamMode             = "mode"
	ParamUID              = "uid"
	ParamGID              = "gid"
	ParamReclaimPolicy    = "reclaimPolicy"
	ParamReuseExisting    = "reuseExisting"
	ParamNFSVers          = "nfsvers"
)

// Keys the external csi-provisioner adds with --extra-create-metadata; they feed the template.
const (
	csiPrefix       = "csi.storage.k8s.io/"
	CSIPVCName      = csiPrefix + "pvc/name"
	CSIPVCNamespace = csiPrefix + "pvc/namespace"
	CSIPVName       = csiPrefix + "pv/name"
)

// KnownParams lists every parameter key, for error messages and docs.
func KnownParams() []string {
	k := []string{ParamServer, ParamShare, ParamSubDir, ParamOnDelete, ParamArchiveRetention, ParamMode,
		ParamUID, ParamGID, ParamReclaimPolicy, ParamReuseExisting, ParamNFSVers, ParamQuota, ParamQuotaAgent, ParamQuotaInodes}
	sort.Strings(k)
	return k
}

// ReclaimPolicy mirrors the PV reclaim policies; Recycle is the one a StorageClass cannot set itself.
type ReclaimPolicy string

const (
	ReclaimUnset   ReclaimPolicy = ""
	ReclaimDelete  ReclaimPolicy = "Delete"
	ReclaimRetain  ReclaimPolicy = "Retain"
	ReclaimRecycle ReclaimPolicy = "Recycle"
)

// DefaultMode lets pods running as any user write to a new volume, as NFS provisioners conventionally
// do; classes that know their users set mode, uid and gid to tighten it.
const DefaultMode = 0o777

// Params is a validated StorageClass parameter set.
type Params struct {
	Server           string
	Share            string
	SubDir           Template
	OnDelete         OnDelete
	ArchiveRetention time.Duration
	Mode             uint32
	UID, GID         int // -1 when unset
	ReclaimPolicy    ReclaimPolicy
	ReuseExisting    bool
	NFSVers          string
	Quota            QuotaParams
	// Template inputs the csi-provisioner passed as parameters (csi.storage.k8s.io/*).
	CSIVars TemplateVars
}

// ParamError names the parameter at fault, so a PVC event says which key to fix.
type ParamError struct {
	Key    string
	Value  string
	Reason string
}

func (e *ParamError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("parameter %q: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("parameter %q=%q: %s", e.Key, e.Value, e.Reason)
}

// ParseParams validates StorageClass parameters. Unknown keys are refused (a typo must not silently
// fall back to a default that deletes data); csi.storage.k8s.io/* keys are accepted.
func ParseParams(m map[string]string) (Params, error) {
	p := Params{OnDelete: OnDeleteDelete, Mode: DefaultMode, UID: -1, GID: -1}
	var unknown []string
	for k := range m {
		if strings.HasPrefix(k, csiPrefix) {
			continue
		}
		if !slices.Contains(KnownParams(), k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return p, &ParamError{Key: unknown[0], Reason: fmt.Sprintf("unknown parameter; known parameters are %s (and csi.storage.k8s.io/*)",
			strings.Join(KnownParams(), ", "))}
	}
	p.Server = m[ParamServer]
	if p.Server == "" {
		return p, &ParamError{Key: ParamServer, Reason: "required: the NFS server's hostname or IP address"}
	}
	if err := ValidateServer(p.Server); err != nil {
		return p, &ParamError{Key: ParamServer, Value: p.Server, Reason: err.Error()}
	}
	p.Share = m[ParamShare]
	if p.Share == "" {
		return p, &ParamError{Key: ParamShare, Reason: "required: the absolute export path, like /srv/nfs"}
	}
	if err := ValidateShare(p.Share); err != nil {
		return p, &ParamError{Key: ParamShare, Value: p.Share, Reason: err.Error()}
	}
	tmpl := DefaultSubDir
	if v, ok := m[ParamSubDir]; ok {
		tmpl = v
	}
	t, err := ParseTemplate(tmpl)
	if err != nil {
		return p, &ParamError{Key: ParamSubDir, Value: tmpl, Reason: err.Error()}
	}
	p.SubDir = t
	if v, ok := m[ParamOnDelete]; ok {
		od := OnDelete(v)
		if _, known := onDeleteCode[od]; !known {
			return p, &ParamError{Key: ParamOnDelete, Value: v, Reason: "must be one of delete, archive, retain"}
		}
		p.OnDelete = od
	}
	if v, ok := m[ParamArchiveRetention]; ok {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return p, &ParamError{Key: ParamArchiveRetention, Value: v, Reason: "not a duration like 720h"}
		case d < time.Second:
			return p, &ParamError{Key: ParamArchiveRetention, Value: v, Reason: "must be at least 1s"}
		case d > maxArchiveRetention:
			// The volume ID cannot carry more; such a volume could never be deleted or mounted.
			return p, &ParamError{Key: ParamArchiveRetention, Value: v, Reason: "must be at most 876000h (100 years)"}
		case p.OnDelete != OnDeleteArchive:
			return p, &ParamError{Key: ParamArchiveRetention, Value: v, Reason: "only meaningful with onDelete=archive"}
		}
		p.ArchiveRetention = d.Truncate(time.Second)
	}
	if v, ok := m[ParamMode]; ok {
		n, err := strconv.ParseUint(v, 8, 32)
		if err != nil || n > 0o7777 {
			return p, &ParamError{Key: ParamMode, Value: v, Reason: "must be an octal mode like 0775 (at most 07777)"}
		}
		p.Mode = uint32(n)
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{ParamUID, &p.UID}, {ParamGID, &p.GID}} {
		v, ok := m[f.key]
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n >= 1<<31 {
			return p, &ParamError{Key: f.key, Value: v, Reason: "must be a numeric ID between 0 and 2147483647"}
		}
		*f.dst = int(n)
	}
	if v, ok := m[ParamReclaimPolicy]; ok {
		switch rp := ReclaimPolicy(v); rp {
		case ReclaimDelete, ReclaimRetain, ReclaimRecycle:
			p.ReclaimPolicy = rp
		default:
			return p, &ParamError{Key: ParamReclaimPolicy, Value: v, Reason: "must be Delete, Retain or Recycle"}
		}
	}
	if v, ok := m[ParamReuseExisting]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, &ParamError{Key: ParamReuseExisting, Value: v, Reason: "must be true or false"}
		}
		p.ReuseExisting = b
	}
	if v, ok := m[ParamNFSVers]; ok {
		if err := validateNFSVers(v); err != nil {
			return p, &ParamError{Key: ParamNFSVers, Value: v, Reason: err.Error()}
		}
		p.NFSVers = v
	}
	q, err := parseQuota(m)
	if err != nil {
		return p, err
	}
	p.Quota = q
	p.CSIVars = TemplateVars{PVCName: m[CSIPVCName], PVCNamespace: m[CSIPVCNamespace], PVName: m[CSIPVName]}
	return p, nil
}

// Volume builds the volume a CreateVolume with this class makes: name is the CSI volume name
// (the PV name), vars the template inputs known to the caller.
func (p Params) Volume(name string, vars TemplateVars) (Volume, error) {
	if err := ValidateName(name); err != nil {
		return Volume{}, fmt.Errorf("volume name: %w", err)
	}
	if isStaticName(name) {
		// A claim names its volume: a provisioned volume of a static volume's name could take over the
		// static directory (or be taken over by its PV) wherever the class's subDir lands on it.
		return Volume{}, fmt.Errorf("volume name %q is reserved for hand-made static PVs", name)
	}
	if vars.PVName == "" {
		vars.PVName = name
	}
	if vars.PVCName == "" {
		vars.PVCName = p.CSIVars.PVCName
	}
	if vars.PVCNamespace == "" {
		vars.PVCNamespace = p.CSIVars.PVCNamespace
	}
	dir, err := p.SubDir.Expand(vars)
	if err != nil {
		return Volume{}, &ParamError{Key: ParamSubDir, Value: p.SubDir.String(), Reason: err.Error()}
	}
	v := Volume{Server: p.Server, Share: p.Share, SubDir: dir, Name: name, OnDelete: p.OnDelete,
		ArchiveRetention: p.ArchiveRetention, NFSVers: p.NFSVers, QuotaAgent: p.Quota.Agent}
	return v, v.Validate()
}

// Context is the volume context CreateVolume returns and NodePublishVolume receives. It lets hand-made
// static PVs name their directory without a Paddock volume ID.
func (v Volume) Context() map[string]string {
	c := map[string]string{ParamServer: v.Server, ParamShare: v.Share, ParamSubDir: v.SubDir}
	if v.NFSVers != "" {
		c[ParamNFSVers] = v.NFSVers
	}
	return c
}

// LegacyStaticName is the one volume name release 0.1.0 gave every static volume. A recycle recorded
// it in the export's name index for the first static directory it claimed, after which every other
// static volume of that export was "volume static exists with different arguments". Claims of that name
// are still honoured as the static volume at their subDir (share.Workspace.Scrub).
const LegacyStaticName = "static"

// staticPrefix starts every static volume name. Provisioned names are PV names (pvc-<uid>);
// Params.Volume refuses the static ones, so no CreateVolume can ever own a static volume's claim.
const staticPrefix = "static-"

// staticHashLen is how many bytes of the SHA-256 of its subDir a static volume name carries: 128 bits,
// so two directories never share one, in 39 bytes that keep the volume's ID and log lines short.
const staticHashLen = 16

// StaticName is the volume name of the hand-made PV whose directory is subDir: "static-" and the first
// 128 bits of the SHA-256 of subDir in hex (one safe path component). Each static directory of an export
// gets a name of its own, so any number of them can be claimed there, and the same one on every call,
// so a retry after a crash finds its own earlier claim. The export is not hashed: names are per export.
// (Ownership never rests on the name alone: a claim is found by its full subDir.)
func StaticName(subDir string) string {
	sum := sha256.Sum256([]byte(subDir))
	return staticPrefix + hex.EncodeToString(sum[:staticHashLen])
}

// isStaticName tells a name StaticName gives (or gave, in 0.1.0) to a static volume.
func isStaticName(name string) bool {
	h, ok := strings.CutPrefix(name, staticPrefix)
	if !ok {
		return name == LegacyStaticName
	}
	if len(h) != 2*staticHashLen {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// FromContext builds the volume a static PV describes with volumeAttributes (server, share, subDir,
// optionally nfsvers). Its handle is not used as the volume name: hand-written handles often hold '/'
// and other characters a name may not, and two PVs may name one directory with different handles. A
// static volume is named after its directory (StaticName) and is never deleted by Paddock (onDelete
// retain). Prefixed keys (with a '/', such as csi.storage.k8s.io/* or
// storage.kubernetes.io/csiProvisionerIdentity) belong to Kubernetes and are ignored.
func FromContext(handle string, ctx map[string]string) (Volume, error) {
	for k := range ctx {
		if strings.Contains(k, "/") {
			continue
		}
		switch k {
		case ParamServer, ParamShare, ParamSubDir, ParamNFSVers:
		default:
			return Volume{}, &ParamError{Key: k, Reason: "unknown volume attribute; known: server, share, subDir, nfsvers"}
		}
	}
	v := Volume{Server: ctx[ParamServer], Share: ctx[ParamShare], SubDir: ctx[ParamSubDir], NFSVers: ctx[ParamNFSVers],
		Name: StaticName(ctx[ParamSubDir]), OnDelete: OnDeleteRetain}
	if err := ValidateServer(v.Server); err != nil {
		return Volume{}, &ParamError{Key: ParamServer, Value: v.Server, Reason: err.Error()}
	}
	if err := ValidateShare(v.Share); err != nil {
		return Volume{}, &ParamError{Key: ParamShare, Value: v.Share, Reason: err.Error()}
	}
	if err := ValidateSubDir(v.SubDir); err != nil {
		return Volume{}, &ParamError{Key: ParamSubDir, Value: v.SubDir, Reason: err.Error()}
	}
	if v.NFSVers != "" {
		if err := validateNFSVers(v.NFSVers); err != nil {
			return Volume{}, &ParamError{Key: ParamNFSVers, Value: v.NFSVers, Reason: err.Error()}
		}
	}
	return v, nil
}

// FileMode turns an octal mode from a class or a VolumeAttributesClass (with setuid, setgid and sticky
// bits) into an os.FileMode.
func FileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// Octal is FileMode's inverse: the permission and special bits as an octal number.
func Octal(m os.FileMode) uint32 {
	o := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		o |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		o |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		o |= 0o1000
	}
	return o
}
