package driver

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrUnknownNode: no node with this ID runs the driver.
var ErrUnknownNode = errors.New("no such node runs this driver")

// NodeInfo is what the controller knows of a node.
type NodeInfo struct {
	// MaxVolumes is the node's limit of published volumes; 0 means unlimited.
	MaxVolumes int64
}

// NodeDirectory answers whether a node ID names a node running the driver (ControllerPublishVolume
// must refuse unknown nodes with NotFound).
type NodeDirectory interface {
	Lookup(ctx context.Context, nodeID string) (NodeInfo, error)
}

// localNode is the directory of a --mode=all process: its own node is the only one.
type localNode struct {
	id  string
	max int64
}

func (l localNode) Lookup(_ context.Context, nodeID string) (NodeInfo, error) {
	if nodeID != l.id {
		return NodeInfo{}, fmt.Errorf("%w: %q (this plugin serves node %q only)", ErrUnknownNode, nodeID, l.id)
	}
	return NodeInfo{MaxVolumes: l.max}, nil
}

// anyNode is the directory of a controller with no way to list nodes: every ID is accepted.
type anyNode struct{}

func (anyNode) Lookup(context.Context, string) (NodeInfo, error) { return NodeInfo{}, nil }

// CSINodes looks nodes up in the Kubernetes API: a node exists when its CSINode object lists this
// driver with that node ID, and its limit is the CSINode's allocatable count (which kubelet copies
// from NodeGetInfo's max_volumes_per_node). The CSINode is named after the Kubernetes node, which is
// Paddock's --node-id by default.
type CSINodes struct {
	Client kubernetes.Interface
	Driver string
}

// Lookup implements NodeDirectory.
func (c CSINodes) Lookup(ctx context.Context, nodeID string) (NodeInfo, error) {
	cn, err := c.Client.StorageV1().CSINodes().Get(ctx, nodeID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return NodeInfo{}, fmt.Errorf("%w: no CSINode %q", ErrUnknownNode, nodeID)
	}
	if err != nil {
		return NodeInfo{}, fmt.Errorf("reading CSINode %q: %w", nodeID, err)
	}
	for _, d := range cn.Spec.Drivers {
		if d.Name != c.Driver {
			continue
		}
		if d.NodeID != nodeID {
			return NodeInfo{}, fmt.Errorf("%w: CSINode %q registers %s with node ID %q, not %q", ErrUnknownNode, nodeID, c.Driver, d.NodeID, nodeID)
		}
		var info NodeInfo
		if d.Allocatable != nil && d.Allocatable.Count != nil {
			info.MaxVolumes = int64(*d.Allocatable.Count)
		}
		return info, nil
	}
	return NodeInfo{}, fmt.Errorf("%w: CSINode %q does not list driver %s", ErrUnknownNode, nodeID, c.Driver)
}
