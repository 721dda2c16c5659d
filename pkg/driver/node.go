package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/mount"
	"github.com/paddock-csi/paddock/pkg/volume"
)

type node struct {
	csi.UnimplementedNodeServer
	d *Driver
}

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
}

func (n *node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	resp := &csi.NodeGetCapabilitiesResponse{}
	for _, t := range nodeCaps {
		resp.Capabilities = append(resp.Capabilities, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return resp, nil
}

func (n *node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.d.opts.NodeID}, nil
}

// nodeVolume finds the directory a publish names: from a Paddock volume ID, or, for a hand-made static
// PV whose handle is not one, from its volumeAttributes (server, share, subDir).
func nodeVolume(id string, ctx map[string]string) (volume.Volume, error) {
	v, err := volume.ParseID(id)
	if errors.Is(err, volume.ErrNotPaddockID) {
		if len(ctx) == 0 {
			return v, status.Errorf(codes.NotFound, "volume %s: not a Paddock volume ID and no volume attributes (server, share, subDir) describe it", id)
		}
		v, err = volume.FromContext(id, ctx)
	}
	if err != nil {
		return v, invalid("volume %s: %v", id, err)
	}
	return v, nil
}

// mountOptions: the capability's flags, the volume's pinned NFS version, and ro for read-only.
func mountOptions(v volume.Volume, c *csi.VolumeCapability, readOnly bool) []string {
	opts := slices.Clone(c.GetMount().GetMountFlags())
	if v.NFSVers != "" && !slices.ContainsFunc(opts, func(o string) bool {
		return strings.HasPrefix(o, "nfsvers=") || strings.HasPrefix(o, "vers=")
	}) {
		opts = append(opts, "nfsvers="+v.NFSVers)
	}
	if readOnly {
		opts = slices.DeleteFunc(opts, func(o string) bool { return o == "rw" })
		opts = append(opts, "ro")
	}
	return opts
}

func (n *node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" {
		return nil, invalid("NodePublishVolume: volume_id is required")
	}
	if target == "" {
		return nil, invalid("NodePublishVolume %s: target_path is required", id)
	}
	if !path.IsAbs(target) {
		return nil, invalid("NodePublishVolume %s: target_path %q is not absolute", id, target)
	}
	if req.GetVolumeCapability() == nil {
		return nil, invalid("NodePublishVolume %s: volume_capability is required", id)
	}
	if err := volume.CheckCapability(req.GetVolumeCapability()); err != nil {
		return nil, invalid("NodePublishVolume %s: %v", id, err)
	}
	v, err := nodeVolume(id, req.GetVolumeContext())
	if err != nil {
		return nil, err
	}
	readOnly := req.GetReadonly() || volume.ReadOnlyMode(req.GetVolumeCapability())
	source := mount.Source(v.Server, path.Join(v.Share, v.SubDir))
	opts := mountOptions(v, req.GetVolumeCapability(), readOnly)

	unlock, err := n.d.targets.Lock(ctx, target)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, target, err)
	}
	defer unlock()
	log := klog.FromContext(ctx).WithValues("volumeID", id, "target", target)

	cur, err := n.d.mounter.MountedAt(target)
	if err != nil {
		return nil, toStatus(id, err)
	}
	if cur != nil {
		if cur.Source != source || cur.ReadOnly != readOnly {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s: %s is already mounted from %s (read-only %t), not %s (read-only %t)",
				id, target, cur.Source, cur.ReadOnly, source, readOnly)
		}
		// Mounted as asked; make sure it still works. A stale handle (the directory was re-created on
		// the server, or the server lost its handles) is recovered by mounting again.
		if _, err := mount.Lstat(ctx, n.d.opts.FSTimeout, target); err == nil {
			return &csi.NodePublishVolumeResponse{}, nil
		} else if !mount.IsStale(err) {
			return nil, toStatus(id, fmt.Errorf("checking existing mount at %s: %w", target, err))
		}
		log.Info("Published volume has a stale handle; mounting it again")
		if err := n.d.mounter.Unmount(ctx, target); err != nil {
			return nil, toStatus(id, err)
		}
	}
	if req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		// ReadWriteOncePod: one publish on this node at most (the CO guards other nodes).
		others, err := n.d.mounter.MountsOf(source)
		if err != nil {
			return nil, toStatus(id, err)
		}
		for _, o := range others {
			if o != path.Clean(target) {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s has single-writer access and is already published at %s", id, o)
			}
		}
	}
	if err := mount.Bounded(ctx, n.d.opts.FSTimeout, "mkdir "+target, func() error { return os.MkdirAll(target, 0o750) }); err != nil {
		return nil, toStatus(id, fmt.Errorf("creating target %s: %w", target, err))
	}
	if err := n.d.mounter.Mount(ctx, source, target, opts); err != nil {
		if strings.Contains(err.Error(), "No such file or directory") || strings.Contains(err.Error(), "does not exist") {
			return nil, status.Errorf(codes.NotFound, "volume %s: %s does not exist on the server: %v", id, source, err)
		}
		return nil, toStatus(id, err)
	}
	log.V(2).Info("Volume published", "source", source, "options", opts)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (n *node) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" {
		return nil, invalid("NodeUnpublishVolume: volume_id is required")
	}
	if target == "" {
		return nil, invalid("NodeUnpublishVolume %s: target_path is required", id)
	}
	unlock, err := n.d.targets.Lock(ctx, target)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, target, err)
	}
	defer unlock()
	// The mount table, not the target, says whether anything is mounted: a stat of a target whose
	// server is dead would hang.
	if err := n.d.mounter.Unmount(ctx, target); err != nil {
		return nil, toStatus(id, err)
	}
	err = mount.Bounded(ctx, n.d.opts.FSTimeout, "remove "+target, func() error { return os.Remove(target) })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, toStatus(id, fmt.Errorf("removing target %s: %w", target, err))
	}
	klog.FromContext(ctx).V(2).Info("Volume unpublished", "volumeID", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (n *node) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, invalid("NodeGetVolumeStats: volume_id is required")
	}
	if p == "" {
		return nil, invalid("NodeGetVolumeStats %s: volume_path is required", id)
	}
	cur, err := n.d.mounter.MountedAt(p)
	if err != nil {
		return nil, toStatus(id, err)
	}
	if cur == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: nothing is mounted at %s", id, p)
	}
	st, err := mount.StatFS(ctx, n.d.opts.FSTimeout, p)
	if err != nil {
		return nil, toStatus(id, fmt.Errorf("reading usage of %s: %w", p, err))
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Available: st.AvailableBytes, Used: st.UsedBytes},
			{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Available: st.FreeInodes, Used: st.UsedInodes},
		},
	}, nil
}
