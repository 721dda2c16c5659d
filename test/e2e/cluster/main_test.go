//go:build e2e

// Package cluster holds Paddock's cluster end-to-end tests. They run on the HOST: a real etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler (test/cluster) on loopback, and a QEMU
// guest (test/vm) with a kernel NFS server in which the Paddock controller runs as a process. The
// deploy/kubernetes base is applied for real and the controller runs with a token of its own
// ServiceAccount from those manifests, so a missing RBAC rule fails a test. Every test checks both the
// API objects and the export as the NFS server sees it.
//
//	make test-e2e-cluster
package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

var guestDir = flag.String("guest-dir", "", "directory with the static guest binaries (make guest-binaries: _output/guest)")

const (
	ctrlName = "controller"
	ctrlSock = kubeenv.RunDir + "/controller.sock"
	ctrlWork = "/var/lib/paddock"
	nodeName = "e2e-node-1"
)

var (
	env            *kubeenv.Env
	ctrlKubeconfig string
	snapKubeconfig string               // the csi-snapshotter's ServiceAccount (clone_test.go)
	snapController *kubeenv.HostProcess // snapshot-controller on the host
	quotaClient    string               // the controller's --quota-credentials in the guest (quota_test.go)
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if *guestDir == "" {
		fmt.Fprintln(os.Stderr, "e2e-cluster: -guest-dir is required (make test-e2e-cluster)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) {
		fmt.Printf("[e2e-cluster %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	var err error
	env, err = kubeenv.Start(ctx, kubeenv.Options{GuestDir: *guestDir, Logf: logf, Forward: []int{failoverPort}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	defer env.Stop()
	if ctrlKubeconfig, err = env.Install(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	// external-snapshotter v8.7.0, real: the CRDs, snapshot-controller on the host (admin kubeconfig,
	// like kube-controller-manager), and the csi-snapshotter sidecar's RBAC and binary for the guest.
	if err := env.InstallSnapshotCRDs(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	if snapController, err = env.StartSnapshotController(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	defer snapController.Stop()
	if snapKubeconfig, err = env.InstallCSISnapshotter(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	if err := env.Cluster.AddFakeNode(ctx, nodeName, nil); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	// The quota agent on the guest's XFS export, and the controller's client identity for it.
	if quotaClient, err = env.QuotaCredentials(); err == nil {
		err = env.StartQuotaAgent(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: quota agent: %v\n", err)
		return 1
	}
	if err := startController(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-cluster: %v\n", err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Printf("---- last lines of the in-guest controller's log ----\n%s\n", env.Log(ctx, ctrlName, 80))
		fmt.Printf("---- last lines of the in-guest csi-snapshotter's log ----\n%s\n", env.Log(ctx, snapName, 40))
		fmt.Printf("---- last lines of snapshot-controller's log ----\n%s\n", snapController.Tail(40))
		fmt.Printf("---- last lines of the in-guest quota agent's log ----\n%s\n", env.Log(ctx, kubeenv.QuotaAgentName, 40))
	}
	_ = env.Guest.Kill(ctx, snapName, syscall.SIGTERM)
	_ = env.StopPaddock(ctx, ctrlName, syscall.SIGTERM)
	return code
}

func startController(ctx context.Context) error {
	return env.StartPaddock(ctx, ctrlName, ctrlSock, append(kubeenv.ControllerArgs(ctrlKubeconfig, ctrlSock, ctrlWork),
		"--quota-credentials="+quotaClient)...)
}
