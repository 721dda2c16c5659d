// Package provisioner is Paddock's embedded dynamic provisioner: it watches claims whose StorageClass
// names the driver (sig-storage-lib-external-provisioner) and maps them onto the same core calls the
// CSI CreateVolume and DeleteVolume use, so a StorageClass behaves the same through either path. Having
// the whole claim in hand, it also feeds labels and annotations to subDir templates and writes the
// class's reclaimPolicy parameter (Recycle, which a StorageClass cannot carry) into the PV. Clones,
// restores from VolumeSnapshots and VolumeAttributesClasses are checked as the external
// csi-provisioner checks them (source.go).
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/metrics"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// Core is what the provisioner needs from the driver; *driver.Driver implements it.
type Core interface {
	Create(ctx context.Context, r driver.CreateRequest) (*csi.Volume, error)
	Delete(ctx context.Context, r driver.DeleteRequest) error
}

// Provisioner implements controller.Provisioner and controller.BlockProvisioner.
type Provisioner struct {
	name      string // CSI driver name, written into every PV
	core      Core
	kube      kubernetes.Interface // source claims and PVs, VolumeAttributesClasses; nil: refused
	snapshots snapclient.Interface // VolumeSnapshots and their contents; nil: restores refused
	recorder  record.EventRecorder // events of its own (the library records the failures); may be nil
	guard     *cloneGuard          // with kube: the source claims' cloning-protection finalizer
}

var (
	_ controller.Provisioner      = (*Provisioner)(nil)
	_ controller.BlockProvisioner = (*Provisioner)(nil)
)

// Option configures a Provisioner.
type Option func(*Provisioner)

// WithKubeClient lets the provisioner read source claims, their PVs and VolumeAttributesClasses, and
// put the cloning-protection finalizer on source claims. Without it such claims are refused.
func WithKubeClient(c kubernetes.Interface) Option {
	return func(p *Provisioner) { p.kube = c }
}

// WithSnapshotClient lets the provisioner read VolumeSnapshots and VolumeSnapshotContents. Without it
// restores are refused.
func WithSnapshotClient(c snapclient.Interface) Option {
	return func(p *Provisioner) { p.snapshots = c }
}

// WithEventRecorder gives the provisioner a recorder for the events it records itself.
func WithEventRecorder(r record.EventRecorder) Option {
	return func(p *Provisioner) { p.recorder = r }
}

// New returns a provisioner that creates PVs of the CSI driver driverName through core.
func New(driverName string, core Core, opts ...Option) *Provisioner {
	p := &Provisioner{name: driverName, core: core}
	for _, o := range opts {
		o(p)
	}
	if p.kube != nil {
		p.guard = newCloneGuard(p.kube)
	}
	return p
}

// SupportsBlock tells the library to refuse block claims itself (with a ProvisioningFailed event).
func (p *Provisioner) SupportsBlock(context.Context) bool { return false }

// accessModes maps Kubernetes access modes onto CSI ones, as the external csi-provisioner does for a
// driver without the SINGLE_NODE_MULTI_WRITER distinction.
var accessModes = map[v1.PersistentVolumeAccessMode]csi.VolumeCapability_AccessMode_Mode{
	v1.ReadWriteOnce:    csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	v1.ReadWriteOncePod: csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	v1.ReadOnlyMany:     csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
	v1.ReadWriteMany:    csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
}

// Provision creates the claim's volume directory and returns its PV. The selected node of a
// WaitForFirstConsumer claim is irrelevant to NFS and is ignored.
func (p *Provisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	pv, state, err := p.provision(ctx, o)
	result := "success"
	var ignored *controller.IgnoredError
	switch {
	case errors.As(err, &ignored):
		result = "ignored"
	case err != nil:
		result = status.Code(err).String()
	}
	metrics.Provisioned.WithLabelValues("provision", result).Inc()
	return pv, state, err
}

func (p *Provisioner) provision(ctx context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	claim, class := o.PVC, o.StorageClass
	if claim == nil || class == nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("provisioning %s: no claim or no StorageClass given", o.PVName)
	}
	what := fmt.Sprintf("provisioning %s for claim %s/%s", o.PVName, claim.Namespace, claim.Name)
	// Final errors: retrying cannot help until the claim or the class changes.
	final := func(format string, a ...any) error {
		return status.Errorf(codes.InvalidArgument, "%s: %s", what, fmt.Sprintf(format, a...))
	}
	chk := checks{what: what}
	// The data source's kind decides first, as in csi-provisioner: a populator's claim is its own.
	ref := dataSourceOf(claim)
	if ref != nil {
		if ref.namespace != claim.Namespace {
			st, err := chk.final(ref.field, "the source %s is in another namespace; cross-namespace data sources (ReferenceGrant) are not supported", ref)
			return nil, st, err
		}
		if ref.name == "" {
			st, err := chk.final(ref.field, "the data source has no name")
			return nil, st, err
		}
		if ref.kind != kindClaim && ref.kind != kindSnapshot {
			// A volume populator fills this claim; csi-provisioner leaves it alone the same way.
			if p.recorder != nil {
				p.recorder.Event(claim, v1.EventTypeNormal, "Provisioning", "Assuming an external populator will provision the volume")
			}
			return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: fmt.Sprintf(
				"data source (%s) is not handled by the provisioner, assuming an external populator will provision it", ref.kind)}
		}
	}
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, final("raw block volumes are not supported: an NFS directory can only be mounted (use volumeMode: Filesystem)")
	}
	if len(claim.Spec.AccessModes) == 0 {
		return nil, controller.ProvisioningFinished, final("the claim has no access modes")
	}
	caps := make([]*csi.VolumeCapability, 0, len(claim.Spec.AccessModes))
	for _, m := range claim.Spec.AccessModes {
		mode, ok := accessModes[m]
		if !ok {
			return nil, controller.ProvisioningFinished, final("access mode %q is not supported", m)
		}
		caps = append(caps, &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: class.MountOptions}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		})
	}
	src, st, err := p.resolveSource(ctx, chk, claim, ref)
	if err != nil {
		return nil, st, err
	}
	mutable, st, err := p.attributesClass(ctx, chk, claim)
	if err != nil {
		return nil, st, err
	}
	req := driver.CreateRequest{
		Name:         o.PVName,
		Parameters:   class.Parameters,
		Capabilities: caps,
		Vars: volume.TemplateVars{
			PVCName: claim.Name, PVCNamespace: claim.Namespace, PVName: o.PVName,
			Labels: claim.Labels, Annotations: claim.Annotations,
		},
		MutableParameters: mutable,
	}
	request := claim.Spec.Resources.Requests[v1.ResourceStorage]
	limit := claim.Spec.Resources.Limits[v1.ResourceStorage]
	req.Required, req.Limit = request.Value(), limit.Value()
	if src != nil {
		req.Source = src.csi
	}
	if src != nil && src.claim != nil {
		// The source must outlive the copy: protected before it starts, released after it ends.
		if err := p.guard.acquire(ctx, *src.claim, claim.UID); err != nil {
			return nil, controller.ProvisioningNoChange, fmt.Errorf("%s: %s: protecting source %s with finalizer %s: %w; will retry",
				what, ref.field, ref, CloneFinalizer, err)
		}
	}
	vol, err := p.core.Create(ctx, req)
	if src != nil && src.claim != nil {
		p.guard.release(ctx, *src.claim, claim.UID, err != nil && stateOf(err) == controller.ProvisioningInBackground)
	}
	if err != nil {
		// The core's refusal may be about the source or the class's parameters: say which were used.
		var from []string
		if ref != nil {
			from = append(from, fmt.Sprintf("content from %s %s", ref.field, ref))
		}
		if name := deref(claim.Spec.VolumeAttributesClassName); name != "" {
			from = append(from, "mutable parameters from spec.volumeAttributesClassName: VolumeAttributesClass "+name)
		}
		if len(from) > 0 {
			return nil, stateOf(err), fmt.Errorf("%s (%s): %w", what, strings.Join(from, "; "), err)
		}
		return nil, stateOf(err), fmt.Errorf("%s: %w", what, err)
	}

	policy := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		policy = *class.ReclaimPolicy
	}
	// Create has validated the parameters already; parse again only to read reclaimPolicy.
	if params, err := volume.ParseParams(class.Parameters); err == nil && params.ReclaimPolicy != volume.ReclaimUnset {
		policy = v1.PersistentVolumeReclaimPolicy(params.ReclaimPolicy)
	}
	capacity := request
	if capacity.IsZero() && vol.GetCapacityBytes() > 0 {
		capacity = *resource.NewQuantity(vol.GetCapacityBytes(), resource.BinarySI)
	}
	fs := v1.PersistentVolumeFilesystem
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: policy,
			AccessModes:                   append([]v1.PersistentVolumeAccessMode(nil), claim.Spec.AccessModes...),
			Capacity:                      v1.ResourceList{v1.ResourceStorage: capacity},
			MountOptions:                  append([]string(nil), class.MountOptions...),
			VolumeMode:                    &fs,
			StorageClassName:              class.Name,
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:           p.name,
				VolumeHandle:     vol.GetVolumeId(),
				VolumeAttributes: vol.GetVolumeContext(),
			}},
		},
	}
	if name := deref(claim.Spec.VolumeAttributesClassName); name != "" {
		pv.Spec.VolumeAttributesClassName = &name
	}
	klog.FromContext(ctx).V(2).Info("Provisioned volume", "PV", o.PVName, "PVC", klog.KObj(claim),
		"volumeID", vol.GetVolumeId(), "reclaimPolicy", policy)
	return pv, controller.ProvisioningFinished, nil
}

// stateOf tells the library whether a failed Create may still be going on: a call that timed out or
// was cancelled may have left an NFS operation running in the kernel, so the claim is kept in the
// library's in-progress set (and the volume cleaned up through its PV if the claim goes away);
// everything else is final. InvalidArgument is also what the library treats as infeasible: it records
// the message (which names the parameter) as a ProvisioningFailed event and slows retries down until
// the class changes.
func stateOf(err error) controller.ProvisioningState {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled, codes.Unavailable, codes.Aborted, codes.ResourceExhausted:
		return controller.ProvisioningInBackground
	}
	return controller.ProvisioningFinished
}

// Delete applies the volume's onDelete (from its ID) through the core, exactly like DeleteVolume.
// The library calls it only for Released PVs with reclaim policy Delete. A PV of another driver is
// ignored; a static PV whose handle is not a Paddock ID deletes nothing on the export (the PV object
// itself is then removed, as with the external csi-provisioner).
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	err := p.delete(ctx, pv)
	result := "success"
	var ignored *controller.IgnoredError
	switch {
	case errors.As(err, &ignored):
		result = "ignored"
	case err != nil:
		result = status.Code(err).String()
	}
	metrics.Provisioned.WithLabelValues("delete", result).Inc()
	return err
}

func (p *Provisioner) delete(ctx context.Context, pv *v1.PersistentVolume) error {
	if pv == nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != p.name {
		return &controller.IgnoredError{Reason: fmt.Sprintf("the PV is not a volume of CSI driver %s", p.name)}
	}
	// The PV's own mountOptions (its class's when provisioned) say how to mount the export.
	if err := p.core.Delete(ctx, driver.DeleteRequest{ID: pv.Spec.CSI.VolumeHandle, MountOptions: pv.Spec.MountOptions}); err != nil {
		return fmt.Errorf("deleting volume of PV %s: %w", pv.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Deleted volume", "PV", pv.Name, "volumeID", pv.Spec.CSI.VolumeHandle)
	return nil
}

// LeaseName is the leader-election Lease of a Paddock controller for driverName: one Lease guards both
// the provisioner and the recycler.
func LeaseName(driverName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(driverName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-") + "-controller"
}
