package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
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

// nodeFS is the node plugin's direct calls on NFS paths, the ones a dead hard-mounted server hangs in
// the kernel. They run under Bounded calls of the driver's limiter, keyed by the path's server.
type nodeFS struct {
	statfs func(path string) (mount.Stats, error)
	lstat  func(path string) (os.FileInfo, error)
}

var osFS = nodeFS{statfs: mount.ReadStats, lstat: os.Lstat}

// serverOf is the server of an NFS mount source ("server:/path"; the whole source if it is not one).
func serverOf(source string) string {
	if server, _, ok := strings.Cut(source, ":/"); ok && server != "" {
		return server
	}
	return source
}

// statFS reads usage of p, a mount of server, within --fs-timeout and one of the server's slots.
func (n *node) statFS(ctx context.Context, server, p string) (mount.Stats, error) {
	return mount.LimitedValue(n.d.limiter, ctx, server, n.d.opts.FSTimeout, "statfs "+p,
		func() (mount.Stats, error) { return n.d.fs.statfs(p) })
}

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
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
	resp := &csi.NodeGetInfoResponse{NodeId: n.d.opts.NodeID, MaxVolumesPerNode: n.d.opts.MaxVolumesPerNode}
	if len(n.d.opts.Topology) > 0 {
		resp.AccessibleTopology = &csi.Topology{Segments: maps.Clone(n.d.opts.Topology)}
	}
	return resp, nil
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

// publishArgs checks what NodeStageVolume and NodePublishVolume share and finds the volume.
func publishArgs(call, id, p, pathField string, c *csi.VolumeCapability, vctx map[string]string) (volume.Volume, error) {
	if id == "" {
		return volume.Volume{}, invalid("%s: volume_id is required", call)
	}
	if p == "" {
		return volume.Volume{}, invalid("%s %s: %s is required", call, id, pathField)
	}
	if !path.IsAbs(p) {
		return volume.Volume{}, invalid("%s %s: %s %q is not absolute", call, id, pathField, p)
	}
	if c == nil {
		return volume.Volume{}, invalid("%s %s: volume_capability is required", call, id)
	}
	if err := volume.CheckCapability(c); err != nil {
		return volume.Volume{}, invalid("%s %s: %v", call, id, err)
	}
	// The node mounts with the flags as given, but refuses the ones no CSI mount can honour (bg) as
	// CreateVolume does.
	if _, err := volume.ParseMountOptions(c.GetMount().GetMountFlags()); err != nil {
		return volume.Volume{}, invalid("%s %s: volume capability: %v", call, id, err)
	}
	return nodeVolume(id, vctx)
}

// fresh tells whether an existing mount of server at p answers: nil if it does, a stale-handle error
// if the server lost its handle (the caller mounts again), any other error as it is (ErrBusy when the
// server's calls are all stuck).
func (n *node) fresh(ctx context.Context, server, p string) error {
	_, err := mount.LimitedValue(n.d.limiter, ctx, server, n.d.opts.FSTimeout, "stat "+p,
		func() (os.FileInfo, error) { return n.d.fs.lstat(p) })
	return err
}

// nfsMount mounts source at p (made if missing), mapping a directory missing on the server to NotFound.
func (n *node) nfsMount(ctx context.Context, id, source, p string, opts []string) error {
	if err := mount.Bounded(ctx, n.d.opts.FSTimeout, "mkdir "+p, func() error { return os.MkdirAll(p, 0o750) }); err != nil {
		return toStatus(id, fmt.Errorf("creating %s: %w", p, err))
	}
	if err := n.d.mounter.Mount(ctx, source, p, opts); err != nil {
		if strings.Contains(err.Error(), "No such file or directory") || strings.Contains(err.Error(), "does not exist") {
			return status.Errorf(codes.NotFound, "volume %s: %s does not exist on the server: %v", id, source, err)
		}
		return toStatus(id, err)
	}
	n.d.mounts.add(p)
	return nil
}

// NodeStageVolume mounts the volume's directory once per node at the staging path, with the
// capability's mount flags (read-only for the reader-only access modes). Every NodePublishVolume of
// the volume on this node then bind-mounts the staging path: N pods share one NFS mount.
func (n *node) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	v, err := publishArgs("NodeStageVolume", id, staging, "staging_target_path", req.GetVolumeCapability(), req.GetVolumeContext())
	if err != nil {
		return nil, err
	}
	readOnly := volume.ReadOnlyMode(req.GetVolumeCapability())
	source := mount.Source(v.Server, path.Join(v.Share, v.SubDir))
	opts := mountOptions(v, req.GetVolumeCapability(), readOnly)
	unlock, err := n.d.targets.Lock(ctx, path.Clean(staging))
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, staging, err)
	}
	defer unlock()
	log := klog.FromContext(ctx).WithValues("volumeID", id, "staging", staging)
	cur, err := n.d.mounter.MountedAt(staging)
	if err != nil {
		return nil, toStatus(id, err)
	}
	if cur != nil {
		if cur.Source != source || cur.ReadOnly != readOnly {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s: staging path %s already has %s mounted (read-only %t), not %s (read-only %t)",
				id, staging, cur.Source, cur.ReadOnly, source, readOnly)
		}
		if err := n.fresh(ctx, v.Server, staging); err == nil {
			n.d.mounts.add(staging)
			return &csi.NodeStageVolumeResponse{}, nil
		} else if !mount.IsStale(err) {
			return nil, toStatus(id, fmt.Errorf("checking existing mount at %s: %w", staging, err))
		}
		log.Info("Staged volume has a stale handle; mounting it again")
		if err := n.d.mounter.Unmount(ctx, staging); err != nil {
			return nil, toStatus(id, err)
		}
	}
	if err := n.nfsMount(ctx, id, source, staging, opts); err != nil {
		return nil, err
	}
	log.V(2).Info("Volume staged", "source", source, "options", opts)
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the staging path (escalating like NodeUnpublishVolume, so a dead server
// cannot wedge it). The directory itself belongs to the CO and is left in place.
func (n *node) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" {
		return nil, invalid("NodeUnstageVolume: volume_id is required")
	}
	if staging == "" {
		return nil, invalid("NodeUnstageVolume %s: staging_target_path is required", id)
	}
	unlock, err := n.d.targets.Lock(ctx, path.Clean(staging))
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, staging, err)
	}
	defer unlock()
	if err := n.d.mounter.Unmount(ctx, staging); err != nil {
		return nil, toStatus(id, err)
	}
	n.d.mounts.remove(staging)
	klog.FromContext(ctx).V(2).Info("Volume unstaged", "volumeID", id, "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume makes the volume visible at the target: a bind mount of the staging path
// (read-only at the target when the capability or readonly asks for it), or, when the caller gives
// no staging path (a CO that does not stage), a direct NFS mount as before staging existed.
func (n *node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target, staging := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath()
	v, err := publishArgs("NodePublishVolume", id, target, "target_path", req.GetVolumeCapability(), req.GetVolumeContext())
	if err != nil {
		return nil, err
	}
	if staging != "" && !path.IsAbs(staging) {
		return nil, invalid("NodePublishVolume %s: staging_target_path %q is not absolute", id, staging)
	}
	if staging != "" && path.Clean(staging) == path.Clean(target) {
		return nil, invalid("NodePublishVolume %s: target_path and staging_target_path are both %s", id, target)
	}
	readOnly := req.GetReadonly() || volume.ReadOnlyMode(req.GetVolumeCapability())
	source := mount.Source(v.Server, path.Join(v.Share, v.SubDir))
	opts := mountOptions(v, req.GetVolumeCapability(), readOnly)

	unlock, err := n.d.targets.Lock(ctx, path.Clean(target))
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
		if err := n.fresh(ctx, v.Server, target); err == nil {
			n.d.mounts.add(target)
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
		// ReadWriteOncePod: one publish on this node at most (the CO guards other nodes). The staging
		// mount is not a publish.
		others, err := n.d.mounter.MountsOf(source)
		if err != nil {
			return nil, toStatus(id, err)
		}
		for _, o := range others {
			if o != path.Clean(target) && (staging == "" || o != path.Clean(staging)) {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s has single-writer access and is already published at %s", id, o)
			}
		}
	}
	if staging == "" {
		if err := n.nfsMount(ctx, id, source, target, opts); err != nil {
			return nil, err
		}
		log.V(2).Info("Volume published (direct NFS mount, no staging path)", "source", source, "options", opts)
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := n.checkStaged(ctx, id, v, source, staging, req.GetVolumeCapability(), readOnly); err != nil {
		return nil, err
	}
	if err := mount.Bounded(ctx, n.d.opts.FSTimeout, "mkdir "+target, func() error { return os.MkdirAll(target, 0o750) }); err != nil {
		return nil, toStatus(id, fmt.Errorf("creating target %s: %w", target, err))
	}
	if err := n.d.mounter.BindMount(ctx, staging, target, readOnly); err != nil {
		return nil, toStatus(id, err)
	}
	n.d.mounts.add(target)
	log.V(2).Info("Volume published", "staging", staging, "readOnly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkStaged makes sure the staging path holds this volume's NFS mount, answering: a staging mount
// whose handle went stale (the directory was re-created on the server) is mounted again, since the CO
// will not stage a volume it believes staged. A read-only stage cannot be published read-write.
func (n *node) checkStaged(ctx context.Context, id string, v volume.Volume, source, staging string, c *csi.VolumeCapability, readOnly bool) error {
	unlock, err := n.d.targets.Lock(ctx, path.Clean(staging))
	if err != nil {
		return status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, staging, err)
	}
	defer unlock()
	st, err := n.d.mounter.MountedAt(staging)
	if err != nil {
		return toStatus(id, err)
	}
	switch {
	case st == nil:
		return status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s: call NodeStageVolume first", id, staging)
	case st.Source != source:
		return status.Errorf(codes.FailedPrecondition, "volume %s: staging path %s holds %s, not %s", id, staging, st.Source, source)
	case st.ReadOnly && !readOnly:
		return status.Errorf(codes.FailedPrecondition, "volume %s is staged read-only at %s (a reader-only access mode); it cannot be published read-write", id, staging)
	}
	err = n.fresh(ctx, v.Server, staging)
	if err == nil {
		return nil
	}
	if !mount.IsStale(err) {
		return toStatus(id, fmt.Errorf("checking staged mount at %s: %w", staging, err))
	}
	klog.FromContext(ctx).Info("Staged volume has a stale handle; mounting it again before publishing", "volumeID", id, "staging", staging)
	if err := n.d.mounter.Unmount(ctx, staging); err != nil {
		return toStatus(id, err)
	}
	return n.nfsMount(ctx, id, source, staging, mountOptions(v, c, st.ReadOnly))
}

func (n *node) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" {
		return nil, invalid("NodeUnpublishVolume: volume_id is required")
	}
	if target == "" {
		return nil, invalid("NodeUnpublishVolume %s: target_path is required", id)
	}
	unlock, err := n.d.targets.Lock(ctx, path.Clean(target))
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "volume %s: another operation on %s is in progress: %v", id, target, err)
	}
	defer unlock()
	// The mount table, not the target, says whether anything is mounted: a stat of a target whose
	// server is dead would hang.
	if err := n.d.mounter.Unmount(ctx, target); err != nil {
		return nil, toStatus(id, err)
	}
	n.d.mounts.remove(target)
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
	st, err := n.statFS(ctx, serverOf(cur.Source), p)
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

// NodeExpandVolume: an NFS directory has no filesystem of its own to grow, so there is nothing to do
// on the node; ControllerExpandVolume has already recorded the new capacity and answers
// node_expansion_required=false, so kubelet does not normally call this. It still checks what it is
// given (the volume must be mounted at volume_path: NotFound otherwise) and reports the capacity.
func (n *node) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, invalid("NodeExpandVolume: volume_id is required")
	}
	if p == "" {
		return nil, invalid("NodeExpandVolume %s: volume_path is required", id)
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := volume.CheckCapability(c); err != nil {
			return nil, invalid("NodeExpandVolume %s: %v", id, err)
		}
	}
	want, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if want < 0 || limit < 0 || (limit > 0 && want > limit) {
		return nil, status.Errorf(codes.OutOfRange, "NodeExpandVolume %s: capacity range required=%d limit=%d is impossible", id, want, limit)
	}
	cur, err := n.d.mounter.MountedAt(p)
	if err != nil {
		return nil, toStatus(id, err)
	}
	if cur == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: nothing is mounted at %s", id, p)
	}
	if v, err := volume.ParseID(id); err == nil {
		if source := mount.Source(v.Server, path.Join(v.Share, v.SubDir)); cur.Source != source {
			return nil, status.Errorf(codes.NotFound, "volume %s is not mounted at %s (%s is)", id, p, cur.Source)
		}
	}
	klog.FromContext(ctx).V(2).Info("NodeExpandVolume: NFS directories need no node-side resize", "volumeID", id, "path", p, "requiredBytes", want)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: want}, nil
}
