package driver

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// groupController serves group snapshots as sets of ordinary snapshots: one copy per source volume,
// all on the same export, named after the group (see volume.GroupSnapshot). Like a single snapshot,
// a group is a file-level copy: the volumes are copied one after the other, not at one instant, so
// writers should be quiesced for a consistent group.
type groupController struct {
	csi.UnimplementedGroupControllerServer
	d *Driver
}

func (g *groupController) GroupControllerGetCapabilities(context.Context, *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	return &csi.GroupControllerGetCapabilitiesResponse{Capabilities: []*csi.GroupControllerServiceCapability{{
		Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{
			Type: csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT}},
	}}}, nil
}

// members lists the ready snapshots of group gs on its export, sorted by snapshot ID.
func (d *Driver) members(ctx context.Context, gs volume.GroupSnapshot) ([]share.SnapshotInfo, error) {
	x := share.Export{Server: gs.Server, Share: gs.Share, NFSVers: gs.NFSVers}
	all, err := d.share.ListSnapshots(ctx, &x)
	if err != nil {
		return nil, err
	}
	var list []share.SnapshotInfo
	for _, info := range all {
		if s, err := volume.ParseSnapshotID(info.ID); err == nil && gs.IsMember(s.Dir) && info.Name == s.Dir {
			list = append(list, info)
		}
	}
	slices.SortFunc(list, func(a, b share.SnapshotInfo) int { return strings.Compare(a.ID, b.ID) })
	return list, nil
}

func groupOf(id string, members []share.SnapshotInfo) *csi.VolumeGroupSnapshot {
	g := &csi.VolumeGroupSnapshot{GroupSnapshotId: id, ReadyToUse: len(members) > 0}
	for i, m := range members {
		s := snapshotOf(m)
		g.Snapshots = append(g.Snapshots, s)
		if i == 0 || m.Created.Before(g.CreationTime.AsTime()) {
			g.CreationTime = timestamppb.New(m.Created)
		}
		g.ReadyToUse = g.ReadyToUse && m.Ready
	}
	return g
}

// checkSnapshotIDs compares the CO's list of a group's snapshot IDs with the members found.
func checkSnapshotIDs(call, id string, given []string, members []share.SnapshotInfo) error {
	if len(given) == 0 {
		return nil
	}
	have := make([]string, len(members))
	for i, m := range members {
		have[i] = m.ID
	}
	want := slices.Clone(given)
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(want, have) {
		return invalid("%s %s: snapshot_ids %v do not match the group's snapshots %v", call, id, given, have)
	}
	return nil
}

// CreateVolumeGroupSnapshot snapshots every source volume into the group. The sources must be
// distinct Paddock volumes on one export, mounted the same way (FailedPrecondition otherwise). It is
// idempotent by name: a retry completes a group whose earlier attempt stopped half way, and the same
// name with other sources is AlreadyExists. If a member cannot be made, the members made by this call
// are deleted again before the error is returned, so a failed call leaks no snapshots.
func (g *groupController) CreateVolumeGroupSnapshot(ctx context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, invalid("CreateVolumeGroupSnapshot: name is required")
	}
	if len(req.GetSourceVolumeIds()) == 0 {
		return nil, invalid("CreateVolumeGroupSnapshot %s: source_volume_ids are required", name)
	}
	for k := range req.GetParameters() {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			return nil, invalid("CreateVolumeGroupSnapshot %s: unknown parameter %q: Paddock group snapshots take no parameters", name, k)
		}
	}
	var vols []volume.Volume
	seen := map[string]bool{}
	for _, id := range req.GetSourceVolumeIds() {
		if seen[id] {
			return nil, invalid("CreateVolumeGroupSnapshot %s: source volume %s is listed twice", name, id)
		}
		seen[id] = true
		v, err := volume.ParseID(id)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "CreateVolumeGroupSnapshot %s: source volume %s: %v", name, id, err)
		}
		if len(vols) > 0 && share.ExportOf(v).Place() != share.ExportOf(vols[0]).Place() {
			return nil, status.Errorf(codes.FailedPrecondition, "CreateVolumeGroupSnapshot %s: volumes %s and %s are on different exports (or NFS versions); a group's snapshots are copies inside one export",
				name, vols[0].ID(), id)
		}
		vols = append(vols, v)
	}
	gs := volume.GroupOf(vols[0], name)
	gid := gs.ID()
	unlock, err := g.d.groups.Lock(ctx, "group\x00"+gid)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "CreateVolumeGroupSnapshot %s: another call on this group is in progress: %v", name, err)
	}
	defer unlock()
	existing, err := g.d.members(ctx, gs)
	if err != nil {
		return nil, toSnapshotStatus(gid, err)
	}
	had := map[string]bool{}
	for _, m := range existing {
		if !seen[m.SourceVolumeID] {
			return nil, status.Errorf(codes.AlreadyExists, "group snapshot %s exists with source volume %s, which this request does not list", name, m.SourceVolumeID)
		}
		had[m.SourceVolumeID] = true
	}
	var made []share.SnapshotInfo
	for _, v := range vols {
		info, err := g.d.share.CreateSnapshot(ctx, v, gs.MemberName(v.ID()))
		if err != nil {
			for _, m := range made {
				if s, perr := volume.ParseSnapshotID(m.ID); perr == nil {
					if derr := g.d.share.DeleteSnapshot(context.WithoutCancel(ctx), s); derr != nil {
						klog.FromContext(ctx).Error(derr, "Could not remove a member of a failed group snapshot", "snapshotID", m.ID)
					}
				}
			}
			if errors.Is(err, share.ErrIncompatible) {
				return nil, status.Errorf(codes.AlreadyExists, "group snapshot %s: member of volume %s: %v", name, v.ID(), err)
			}
			return nil, toStatus(v.ID(), err)
		}
		if !had[v.ID()] {
			made = append(made, info)
		}
	}
	members, err := g.d.members(ctx, gs)
	if err != nil {
		return nil, toSnapshotStatus(gid, err)
	}
	klog.FromContext(ctx).V(2).Info("Group snapshot created", "name", name, "groupSnapshotID", gid, "members", len(members))
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: groupOf(gid, members)}, nil
}

// DeleteVolumeGroupSnapshot deletes every member (each renamed into the trash). An ID Paddock never
// issued, or a group with no members left, is deleted already.
func (g *groupController) DeleteVolumeGroupSnapshot(ctx context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	if id == "" {
		return nil, invalid("DeleteVolumeGroupSnapshot: group_snapshot_id is required")
	}
	gs, err := volume.ParseGroupSnapshotID(id)
	if errors.Is(err, volume.ErrNotGroupSnapshotID) {
		klog.FromContext(ctx).Info("DeleteVolumeGroupSnapshot of an ID Paddock never issued: nothing to delete", "groupSnapshotID", id)
		return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, invalid("group snapshot %s: %v", id, err)
	}
	unlock, err := g.d.groups.Lock(ctx, "group\x00"+id)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "DeleteVolumeGroupSnapshot %s: another call on this group is in progress: %v", id, err)
	}
	defer unlock()
	members, err := g.d.members(ctx, gs)
	if err != nil {
		return nil, toSnapshotStatus(id, err)
	}
	if len(members) > 0 {
		if err := checkSnapshotIDs("DeleteVolumeGroupSnapshot", id, req.GetSnapshotIds(), members); err != nil {
			return nil, err
		}
	}
	for _, m := range members {
		s, err := volume.ParseSnapshotID(m.ID)
		if err != nil {
			return nil, toSnapshotStatus(m.ID, err)
		}
		if err := g.d.share.DeleteSnapshot(ctx, s); err != nil {
			return nil, toSnapshotStatus(m.ID, err)
		}
	}
	klog.FromContext(ctx).V(2).Info("Group snapshot deleted", "groupSnapshotID", id, "members", len(members))
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

// GetVolumeGroupSnapshot reports the group and its members; NotFound when it has none.
func (g *groupController) GetVolumeGroupSnapshot(ctx context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	if id == "" {
		return nil, invalid("GetVolumeGroupSnapshot: group_snapshot_id is required")
	}
	gs, err := volume.ParseGroupSnapshotID(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "group snapshot %s: %v", id, err)
	}
	members, err := g.d.members(ctx, gs)
	if err != nil {
		return nil, toSnapshotStatus(id, err)
	}
	if len(members) == 0 {
		return nil, status.Errorf(codes.NotFound, "group snapshot %s has no snapshots on %s:%s", id, gs.Server, gs.Share)
	}
	if err := checkSnapshotIDs("GetVolumeGroupSnapshot", id, req.GetSnapshotIds(), members); err != nil {
		return nil, err
	}
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: groupOf(id, members)}, nil
}
