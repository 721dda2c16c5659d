package driver

import (
	"context"
	"errors"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// singleNode tells whether an access mode allows one node at most.
func singleNode(mode string) bool {
	return strings.HasPrefix(mode, "SINGLE_NODE_")
}

// ControllerPublishVolume records that a volume is published to a node. NFS needs no attach step, so
// with attachRequired: false in the CSIDriver Kubernetes never calls it; when a CO does, the record is
// what it buys: the volume must exist and belong to the ID (NotFound), the node must run the driver
// (NotFound), a single-node access mode is held by one node at a time (FailedPrecondition, naming the
// node that holds it), a republish to the same node with other arguments is AlreadyExists, and a node
// at its --max-volumes-per-node is ResourceExhausted. Records live on the export beside the claims, so
// they survive a restart of the controller and are shared by its replicas.
func (c *controller) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	if id == "" {
		return nil, invalid("ControllerPublishVolume: volume_id is required")
	}
	if nodeID == "" {
		return nil, invalid("ControllerPublishVolume %s: node_id is required", id)
	}
	if req.GetVolumeCapability() == nil {
		return nil, invalid("ControllerPublishVolume %s: volume_capability is required", id)
	}
	if err := volume.CheckCapability(req.GetVolumeCapability()); err != nil {
		return nil, invalid("ControllerPublishVolume %s: %v", id, err)
	}
	v, err := volume.ParseID(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", id, err)
	}
	info, err := c.d.opts.Nodes.Lookup(ctx, nodeID)
	if errors.Is(err, ErrUnknownNode) {
		return nil, status.Errorf(codes.NotFound, "ControllerPublishVolume %s: node %s: %v", id, nodeID, err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ControllerPublishVolume %s: looking up node %s: %v", id, nodeID, err)
	}
	// One publish per node at a time, so two volumes cannot both take the node's last slot.
	unlockNode, err := c.d.nodes.Lock(ctx, nodeID)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "ControllerPublishVolume %s: another publish to node %s is in progress: %v", id, nodeID, err)
	}
	defer unlockNode()
	onNode := -1 // counted only when needed: it reads every publication record
	if info.MaxVolumes > 0 {
		all, err := c.d.share.PublishedNodes(ctx)
		if err != nil {
			return nil, toStatus(id, err)
		}
		onNode = 0
		for vid, pubs := range all {
			for _, p := range pubs {
				if p.Node == nodeID && vid != id {
					onNode++
				}
			}
		}
	}
	want := share.Publication{Node: nodeID, ReadOnly: req.GetReadonly(), Mode: req.GetVolumeCapability().GetAccessMode().GetMode().String()}
	err = c.d.share.Publish(ctx, v, want, func(existing []share.Publication) (bool, error) {
		for _, p := range existing {
			if p.Node == nodeID {
				if p == want {
					return true, nil
				}
				return false, status.Errorf(codes.AlreadyExists, "volume %s is already published to node %s with readonly=%t and access mode %s, not readonly=%t and %s",
					id, nodeID, p.ReadOnly, p.Mode, want.ReadOnly, want.Mode)
			}
		}
		for _, p := range existing {
			if singleNode(p.Mode) || singleNode(want.Mode) {
				return false, status.Errorf(codes.FailedPrecondition, "volume %s is published to node %s with access mode %s; %s on node %s needs it unpublished there first",
					id, p.Node, p.Mode, want.Mode, nodeID)
			}
		}
		if onNode >= 0 && int64(onNode) >= info.MaxVolumes {
			return false, status.Errorf(codes.ResourceExhausted, "node %s already has %d volumes published, its limit (--max-volumes-per-node)", nodeID, onNode)
		}
		return false, nil
	})
	if err != nil {
		return nil, toStatus(id, err)
	}
	klog.FromContext(ctx).V(2).Info("Volume controller-published", "volumeID", id, "node", nodeID, "readonly", want.ReadOnly, "mode", want.Mode)
	return &csi.ControllerPublishVolumeResponse{}, nil
}

// ControllerUnpublishVolume removes the record of a publication (of every node when node_id is
// empty). A volume or node that is unknown is unpublished already, as the spec allows.
func (c *controller) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	if id == "" {
		return nil, invalid("ControllerUnpublishVolume: volume_id is required")
	}
	v, err := volume.ParseID(id)
	if err != nil {
		klog.FromContext(ctx).Info("ControllerUnpublishVolume of an ID that names no Paddock volume: nothing to do", "volumeID", id, "err", err)
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	if err := c.d.share.Unpublish(ctx, v, nodeID); err != nil {
		return nil, toStatus(id, err)
	}
	klog.FromContext(ctx).V(2).Info("Volume controller-unpublished", "volumeID", id, "node", nodeID)
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}
