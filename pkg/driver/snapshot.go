package driver

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// contentSource maps CreateVolume's content source. An ID Paddock never issued names nothing, so it
// is NotFound, as CSI asks for a missing source.
func contentSource(name string, cs *csi.VolumeContentSource) (*share.Source, error) {
	switch {
	case cs == nil:
		return nil, nil
	case cs.GetSnapshot() != nil:
		id := cs.GetSnapshot().GetSnapshotId()
		s, err := volume.ParseSnapshotID(id)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "CreateVolume %s: source snapshot %q: %v", name, id, err)
		}
		return share.SnapshotSource(s), nil
	case cs.GetVolume() != nil:
		id := cs.GetVolume().GetVolumeId()
		v, err := volume.ParseID(id)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "CreateVolume %s: source volume %q: %v", name, id, err)
		}
		return share.VolumeSource(v), nil
	}
	return nil, invalid("CreateVolume %s: volume_content_source names neither a snapshot nor a volume", name)
}

func snapshotOf(info share.SnapshotInfo) *csi.Snapshot {
	s := &csi.Snapshot{SnapshotId: info.ID, SourceVolumeId: info.SourceVolumeID, SizeBytes: info.Size,
		CreationTime: timestamppb.New(info.Created), ReadyToUse: info.Ready}
	if sid, err := volume.ParseSnapshotID(info.ID); err == nil && sid.Dir == info.Name {
		if g, ok := volume.GroupOfSnapshot(sid); ok {
			s.GroupSnapshotId = g.ID()
		}
	}
	return s
}

// checkSnapshotTopology validates CreateSnapshot's accessibility_requirements. A Paddock snapshot is a
// copy inside its source volume's export, so it is accessible from wherever the export is: any
// requirement the source volume met, the snapshot meets, and Paddock returns no accessible_topology
// (which CSI reads as "not constrained"). Requirements that are malformed are refused.
func checkSnapshotTopology(name string, req *csi.TopologyRequirement) error {
	for _, list := range [][]*csi.Topology{req.GetRequisite(), req.GetPreferred()} {
		for _, t := range list {
			if len(t.GetSegments()) == 0 {
				return invalid("CreateSnapshot %s: a topology in accessibility_requirements has no segments", name)
			}
			for k, v := range t.GetSegments() {
				if k == "" || v == "" {
					return invalid("CreateSnapshot %s: topology segment %q=%q: key and value must be non-empty", name, k, v)
				}
			}
		}
	}
	return nil
}

// checkSnapshotParams refuses VolumeSnapshotClass parameters: Paddock has none, and a typo must not
// pass silently. The csi.storage.k8s.io/* keys the csi-snapshotter adds are accepted.
func checkSnapshotParams(name string, params map[string]string) error {
	for k := range params {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			return invalid("CreateSnapshot %s: unknown parameter %q: Paddock snapshots take no parameters", name, k)
		}
	}
	return nil
}

func (c *controller) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, srcID := req.GetName(), req.GetSourceVolumeId()
	if name == "" {
		return nil, invalid("CreateSnapshot: name is required")
	}
	if srcID == "" {
		return nil, invalid("CreateSnapshot %s: source_volume_id is required", name)
	}
	if err := checkSnapshotParams(name, req.GetParameters()); err != nil {
		return nil, err
	}
	v, err := volume.ParseID(srcID)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "CreateSnapshot %s: source volume %s: %v", name, srcID, err)
	}
	if _, ok := volume.GroupKeyOfMember(name); ok {
		return nil, invalid("CreateSnapshot %s: names of the form g-<group key>-<member> are reserved for group snapshots", name)
	}
	if err := checkSnapshotTopology(name, req.GetAccessibilityRequirements()); err != nil {
		return nil, err
	}
	info, err := c.d.share.CreateSnapshot(ctx, v, name)
	if err != nil {
		return nil, toStatus(srcID, err)
	}
	klog.FromContext(ctx).V(2).Info("Snapshot created", "name", name, "snapshotID", info.ID, "sourceVolumeID", srcID, "bytes", info.Size)
	return &csi.CreateSnapshotResponse{Snapshot: snapshotOf(info)}, nil
}

func (c *controller) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalid("DeleteSnapshot: snapshot_id is required")
	}
	s, err := volume.ParseSnapshotID(id)
	if errors.Is(err, volume.ErrNotSnapshotID) {
		klog.FromContext(ctx).Info("DeleteSnapshot of an ID Paddock never issued: nothing to delete", "snapshotID", id)
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, toSnapshotStatus(id, err)
	}
	if g, ok := volume.GroupOfSnapshot(s); ok {
		return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s belongs to group snapshot %s; delete the group (DeleteVolumeGroupSnapshot)", id, g.ID())
	}
	if err := c.d.share.DeleteSnapshot(ctx, s); err != nil {
		return nil, toSnapshotStatus(id, err)
	}
	klog.FromContext(ctx).V(2).Info("Snapshot deleted", "snapshotID", id)
	return &csi.DeleteSnapshotResponse{}, nil
}

func (c *controller) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalid("GetSnapshot: snapshot_id is required")
	}
	s, err := volume.ParseSnapshotID(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "snapshot %s: %v", id, err)
	}
	info, err := c.d.share.GetSnapshot(ctx, s)
	if err != nil {
		return nil, toSnapshotStatus(id, err)
	}
	return &csi.GetSnapshotResponse{Snapshot: snapshotOf(info)}, nil
}

func (c *controller) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("ListSnapshots: max_entries %d is negative", req.GetMaxEntries())
	}
	if t := req.GetStartingToken(); t != "" {
		if _, err := volume.ParseSnapshotID(t); err != nil {
			return nil, status.Errorf(codes.Aborted, "ListSnapshots: starting_token %q is not one this plugin issued; start again without it", t)
		}
	}
	var (
		list []share.SnapshotInfo
		err  error
	)
	switch {
	case req.GetSnapshotId() != "":
		// One snapshot at most; an ID that names nothing gives an empty list, not an error.
		s, perr := volume.ParseSnapshotID(req.GetSnapshotId())
		if perr != nil {
			return &csi.ListSnapshotsResponse{}, nil
		}
		info, gerr := c.d.share.GetSnapshot(ctx, s)
		if errors.Is(gerr, share.ErrSnapshotNotFound) {
			return &csi.ListSnapshotsResponse{}, nil
		}
		if gerr != nil {
			return nil, toSnapshotStatus(req.GetSnapshotId(), gerr)
		}
		if info.Ready && (req.GetSourceVolumeId() == "" || req.GetSourceVolumeId() == info.SourceVolumeID) {
			list = []share.SnapshotInfo{info}
		}
	case req.GetSourceVolumeId() != "":
		v, perr := volume.ParseID(req.GetSourceVolumeId())
		if perr != nil {
			return &csi.ListSnapshotsResponse{}, nil
		}
		x := share.ExportOf(v)
		all, lerr := c.d.share.ListSnapshots(ctx, &x)
		if lerr != nil {
			return nil, toStatus(req.GetSourceVolumeId(), lerr)
		}
		for _, info := range all {
			if info.SourceVolumeID == req.GetSourceVolumeId() {
				list = append(list, info)
			}
		}
	default:
		list, err = c.d.share.ListSnapshots(ctx, nil)
		if err != nil {
			return nil, status.Errorf(codeOf(err), "ListSnapshots: %v", err)
		}
	}
	ids := make([]string, len(list))
	for i, info := range list {
		ids[i] = info.ID
	}
	from, to, next := page(ids, req.GetMaxEntries(), req.GetStartingToken())
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, info := range list[from:to] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotOf(info)})
	}
	return resp, nil
}

// page picks the entries of a listing sorted by ID: those after token (the last ID of the previous
// page), at most max of them (0: all). The next token is the last ID returned when more follow, so a
// page boundary survives entries created or deleted between calls.
func page(ids []string, max int32, token string) (from, to int, next string) {
	if token != "" {
		from = sort.SearchStrings(ids, token)
		if from < len(ids) && ids[from] == token {
			from++
		}
	}
	to = len(ids)
	if max > 0 && to-from > int(max) {
		to = from + int(max)
		next = ids[to-1]
	}
	return from, to, next
}

// codeOf is toStatus's code for errors not about one volume.
func codeOf(err error) codes.Code {
	return status.Code(toStatus("", err))
}

// toSnapshotStatus is toStatus with the snapshot ID in the message.
func toSnapshotStatus(id string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codeOf(err), "snapshot %s: %v", id, err)
}
