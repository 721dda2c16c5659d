// Package driver is Paddock's CSI gRPC server: the Identity, Controller and Node services mapped onto
// the volume model (pkg/volume), the controller's export workspace (pkg/share) and the node's mounter
// (pkg/mount).
package driver

import (
	"fmt"
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
	return nil
}

func (o Options) controller() bool { return o.Mode == ModeController || o.Mode == ModeAll }
func (o Options) node() bool       { return o.Mode == ModeNode || o.Mode == ModeAll }
