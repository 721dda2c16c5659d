package driver

import (
	"context"
	"path"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

func healthEntry(t csi.VolumeHealthErrorType, reason, msg string) *csi.VolumeHealth_VolumeHealthEntry {
	return &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: msg}
}

// controllerHealth maps the share's verdict: a claimed directory that is gone is data loss, one that
// is not a directory (or cannot be read) is inaccessible.
func controllerHealth(id, problem string) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: id}
	switch problem {
	case "":
	case share.ProblemMissing:
		h.HealthStatuses = append(h.HealthStatuses, healthEntry(csi.VolumeHealthErrorType_DATA_LOSS, problem,
			"the volume's directory no longer exists on the export, although Paddock still holds its claim"))
	case share.ProblemNotDirectory:
		h.HealthStatuses = append(h.HealthStatuses, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, problem,
			"something other than a directory sits where the volume's directory should be"))
	default:
		h.HealthStatuses = append(h.HealthStatuses, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, "StatFailed", problem))
	}
	return h
}

func (c *controller) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("ControllerGetVolumeHealth: volume_id is required")
	}
	v, err := volume.ParseID(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	problem, err := c.d.share.VolumeHealth(ctx, v)
	switch {
	case err == nil:
		h := controllerHealth(id, problem)
		if problem == "" && v.QuotaAgent != "" {
			if e := c.d.quotaHealth(ctx, v); e != nil {
				h.HealthStatuses = append(h.HealthStatuses, e)
			}
		}
		return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: h}, nil
	case status.Code(toStatus(id, err)) == codes.NotFound:
		return nil, toStatus(id, err)
	}
	// The export did not answer (dead server, hung mount): that is the volume's health, not a failed call.
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: &csi.VolumeHealth{VolumeId: id,
		HealthStatuses: []*csi.VolumeHealth_VolumeHealthEntry{
			healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, "ExportUnreachable", err.Error()),
		}}}, nil
}

func (c *controller) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("ControllerListVolumeHealth: max_entries %d is negative", req.GetMaxEntries())
	}
	if t := req.GetStartingToken(); t != "" {
		if _, err := volume.ParseID(t); err != nil {
			return nil, status.Errorf(codes.Aborted, "ControllerListVolumeHealth: starting_token %q is not one this plugin issued; start again without it", t)
		}
	}
	checked, err := c.d.share.ListVolumesChecked(ctx)
	if err != nil {
		return nil, status.Errorf(codeOf(err), "ControllerListVolumeHealth: %v", err)
	}
	all := c.d.sickVolumes(ctx, checked)
	ids := make([]string, len(all))
	for i, lv := range all {
		ids[i] = lv.ID
	}
	from, to, next := page(ids, req.GetMaxEntries(), req.GetStartingToken())
	resp := &csi.ControllerListVolumeHealthResponse{NextToken: next}
	for _, lv := range all[from:to] {
		h := controllerHealth(lv.ID, lv.Problem)
		if lv.quota != nil {
			h.HealthStatuses = append(h.HealthStatuses, lv.quota)
		}
		resp.Entries = append(resp.Entries, h)
	}
	return resp, nil
}

// NodeGetVolumeHealth checks the volume's mounts on this node: the given publish path, or else every
// place the volume's directory is mounted. Each must answer statfs within --fs-timeout; one that does
// not (dead server, stale handle) makes the volume INACCESSIBLE here. A volume mounted nowhere on this
// node is NotFound, as the spec asks.
func (n *node) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("NodeGetVolumeHealth: volume_id is required")
	}
	var targets []string
	var server string
	if p := req.GetVolumePublishPath(); p != "" {
		if !path.IsAbs(p) {
			return nil, invalid("NodeGetVolumeHealth %s: volume_publish_path %q is not absolute", id, p)
		}
		cur, err := n.d.mounter.MountedAt(p)
		if err != nil {
			return nil, toStatus(id, err)
		}
		if cur == nil {
			return nil, status.Errorf(codes.NotFound, "volume %s: nothing is mounted at %s", id, p)
		}
		targets, server = []string{p}, serverOf(cur.Source)
	} else {
		v, err := volume.ParseID(id)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "volume %s: %v; pass volume_publish_path for a static volume", id, err)
		}
		server = v.Server
		targets, err = n.d.mounter.MountsOf(mount.Source(v.Server, path.Join(v.Share, v.SubDir)))
		if err != nil {
			return nil, toStatus(id, err)
		}
		if len(targets) == 0 {
			return nil, status.Errorf(codes.NotFound, "volume %s is not published on this node", id)
		}
	}
	h := &csi.VolumeHealth{VolumeId: id}
	for _, t := range targets {
		if _, err := n.statFS(ctx, server, t); err != nil {
			reason := "StatfsFailed"
			if mount.IsStale(err) {
				reason = "StaleHandle"
			} else if c := status.Code(toStatus(id, err)); c == codes.DeadlineExceeded || c == codes.Unavailable {
				reason = "ServerNotResponding"
			}
			h.HealthStatuses = append(h.HealthStatuses, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, reason, t+": "+err.Error()))
			break // one entry per (status, reason) pair, as the spec asks
		}
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}
