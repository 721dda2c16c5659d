// Package driver is Paddock's CSI gRPC server: the Identity, Controller and Node services mapped onto
// the volume model (pkg/volume), the controller's export workspace (pkg/share) and the node's mounter
// (pkg/mount).
package driver

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// DefaultName is the CSI driver and provisioner name.
const DefaultName = "nfs.paddock.dev"

// Mode selects which CSI services a process serves.
type Mode string

const (
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	ModeAll        Mode = "all"
)

// Options configure a Driver.
type Options struct {
	Name     string
	Version  string
	Mode     Mode
	NodeID   string
	Endpoint string // unix:///path or tcp://host:port
	// FSTimeout bounds every blocking filesystem and mount call.
	FSTimeout time.Duration
	// MaxStuckCalls bounds the node plugin's blocking calls on one NFS server's paths (statfs, stat) in
	// flight at once; when all of them are stuck past FSTimeout, further calls to that server fail at
	// once with Unavailable instead of costing one more OS thread each. 0 means 16.
	MaxStuckCalls int
	// MaxVolumesPerNode is the node's limit of controller-published volumes (NodeGetInfo), enforced
	// by ControllerPublishVolume; 0 means unlimited.
	MaxVolumesPerNode int64
	// Topology is the node's accessible topology (NodeGetInfo), e.g. topology.kubernetes.io/zone.
	Topology map[string]string
	// Nodes tells the controller which node IDs exist and their volume limits. Nil: in --mode=all the
	// local node is the only one; in --mode=controller every node ID is accepted, without a limit.
	Nodes NodeDirectory
	// OnListening, if set, is called by Serve once the endpoint accepts connections, before it serves
	// them: the node plugin registers with kubelet from there, so kubelet never dials a missing socket.
	OnListening func()
	// QuotaAgents reaches the quota agents of classes with quota=enforce (package quota). Nil: such
	// classes are refused with FailedPrecondition.
	QuotaAgents QuotaAgents
}

// Validate checks the options a Driver needs.
func (o Options) Validate() error {
	switch o.Mode {
	case ModeController, ModeNode, ModeAll:
	default:
		return fmt.Errorf("--mode=%q: must be controller, node or all", o.Mode)
	}
	if o.Name == "" {
		return fmt.Errorf("--driver-name is empty")
	}
	if o.Mode != ModeController && o.NodeID == "" {
		return fmt.Errorf("--node-id is required in %s mode", o.Mode)
	}
	if o.FSTimeout <= 0 {
		return fmt.Errorf("--fs-timeout must be positive")
	}
	if o.MaxStuckCalls < 0 {
		return fmt.Errorf("--max-stuck-calls must not be negative")
	}
	if o.MaxVolumesPerNode < 0 {
		return fmt.Errorf("--max-volumes-per-node must not be negative")
	}
	for k, v := range o.Topology {
		if k == "" || v == "" {
			return fmt.Errorf("--topology: key %q and value %q must both be non-empty", k, v)
		}
	}
	return nil
}

func (o Options) controller() bool { return o.Mode == ModeController || o.Mode == ModeAll }
func (o Options) node() bool       { return o.Mode == ModeNode || o.Mode == ModeAll }

// ParseTopology parses --topology: comma-separated key=value segments, keys unique.
func ParseTopology(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("--topology=%q: %q is not key=value", s, kv)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("--topology=%q: key %q given twice", s, k)
		}
		m[k] = v
	}
	return m, nil
}

// topologyString is the inverse of ParseTopology, sorted, for logs.
func topologyString(m map[string]string) string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}
