package main

import (
	"context"
	"flag"
	"sync"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/share"
)

// kubeFlags configure the parts that talk to the Kubernetes API (embedded provisioner, recycler).
type kubeFlags struct {
	kubeconfig string
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig for the Kubernetes API (empty: in-cluster)")
}

func (k *kubeFlags) start(ctx context.Context, wg *sync.WaitGroup, d *driver.Driver, ws *share.Workspace, opts driver.Options) error {
	return nil
}
