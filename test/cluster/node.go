package cluster

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// leaseSeconds mirrors kubelet's default node lease duration.
const leaseSeconds = 40

// AddFakeNode creates a Node that looks Ready, with some allocatable CPU and
// memory, plus its Lease in kube-node-lease. There is no kubelet, so the
// Cluster renews the Lease itself until Stop: otherwise the node-lifecycle
// controller would mark the node NotReady (and taint it) after its grace
// period and long-running clusters (make demo) would stop scheduling.
// Labels add to the usual kubernetes.io/hostname, os and arch labels.
func (c *Cluster) AddFakeNode(ctx context.Context, name string, labels map[string]string) error {
	l := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}
	for k, v := range labels {
		l[k] = v
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	created, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	// Status is a subresource: it has to be written separately from create.
	created.Status = corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "fake node (paddock test/cluster)", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			Architecture: "amd64", OperatingSystem: "linux", KubeletVersion: "v1.37.1",
		},
	}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", name, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: corev1.NamespaceNodeLease,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: created.UID}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(name),
			LeaseDurationSeconds: ptr.To[int32](leaseSeconds),
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	if _, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("lease for node %s: %w", name, err)
	}
	c.hbWG.Add(1)
	go c.heartbeat(name)
	return nil
}

// heartbeat renews the node's Lease the way kubelet does (every quarter of the
// lease duration) until Stop or until the node is deleted.
func (c *Cluster) heartbeat(name string) {
	defer c.hbWG.Done()
	t := time.NewTicker(leaseSeconds * time.Second / 4)
	defer t.Stop()
	leases := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		select {
		case <-c.hbCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.hbCtx, 5*time.Second)
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		cancel()
		if err != nil {
			// Node deleted (the lease goes with it via ownerReference), or
			// the cluster is stopping: either way, stop renewing.
			if _, nerr := c.Client.CoreV1().Nodes().Get(c.hbCtx, name, metav1.GetOptions{}); nerr != nil {
				return
			}
		}
	}
}
