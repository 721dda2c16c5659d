package driver

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

type controller struct {
	csi.UnimplementedControllerServer
	d *Driver
}

var controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME,
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_READONLY,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
}

func (c *controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	resp := &csi.ControllerGetCapabilitiesResponse{}
	for _, t := range controllerCaps {
		resp.Capabilities = append(resp.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return resp, nil
}

// CreateRequest is what the core needs to create a volume; the CSI call and the embedded provisioner
// both build one, so a StorageClass behaves the same through either.
type CreateRequest struct {
	Name         string
	Parameters   map[string]string
	Capabilities []*csi.VolumeCapability
	Required     int64 // bytes; 0 = unspecified
	Limit        int64 // bytes; 0 = unlimited
	Vars         volume.TemplateVars
	// Source, when set, is the snapshot or volume whose content fills the new volume.
	Source *csi.VolumeContentSource
	// MutableParameters (a VolumeAttributesClass: mode, uid, gid) override the class's on creation.
	MutableParameters map[string]string
}

// Create provisions a volume directory and returns the CSI volume.
func (d *Driver) Create(ctx context.Context, r CreateRequest) (*csi.Volume, error) {
	if r.Name == "" {
		return nil, invalid("CreateVolume: name is required")
	}
	if err := volume.CheckCapabilities(r.Capabilities); err != nil {
		return nil, invalid("CreateVolume %s: %v", r.Name, err)
	}
	if r.Required < 0 || r.Limit < 0 || (r.Limit > 0 && r.Required > r.Limit) {
		return nil, status.Errorf(codes.OutOfRange, "CreateVolume %s: capacity range required=%d limit=%d is impossible", r.Name, r.Required, r.Limit)
	}
	p, err := volume.ParseParams(r.Parameters)
	if err != nil {
		return nil, invalid("CreateVolume %s: %v", r.Name, err)
	}
	v, err := p.Volume(r.Name, r.Vars)
	if err != nil {
		return nil, invalid("CreateVolume %s: %v", r.Name, err)
	}
	// The class's mountOptions reach CreateVolume as the capabilities' mount flags: the controller
	// mounts the export with them too (minus node-only options), and a version they pin goes into the
	// ID, so every later call mounts the export the way this one did.
	flags, err := volume.CapabilityMountFlags(r.Capabilities)
	if err == nil {
		v, err = v.WithMountOptions(flags)
	}
	if err != nil {
		return nil, invalid("CreateVolume %s: %v", r.Name, err)
	}
	if len(r.MutableParameters) > 0 {
		mu, err := parseMutable(r.MutableParameters)
		if err != nil {
			return nil, invalid("CreateVolume %s: mutable_parameters: %v", r.Name, err)
		}
		if mu.mode != nil {
			p.Mode = *mu.mode
		}
		if mu.uid >= 0 {
			p.UID = mu.uid
		}
		if mu.gid >= 0 {
			p.GID = mu.gid
		}
	}
	capacity := r.Required
	if capacity == 0 {
		capacity = r.Limit
	}
	src, err := contentSource(r.Name, r.Source)
	if err != nil {
		return nil, err
	}
	o := share.CreateOptions{Mode: volume.FileMode(p.Mode), UID: p.UID, GID: p.GID, Reuse: p.ReuseExisting,
		Capacity: capacity, Source: src}
	if v.QuotaAgent != "" {
		if capacity <= 0 {
			return nil, invalid("CreateVolume %s: capacity_range: the class enforces capacity (%s=%s), so the volume needs a size (the claim's storage request)",
				r.Name, volume.ParamQuota, volume.QuotaEnforce)
		}
		q, err := d.quotaOf(v)
		if err != nil {
			return nil, toStatus(v.ID(), err)
		}
		o.Enforce = setQuota(q, v, p.Quota.Inodes)
	}
	got, err := d.share.Create(ctx, v, o)
	if err != nil {
		return nil, toStatus(v.ID(), err)
	}
	if got < r.Required || (r.Limit > 0 && got > r.Limit) {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s already exists with capacity %d, incompatible with required=%d limit=%d",
			r.Name, got, r.Required, r.Limit)
	}
	klog.FromContext(ctx).V(2).Info("Volume created", "name", r.Name, "volumeID", v.ID(), "subDir", v.SubDir)
	return &csi.Volume{VolumeId: v.ID(), CapacityBytes: got, VolumeContext: v.Context(), ContentSource: r.Source}, nil
}

func (c *controller) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	vol, err := c.d.Create(ctx, CreateRequest{
		Name: req.GetName(), Parameters: req.GetParameters(), Capabilities: req.GetVolumeCapabilities(),
		Required: req.GetCapacityRange().GetRequiredBytes(), Limit: req.GetCapacityRange().GetLimitBytes(),
		Source: req.GetVolumeContentSource(), MutableParameters: req.GetMutableParameters(),
	})
	if err != nil {
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: vol}, nil
}

// DeleteRequest is what the core needs to delete a volume: its ID and, when the caller has the PV in
// hand (the embedded provisioner), the PV's mountOptions for mounting its export. Without them the
// export is mounted the way it was last known to be (share.Workspace learns that from classes, PVs and
// calls).
type DeleteRequest struct {
	ID           string
	MountOptions []string
}

// Delete applies the volume's onDelete to its directory. An ID that was never a Paddock ID names no
// volume, which the CSI spec counts as already deleted.
func (d *Driver) Delete(ctx context.Context, r DeleteRequest) error {
	id := r.ID
	if id == "" {
		return invalid("DeleteVolume: volume_id is required")
	}
	v, err := volume.ParseID(id)
	if errors.Is(err, volume.ErrNotPaddockID) {
		klog.FromContext(ctx).Info("DeleteVolume of an ID Paddock never issued: nothing to delete", "volumeID", id)
		return nil
	}
	if err != nil {
		return toStatus(id, err)
	}
	if r.MountOptions != nil {
		if v, err = v.WithMountOptions(r.MountOptions); err != nil {
			return invalid("DeleteVolume %s: PV %v", id, err)
		}
	}
	// share.Delete serializes calls on the volume and refuses one still controller-published; a
	// volume with enforced capacity gives its project back first (unless it is retained).
	var release func(context.Context) error
	if v.QuotaAgent != "" && v.OnDelete != volume.OnDeleteRetain {
		q, err := d.quotaOf(v)
		if err != nil {
			return toStatus(id, err)
		}
		release = releaseQuota(q, v)
	}
	if err := d.share.DeleteWith(ctx, v, release); err != nil {
		return toStatus(id, err)
	}
	klog.FromContext(ctx).V(2).Info("Volume deleted", "volumeID", id, "onDelete", v.OnDelete)
	return nil
}

func (c *controller) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := c.d.Delete(ctx, DeleteRequest{ID: req.GetVolumeId()}); err != nil {
		return nil, err
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// existing decodes an ID for calls on a volume that must exist: anything undecodable is NotFound.
func (d *Driver) existing(ctx context.Context, id string) (volume.Volume, error) {
	v, err := volume.ParseID(id)
	if err != nil {
		return v, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	if err := d.share.Stat(ctx, v); err != nil {
		return v, toStatus(id, err)
	}
	return v, nil
}

func (c *controller) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("ValidateVolumeCapabilities: volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalid("ValidateVolumeCapabilities %s: volume_capabilities are required", req.GetVolumeId())
	}
	if _, err := c.d.existing(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := volume.CheckCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if req.GetParameters() != nil {
		if _, err := volume.ParseParams(req.GetParameters()); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters(),
	}}, nil
}

func (c *controller) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("ControllerGetVolume: volume_id is required")
	}
	v, err := c.d.existing(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	pubs, err := c.d.share.Publications(ctx, v)
	if err != nil {
		return nil, toStatus(req.GetVolumeId(), err)
	}
	st := &csi.ControllerGetVolumeResponse_VolumeStatus{}
	for _, p := range pubs {
		st.PublishedNodeIds = append(st.PublishedNodeIds, p.Node)
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: &csi.Volume{VolumeId: req.GetVolumeId(), VolumeContext: v.Context()},
		Status: st,
	}, nil
}

func (c *controller) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("ControllerExpandVolume: volume_id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, invalid("ControllerExpandVolume %s: capacity_range is required", req.GetVolumeId())
	}
	if req.GetVolumeCapability() != nil {
		if err := volume.CheckCapability(req.GetVolumeCapability()); err != nil {
			return nil, invalid("ControllerExpandVolume %s: %v", req.GetVolumeId(), err)
		}
	}
	v, err := c.d.existing(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	want := req.GetCapacityRange().GetRequiredBytes()
	if l := req.GetCapacityRange().GetLimitBytes(); l > 0 && want > l {
		return nil, status.Errorf(codes.OutOfRange, "volume %s: required %d exceeds limit %d", req.GetVolumeId(), want, l)
	}
	// NFS directories have no size of their own: expansion records the new size, raises the quota of a
	// volume with enforced capacity, and needs no node step (the node's statfs shows the new limit).
	var enforce func(context.Context, int64) error
	if v.QuotaAgent != "" {
		q, err := c.d.quotaOf(v)
		if err != nil {
			return nil, toStatus(req.GetVolumeId(), err)
		}
		enforce = raiseQuota(q, v)
	}
	if err := c.d.share.SetCapacity(ctx, v, want, enforce); err != nil {
		return nil, toStatus(req.GetVolumeId(), err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: want, NodeExpansionRequired: false}, nil
}
