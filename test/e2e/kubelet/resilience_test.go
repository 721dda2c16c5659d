//go:build e2e

package kubelet

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/pkg/provisioner"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// ticker appends 1, 2, 3, ... to /data/ticks, one line every 200 ms, for as long as it runs.
const ticker = "i=0; while :; do i=$((i+1)); echo $i >> /data/ticks; sleep 0.2; done"

// ticks reads the ticker's file on the server and checks it is the unbroken sequence 1..n.
func ticks(t *testing.T, dir string) int {
	t.Helper()
	out := strings.Fields(env.ShT(t, "cat "+server(dir)+"/ticks 2>/dev/null || true"))
	for i, f := range out {
		if f != strconv.Itoa(i+1) {
			t.Fatalf("ticks on the server break at line %d: %q (lost or repeated writes)", i+1, f)
		}
	}
	return len(out)
}

func waitTicksPast(t *testing.T, dir string, n int) int {
	t.Helper()
	var got int
	kubeenv.WaitT(t, 2*time.Minute, fmt.Sprintf("ticks past %d", n), func(context.Context) (bool, string, error) {
		got = ticks(t, dir)
		return got > n, fmt.Sprintf("%d ticks", got), nil
	})
	return got
}

// startTicker makes a namespace (prefix-<n>), an RWX claim "data" of a new class (prefix-<n>) in it,
// and a pod "ticker" that runs the ticker on it; once the pod is Running and the server has more than
// 3 ticks, it returns the namespace, the volume's directory and the ticks so far.
func startTicker(t *testing.T, prefix string) (ns, dir string, n int) {
	t.Helper()
	ns = env.NewNamespace(t, prefix)
	sc := storageClass(t, prefix, v1.PersistentVolumeReclaimDelete, nil)
	createClaim(t, ns, "data", sc.Name, v1.ReadWriteMany)
	_, dir = boundDir(t, ns, "data")
	startPod(t, ns, "ticker", "data", ticker, podOpts{})
	waitPod(t, ns, "ticker", v1.PodRunning)
	return ns, dir, waitTicksPast(t, dir, 3)
}

// TestNodePluginRestartUnderLivePod: the node plugin's pod is deleted and recreated by its DaemonSet
// while a workload pod writes to its volume. The workload's mount lives in the node's mount table,
// not in the plugin's container, so its writes go on without a gap; once the plugin is back, a new
// pod on the same claim starts and sees the same data.
func TestNodePluginRestartUnderLivePod(t *testing.T) {
	ns, dir, before := startTicker(t, "plugin-restart")

	ctx := kubeenv.Context(t, 5*time.Minute)
	old := pluginPod(t, ctx)
	if err := env.Cluster.Client.CoreV1().Pods(kubeenv.Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeenv.WaitT(t, 3*time.Minute, "a new node plugin pod Ready", func(ctx context.Context) (bool, string, error) {
		p := pluginPodOrNil(ctx)
		if p == nil || p.UID == old.UID {
			return false, "old pod still there or no new pod yet", nil
		}
		return ready(p), "new pod " + p.Name + " " + string(p.Status.Phase), nil
	})
	during := waitTicksPast(t, dir, before)
	t.Logf("ticks: %d before the plugin's deletion, %d once the new plugin pod was Ready", before, during)
	waitTicksPast(t, dir, during+5)

	phase, log := runPod(t, ns, "after", "data", "tail -n 1 /data/ticks", podOpts{})
	if phase != v1.PodSucceeded || strings.TrimSpace(log) == "" {
		t.Errorf("pod started after the plugin came back: %s, log %q", phase, log)
	}
	deletePod(t, ns, "after", podTimeout)
	deletePod(t, ns, "ticker", podTimeout)
	ticks(t, dir)
	waitNoKubeletMounts(t)
}

func pluginPodOrNil(ctx context.Context) *v1.Pod {
	pods, err := env.Cluster.Client.CoreV1().Pods(kubeenv.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
	if err != nil {
		return nil
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	return nil
}

func pluginPod(t *testing.T, ctx context.Context) *v1.Pod {
	t.Helper()
	p := pluginPodOrNil(ctx)
	if p == nil {
		t.Fatal("no node plugin pod")
	}
	return p
}

// TestControllerFailoverMidProvisioning: claims are created in a burst and the controller replica
// holding the Lease is killed at once (no grace: its Lease is not released). The other replica takes
// over, and every claim binds exactly once: one PV each, one directory each on the server, no
// directory left over.
func TestControllerFailoverMidProvisioning(t *testing.T) {
	const n = 6
	ns := env.NewNamespace(t, "failover")
	sc := storageClass(t, "failover", v1.PersistentVolumeReclaimDelete, nil)
	ctx := kubeenv.Context(t, 10*time.Minute)
	leases := env.Cluster.Client.CoordinationV1().Leases(kubeenv.Namespace)
	leaseName := provisioner.LeaseName(kubeenv.Driver)
	lease, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("lease %s: %v %+v", leaseName, err, lease)
	}
	leader, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_") // identity is <hostname>_<random>; a pod's hostname is its name
	for i := range n {
		createClaim(t, ns, fmt.Sprintf("c%d", i), sc.Name, v1.ReadWriteMany)
	}
	if err := env.Cluster.Client.CoreV1().Pods(kubeenv.Namespace).Delete(ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatalf("kill leader %s: %v", leader, err)
	}
	t0 := time.Now()
	dirs := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		_, d := boundDir(t, ns, name)
		if other, dup := dirs[d]; dup {
			t.Errorf("claims %s and %s share the directory %s", other, name, d)
		}
		dirs[d] = name
	}
	t.Logf("all %d claims Bound %v after the leader %s was killed", n, time.Since(t0).Round(time.Second), leader)
	lease, err = leases.Get(ctx, leaseName, metav1.GetOptions{})
	if err == nil && lease.Spec.HolderIdentity != nil && strings.HasPrefix(*lease.Spec.HolderIdentity, leader+"_") {
		t.Errorf("lease still held by the killed pod %s", leader)
	}
	pvs, err := env.Cluster.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, pv := range pvs.Items {
		if pv.Spec.StorageClassName == sc.Name {
			count++
		}
	}
	if count != n {
		t.Errorf("%d PVs of class %s, want %d (one per claim)", count, sc.Name, n)
	}
	onServer := strings.Fields(env.ShT(t, "cd "+export+" && ls -d "+ns+"-* 2>/dev/null || true"))
	if len(onServer) != n {
		t.Errorf("server has %d directories for the namespace, want %d: %v", len(onServer), n, onServer)
	}
	if err := env.WaitPluginPods(ctx, 4*time.Minute); err != nil {
		t.Errorf("controller Deployment did not recover: %v", err)
	}
}

// TestServerDownPodDeletion: the NFS server stops while a pod writes to its volume, and the pod is
// deleted. Once the server is back, the deletion completes within a bounded time, and nothing is
// left mounted under kubelet's root.
func TestServerDownPodDeletion(t *testing.T) {
	ns, dir, _ := startTicker(t, "server-down")

	env.ShT(t, "nfs-server-stop")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_, _ = env.Sh(context.Background(), "nfs-server-start")
		}
	})
	ctx := kubeenv.Context(t, time.Minute)
	t0 := time.Now()
	if err := env.Cluster.Client.CoreV1().Pods(ns).Delete(ctx, "ticker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Long enough for kubelet to kill the container and call NodeUnpublishVolume against the dead
	// server: a deletion may finish while the server is down, or wait for it.
	down := kubeenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		_, err := env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, "ticker", metav1.GetOptions{})
		return apierrors.IsNotFound(err), "pod still there", nil
	}) == nil
	t.Logf("server down: pod gone while the server was down: %v (%v after the delete)", down, time.Since(t0).Round(time.Second))
	env.ShT(t, "nfs-server-start")
	restarted = true
	back := time.Now()
	deletePod(t, ns, "ticker", 4*time.Minute)
	waitNoKubeletMounts(t)
	t.Logf("server back: pod gone and nothing mounted under kubelet's root %v later", time.Since(back).Round(time.Second))
	ticks(t, dir)
}
