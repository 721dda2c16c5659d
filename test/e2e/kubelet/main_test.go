//go:build e2e

// Package kubelet holds Paddock's kubelet tier: the product's real path, end to end. The QEMU guest
// (test/vm) with its kernel NFS server becomes a Kubernetes node: containerd, runc, the CNI bridge
// and kubelet (test/node/build.sh, test/cluster/build.sh) joined to a real control plane on the host
// (test/cluster) with a system:node certificate, under the Node authorizer. Paddock's image archive
// (make images) is imported, and deploy/kubernetes is applied through the overlay in ./overlay, which
// changes only the image references and the pull policy: the controller Deployment and the node
// DaemonSet run as pods, the node plugin registers itself with kubelet, and kubelet makes its own
// NodePublish/NodeUnpublish calls for the workload pods. Every scenario checks the export as the NFS
// server sees it, and the node's mount table.
//
//	make test-e2e-kubelet
package kubelet

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

var (
	guestDir  = flag.String("guest-dir", "", "directory with the static guest binaries (make guest-binaries: _output/guest)")
	imagesDir = flag.String("images-dir", "", "directory with the image archives (make images: _output/images)")
)

var env *kubeenv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func logf(format string, args ...any) {
	fmt.Printf("[e2e-kubelet %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(m *testing.M) int {
	if *guestDir == "" || *imagesDir == "" {
		fmt.Fprintln(os.Stderr, "e2e-kubelet: -guest-dir and -images-dir are required (make test-e2e-kubelet)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	t0 := time.Now()
	var err error
	env, err = kubeenv.Start(ctx, kubeenv.Options{GuestDir: *guestDir, Node: true, CPUs: 2, Logf: logf})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-kubelet: %v\n", err)
		return 1
	}
	defer env.Stop()
	if err := env.StartNode(ctx, kubeenv.NodeOptions{ImagesDir: *imagesDir}); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-kubelet: %v\n", err)
		return 1
	}
	overlay, err := filepath.Abs("overlay")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-kubelet: %v\n", err)
		return 1
	}
	if err := env.ApplyPods(ctx, overlay, 5*time.Minute); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-kubelet: %v\n%s\n", err, env.Log(ctx, "kubelet", 80))
		return 1
	}
	logf("node and plugin pods Ready %v after start", time.Since(t0).Round(time.Second))
	code := m.Run()
	if code != 0 {
		fmt.Printf("---- last lines of kubelet's log ----\n%s\n", env.Log(ctx, "kubelet", 80))
		dumpPluginLogs(ctx)
	}
	return code
}
