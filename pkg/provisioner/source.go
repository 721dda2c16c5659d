package provisioner

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Content sources (clones and restores) and VolumeAttributesClasses, checked the way the external
// csi-provisioner v6 checks them (pkg/controller/controller.go: dataSource, getPVCSource,
// getSnapshotSource, prepareProvision), so that a claim gets the same answer through either path.

const (
	// CloneFinalizer is csi-provisioner's cloning-protection finalizer. Paddock uses the same name, so a
	// source protected by one path is recognised by the other after a switch between them.
	CloneFinalizer = "provisioner.storage.kubernetes.io/cloning-protection"

	kindClaim     = "PersistentVolumeClaim"
	kindSnapshot  = "VolumeSnapshot"
	snapshotGroup = snapv1.GroupName // snapshot.storage.k8s.io
)

// dataRef is the claim's data source, from spec.dataSource or, when that is empty, spec.dataSourceRef.
type dataRef struct {
	field                        string // the claim's field it came from, for messages
	group, kind, name, namespace string
}

func (r dataRef) String() string {
	return fmt.Sprintf("%s %s/%s", r.kind, r.namespace, r.name)
}

// dataSourceOf normalizes the claim's data source as csi-provisioner does: dataSource first (its
// namespace is the claim's), else dataSourceRef (which alone can name another namespace).
func dataSourceOf(c *v1.PersistentVolumeClaim) *dataRef {
	switch {
	case c.Spec.DataSource != nil:
		ds := c.Spec.DataSource
		return &dataRef{field: "spec.dataSource", group: deref(ds.APIGroup), kind: ds.Kind, name: ds.Name, namespace: c.Namespace}
	case c.Spec.DataSourceRef != nil:
		ds := c.Spec.DataSourceRef
		ns := deref(ds.Namespace)
		if ns == "" {
			ns = c.Namespace
		}
		return &dataRef{field: "spec.dataSourceRef", group: deref(ds.APIGroup), kind: ds.Kind, name: ds.Name, namespace: ns}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checks builds the errors of one Provision call; each names the claim (what), the field and the reason.
type checks struct{ what string }

// final: nothing changes the answer until the claim, its class or its source changes. InvalidArgument
// is what the library records as a ProvisioningFailed event and retries only slowly.
func (c checks) final(field, format string, a ...any) (controller.ProvisioningState, error) {
	return controller.ProvisioningFinished, status.Errorf(codes.InvalidArgument, "%s: %s: %s", c.what, field, fmt.Sprintf(format, a...))
}

// later: the source is not ready yet (not bound, not ReadyToUse, not created yet); the library records
// the event and retries with its backoff. Nothing has been created, so the state is NoChange.
func (c checks) later(field, format string, a ...any) (controller.ProvisioningState, error) {
	return controller.ProvisioningNoChange, status.Errorf(codes.FailedPrecondition, "%s: %s: %s; will retry", c.what, field, fmt.Sprintf(format, a...))
}

// apiError is a failed API read: retried, with the cause wrapped.
func (c checks) apiError(field, doing string, err error) (controller.ProvisioningState, error) {
	return controller.ProvisioningNoChange, fmt.Errorf("%s: %s: %s: %w; will retry", c.what, field, doing, err)
}

// source is a resolved content source: the CSI source and, for a clone, the source claim to protect.
type source struct {
	csi   *csi.VolumeContentSource
	claim *types.NamespacedName // set for clones
}

// resolveSource checks the claim's data source and maps it onto a CSI content source. A nil source
// with a nil error means the claim has none.
func (p *Provisioner) resolveSource(ctx context.Context, c checks, claim *v1.PersistentVolumeClaim, ref *dataRef) (*source, controller.ProvisioningState, error) {
	if ref == nil {
		return nil, controller.ProvisioningFinished, nil
	}
	switch {
	case ref.kind == kindClaim && ref.group == "":
		return p.cloneSource(ctx, c, claim, ref)
	case ref.kind == kindSnapshot:
		if ref.group != snapshotGroup {
			st, err := c.final(ref.field, "a VolumeSnapshot source must have apiGroup %s, not %q", snapshotGroup, ref.group)
			return nil, st, err
		}
		return p.snapshotSource(ctx, c, claim, ref)
	}
	st, err := c.final(ref.field, "a %s source with apiGroup %q cannot be cloned", ref.kind, ref.group)
	return nil, st, err
}

// cloneSource: the source claim must be in the claim's namespace, Bound to a PV of this driver that is
// bound back to it, and not larger than the new claim. As in csi-provisioner v6 (since v3.2), the
// source may be of another StorageClass of the same driver; Paddock's core then refuses a source on
// another export, since it copies inside one export.
func (p *Provisioner) cloneSource(ctx context.Context, c checks, claim *v1.PersistentVolumeClaim, ref *dataRef) (*source, controller.ProvisioningState, error) {
	if p.kube == nil {
		st, err := c.final(ref.field, "clones are not available: the provisioner has no Kubernetes client")
		return nil, st, err
	}
	src, err := p.kube.CoreV1().PersistentVolumeClaims(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
	if err != nil {
		st, err := c.apiError(ref.field, "getting source "+ref.String(), err)
		return nil, st, err
	}
	if src.Status.Phase != v1.ClaimBound {
		st, err := c.later(ref.field, "source %s is %s, not Bound", ref, orNone(string(src.Status.Phase)))
		return nil, st, err
	}
	// A source being deleted is refused unless a copy from it started before (its finalizer is there),
	// as csi-provisioner does for snapshots: that copy is finished rather than left half done.
	if src.DeletionTimestamp != nil && !slices.Contains(src.Finalizers, CloneFinalizer) {
		st, err := c.later(ref.field, "source %s is being deleted", ref)
		return nil, st, err
	}
	want := claim.Spec.Resources.Requests[v1.ResourceStorage]
	have := src.Spec.Resources.Requests[v1.ResourceStorage]
	if want.Cmp(have) < 0 {
		st, err := c.final(ref.field, "the claim requests %s, less than the %s of source %s; a clone must be at least as large as its source",
			want.String(), have.String(), ref)
		return nil, st, err
	}
	if src.Spec.VolumeName == "" {
		st, err := c.later(ref.field, "source %s names no volume yet", ref)
		return nil, st, err
	}
	pv, err := p.kube.CoreV1().PersistentVolumes().Get(ctx, src.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		st, err := c.apiError(ref.field, fmt.Sprintf("getting PV %s of source %s", src.Spec.VolumeName, ref), err)
		return nil, st, err
	}
	if pv.Spec.CSI == nil {
		st, err := c.final(ref.field, "source %s is on PV %s, which is not a CSI volume; only volumes of %s can be cloned by it", ref, pv.Name, p.name)
		return nil, st, err
	}
	if pv.Spec.CSI.Driver != p.name {
		st, err := c.final(ref.field, "source %s is on PV %s of CSI driver %s; only volumes of %s can be cloned by it", ref, pv.Name, pv.Spec.CSI.Driver, p.name)
		return nil, st, err
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode != v1.PersistentVolumeFilesystem {
		st, err := c.final(ref.field, "source %s is a %s volume; the clone is a Filesystem volume", ref, *pv.Spec.VolumeMode)
		return nil, st, err
	}
	if cr := pv.Spec.ClaimRef; cr == nil || cr.UID != src.UID || cr.Namespace != src.Namespace || cr.Name != src.Name || pv.Status.Phase != v1.VolumeBound {
		st, err := c.later(ref.field, "PV %s of source %s is not bound to it", pv.Name, ref)
		return nil, st, err
	}
	key := types.NamespacedName{Namespace: src.Namespace, Name: src.Name}
	return &source{
		csi:   &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: pv.Spec.CSI.VolumeHandle}}},
		claim: &key,
	}, controller.ProvisioningFinished, nil
}

// snapshotSource: the VolumeSnapshot must be in the claim's namespace, ReadyToUse, and bound to a
// VolumeSnapshotContent of this driver that is bound back to it and has a snapshotHandle; its
// restoreSize, when known, must fit in the claim.
func (p *Provisioner) snapshotSource(ctx context.Context, c checks, claim *v1.PersistentVolumeClaim, ref *dataRef) (*source, controller.ProvisioningState, error) {
	if p.snapshots == nil {
		st, err := c.final(ref.field, "restores from snapshots are not available: the provisioner has no VolumeSnapshot client")
		return nil, st, err
	}
	snap, err := p.snapshots.SnapshotV1().VolumeSnapshots(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
	if err != nil {
		st, err := c.apiError(ref.field, "getting source "+ref.String(), err)
		return nil, st, err
	}
	if snap.DeletionTimestamp != nil {
		st, err := c.later(ref.field, "source %s is being deleted", ref)
		return nil, st, err
	}
	if snap.Status == nil || snap.Status.BoundVolumeSnapshotContentName == nil {
		st, err := c.later(ref.field, "source %s is not bound to a VolumeSnapshotContent yet", ref)
		return nil, st, err
	}
	contentName := *snap.Status.BoundVolumeSnapshotContentName
	content, err := p.snapshots.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		st, err := c.apiError(ref.field, fmt.Sprintf("getting VolumeSnapshotContent %s of source %s", contentName, ref), err)
		return nil, st, err
	}
	if r := content.Spec.VolumeSnapshotRef; r.UID != snap.UID || r.Namespace != snap.Namespace || r.Name != snap.Name {
		st, err := c.later(ref.field, "VolumeSnapshotContent %s of source %s is bound to another snapshot", contentName, ref)
		return nil, st, err
	}
	if content.Spec.Driver != p.name {
		st, err := c.final(ref.field, "source %s is a snapshot of CSI driver %s (VolumeSnapshotContent %s); only snapshots of %s can be restored by it",
			ref, content.Spec.Driver, contentName, p.name)
		return nil, st, err
	}
	if snap.Status.ReadyToUse == nil || !*snap.Status.ReadyToUse {
		st, err := c.later(ref.field, "source %s is not ReadyToUse yet", ref)
		return nil, st, err
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil || *content.Status.SnapshotHandle == "" {
		st, err := c.later(ref.field, "VolumeSnapshotContent %s of source %s has no snapshotHandle yet", contentName, ref)
		return nil, st, err
	}
	if size := snap.Status.RestoreSize; size != nil {
		want := claim.Spec.Resources.Requests[v1.ResourceStorage]
		if want.Cmp(*size) < 0 {
			st, err := c.final(ref.field, "the claim requests %s, less than the restoreSize %s of source %s", want.String(), size.String(), ref)
			return nil, st, err
		}
	}
	return &source{csi: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: *content.Status.SnapshotHandle}}}}, controller.ProvisioningFinished, nil
}

// attributesClass returns the parameters of the claim's VolumeAttributesClass (nil without one).
func (p *Provisioner) attributesClass(ctx context.Context, c checks, claim *v1.PersistentVolumeClaim) (map[string]string, controller.ProvisioningState, error) {
	name := deref(claim.Spec.VolumeAttributesClassName)
	if name == "" {
		return nil, controller.ProvisioningFinished, nil
	}
	const field = "spec.volumeAttributesClassName"
	if p.kube == nil {
		st, err := c.final(field, "VolumeAttributesClasses are not available: the provisioner has no Kubernetes client")
		return nil, st, err
	}
	vac, err := p.kube.StorageV1().VolumeAttributesClasses().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		// Not found is retried too: the class may be created after the claim, as with csi-provisioner.
		st, err := c.apiError(field, "getting VolumeAttributesClass "+name, err)
		return nil, st, err
	}
	if vac.DriverName != p.name {
		st, err := c.final(field, "VolumeAttributesClass %s is for driver %s, not %s", name, vac.DriverName, p.name)
		return nil, st, err
	}
	return maps.Clone(vac.Parameters), controller.ProvisioningFinished, nil
}

func orNone(s string) string {
	if s == "" {
		return "not yet bound"
	}
	return s
}
