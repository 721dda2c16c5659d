package kubeenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/vm"
)

// The guest as a real Kubernetes node: containerd, runc, the CNI bridge and kubelet, joined to the
// host's control plane as node NodeName with a system:node client certificate.
const (
	// NodeName is the guest's node name (its hostname).
	NodeName = "paddock-guest"
	// NodeIP is the guest's address on QEMU's user network.
	NodeIP = "10.0.2.15"
	// NFSServer is the NFS server address for classes used by pods: a guest address that the node's
	// host network and the pod network both reach (127.0.0.1 inside a pod is the pod's own loopback).
	NFSServer = "192.0.2.1"
	// KubeletDir is kubelet's root directory, the default a real node has.
	KubeletDir = "/var/lib/kubelet"
	// ServiceIP is the kubernetes Service's ClusterIP (the first address of the control plane's
	// --service-cluster-ip-range): pods find the API server there through their in-cluster config.
	ServiceIP = "10.0.0.1"
	// PodCIDR is the range the CNI bridge hands pod addresses from.
	PodCIDR = "10.88.0.0/16"
)

// Images are the image archives (make images) and the names they carry.
var Images = map[string]string{
	"paddock.tar": "registry.paddock.test/paddock:e2e",
	"pause.tar":   "registry.paddock.test/pause:e2e",
	"busybox.tar": "registry.paddock.test/busybox:e2e",
}

// BusyboxImage is the workload image of the tests' pods.
const BusyboxImage = "registry.paddock.test/busybox:e2e"

// NodeOptions configure StartNode.
type NodeOptions struct {
	ImagesDir  string // host dir with the archives of Images (default: <guest dir>/../images)
	RuntimeBin string // host dir with containerd, ctr, runc and the CNI plugins (default: test/node/build.sh)
}

// runtimeBins are the node runtime's binaries test/node/build.sh builds; kubelet comes from the
// control plane's bin dir.
var runtimeBins = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "bridge", "host-local", "loopback"}

// StartNode turns the guest into a node: it builds (or finds) the runtime, copies it in, starts
// containerd, imports the images and starts kubelet, then waits for the Node to be Ready. The control
// plane must have been started with NodeAuthorizer (StartOptions.Node).
func (e *Env) StartNode(ctx context.Context, o NodeOptions) error {
	t0 := time.Now()
	if o.RuntimeBin == "" {
		cmd := exec.CommandContext(ctx, filepath.Join(e.Repo, "test", "node", "build.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("test/node/build.sh: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		o.RuntimeBin = lines[len(lines)-1]
	}
	if o.ImagesDir == "" {
		return fmt.Errorf("node: ImagesDir is required (make images writes _output/images)")
	}
	stage := filepath.Join(e.ShareDir, "node")
	if err := os.MkdirAll(filepath.Join(stage, "bin"), 0o755); err != nil {
		return err
	}
	for _, b := range runtimeBins {
		if err := linkOrCopy(filepath.Join(o.RuntimeBin, b), filepath.Join(stage, "bin", b)); err != nil {
			return fmt.Errorf("node runtime: %w", err)
		}
	}
	if err := linkOrCopy(filepath.Join(e.Cluster.BinDir, "kubelet"), filepath.Join(stage, "bin", "kubelet")); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	for f := range Images {
		if err := linkOrCopy(filepath.Join(o.ImagesDir, f), filepath.Join(stage, f)); err != nil {
			return fmt.Errorf("image archive (make images): %w", err)
		}
	}
	kc, err := e.Cluster.NodeKubeconfig(NodeName, "https://"+vm.HostIP+":"+strconv.Itoa(e.Cluster.Port))
	if err != nil {
		return err
	}
	if err := copyFile(kc, filepath.Join(stage, "kubelet.kubeconfig"), 0o600); err != nil {
		return err
	}
	if err := copyFile(e.Cluster.CAFile, filepath.Join(stage, "ca.crt"), 0o644); err != nil {
		return err
	}
	files := map[string]string{
		"containerd.toml":    containerdConfig,
		"10-bridge.conflist": fmt.Sprintf(cniConfig, PodCIDR),
		"kubelet.yaml":       kubeletConfig,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(stage, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if _, err := e.Sh(ctx, nodeSetup); err != nil {
		return fmt.Errorf("node setup: %w", err)
	}
	// kube-proxy's part for the one Service pods use: the API server, which is on the host behind
	// QEMU's user network. A relay on the node at the Service's ClusterIP stands in for it.
	if err := e.Guest.Relay(ctx, ServiceIP+":443", vm.HostIP+":"+strconv.Itoa(e.Cluster.Port)); err != nil {
		return err
	}
	e.logf("node: runtime copied and set up in %v", time.Since(t0).Round(100*time.Millisecond))

	if err := e.Guest.Spawn(ctx, "containerd", []string{"/usr/local/bin/containerd", "--config", "/etc/containerd/config.toml"}, nil); err != nil {
		return err
	}
	if err := WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
		r, err := e.Guest.Exec(ctx, "ctr", "--address", "/run/containerd/containerd.sock", "version")
		if err != nil {
			return false, "", err
		}
		if running, code, _ := e.Guest.SpawnStatus(ctx, "containerd"); !running {
			return false, "", fmt.Errorf("containerd exited with %d:\n%s", code, e.Log(ctx, "containerd", 40))
		}
		return r.ExitCode == 0, "containerd: " + r.Stderr, nil
	}); err != nil {
		return err
	}
	for f, name := range Images {
		if _, err := e.Exec(ctx, "ctr", "-n", "k8s.io", "images", "import", GuestShare+"/node/"+f); err != nil {
			return fmt.Errorf("import %s: %w", f, err)
		}
		if _, err := e.Exec(ctx, "ctr", "-n", "k8s.io", "images", "inspect", name); err != nil {
			if out, lerr := e.Exec(ctx, "ctr", "-n", "k8s.io", "images", "ls", "-q"); lerr == nil {
				return fmt.Errorf("image %s not found after importing %s; containerd has:\n%s", name, f, out)
			}
			return err
		}
	}
	e.logf("node: containerd up, %d images imported (%v)", len(Images), time.Since(t0).Round(100*time.Millisecond))

	if err := e.Guest.Spawn(ctx, "kubelet", []string{"/usr/local/bin/kubelet",
		"--config=/etc/kubernetes/kubelet.yaml", "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig",
		"--node-ip=" + NodeIP, "--hostname-override=" + NodeName, "--root-dir=" + KubeletDir, "-v=2",
	}, nil); err != nil {
		return err
	}
	if err := WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		if running, code, _ := e.Guest.SpawnStatus(ctx, "kubelet"); !running {
			return false, "", fmt.Errorf("kubelet exited with %d:\n%s", code, e.Log(ctx, "kubelet", 60))
		}
		n, err := e.Cluster.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, "node: " + err.Error(), nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, "node Ready=" + string(c.Status) + ": " + c.Message, nil
			}
		}
		return false, "node has no Ready condition yet", nil
	}); err != nil {
		return fmt.Errorf("%w\nkubelet log:\n%s", err, e.Log(ctx, "kubelet", 60))
	}
	e.logf("node: %s Ready %v after StartNode began", NodeName, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// nodeSetup prepares the guest as a node. kubelet and containerd need real filesystems at their
// roots (the initramfs root has no statfs device), kubelet's root dir must be a shared mount for the
// node plugin's Bidirectional propagation, and cgroup v2 must be mounted with its controllers enabled.
const nodeSetup = `set -e
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control
for d in /var/lib/kubelet /var/lib/containerd; do
	mkdir -p $d
	/usr/bin/mount -t tmpfs -o mode=755 tmpfs $d
done
/usr/bin/mount --make-rshared /var/lib/kubelet
mkdir -p /run/containerd /etc/containerd /etc/kubernetes /etc/cni/net.d /opt/cni/bin /var/log/pods /var/log/containers
for b in containerd containerd-shim-runc-v2 ctr runc kubelet; do cp /host/node/bin/$b /usr/local/bin/$b; done
for b in bridge host-local loopback; do cp /host/node/bin/$b /opt/cni/bin/$b; done
cp /host/node/containerd.toml /etc/containerd/config.toml
cp /host/node/10-bridge.conflist /etc/cni/net.d/
cp /host/node/kubelet.yaml /host/node/kubelet.kubeconfig /host/node/ca.crt /etc/kubernetes/
[ -e /etc/resolv.conf ] || echo 'nameserver 10.0.2.3' > /etc/resolv.conf
ip addr add ` + ServiceIP + `/32 dev lo
echo 1 > /proc/sys/net/ipv4/ip_forward
`

// containerdConfig: overlayfs on the tmpfs root; runc without pivot_root, which fails on an initramfs
// root; the pause image is one of the imported archives (kubelet has no flag for it any more).
const containerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "registry.paddock.test/pause:e2e"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "/usr/local/bin/runc"
  NoPivotRoot = true
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = "/etc/cni/net.d"
`

// cniConfig: a Linux bridge with the node as the pods' gateway. No masquerade: pods only talk to the
// node itself (the NFS server's and the relayed API server's addresses are the node's own).
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "paddock-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`

// kubeletConfig: what a 1-vCPU, 2 GB guest on tmpfs needs (no swap check, cgroupfs without QoS
// cgroups, no node allocatable enforcement, no eviction on the small tmpfs filesystems).
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: /etc/kubernetes/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
podLogsDir: /var/log/pods
readOnlyPort: 0
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
`

// linkOrCopy hard-links src to dst (both on the host), copying when a link is not possible.
func linkOrCopy(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	_ = os.Remove(dst)
	if os.Link(src, dst) == nil {
		return nil
	}
	return copyFile(src, dst, st.Mode().Perm())
}

// ApplyPods applies the kustomization in dir (an overlay of deploy/kubernetes whose pods run on the
// node) and waits until the node DaemonSet's and the controller Deployment's pods are all Ready.
func (e *Env) ApplyPods(ctx context.Context, dir string, timeout time.Duration) error {
	out, err := e.Cluster.Kubectl(ctx, "apply", "-k", dir)
	if err != nil {
		return fmt.Errorf("kubectl apply -k %s: %w\n%s", dir, err, out)
	}
	e.logf("kubectl apply -k %s:\n%s", dir, strings.TrimRight(out, "\n"))
	return e.WaitPluginPods(ctx, timeout)
}

// WaitPluginPods waits until the node DaemonSet and the controller Deployment are fully rolled out
// and every one of their pods is Ready.
func (e *Env) WaitPluginPods(ctx context.Context, timeout time.Duration) error {
	apps := e.Cluster.Client.AppsV1()
	return WaitFor(ctx, timeout, func(ctx context.Context) (bool, string, error) {
		ds, err := apps.DaemonSets(Namespace).Get(ctx, "paddock-node", metav1.GetOptions{})
		if err != nil {
			return false, "daemonset: " + err.Error(), nil
		}
		d, err := apps.Deployments(Namespace).Get(ctx, "paddock-controller", metav1.GetOptions{})
		if err != nil {
			return false, "deployment: " + err.Error(), nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		msg := fmt.Sprintf("node pods ready %d/%d (updated %d), controller pods ready %d/%d (updated %d); %s",
			ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, ds.Status.UpdatedNumberScheduled,
			d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas, e.podSummary(ctx))
		ok := ds.Status.DesiredNumberScheduled > 0 && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled &&
			ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled && ds.Status.ObservedGeneration == ds.Generation &&
			d.Status.ReadyReplicas == want && d.Status.UpdatedReplicas == want && d.Status.Replicas == want &&
			d.Status.ObservedGeneration == d.Generation
		return ok, msg, nil
	})
}

// podSummary is one line per pod in the driver's namespace: phase, readiness, restarts and the
// reason a container waits, for messages.
func (e *Env) podSummary(ctx context.Context) string {
	pods, err := e.Cluster.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "\n  %s %s", p.Name, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d", c.Name, c.Ready, c.RestartCount)
			if w := c.State.Waiting; w != nil {
				fmt.Fprintf(&b, " waiting %s: %s", w.Reason, w.Message)
			}
			if t := c.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(&b, " last exit %d %s", t.ExitCode, t.Reason)
			}
			b.WriteString("]")
		}
	}
	return b.String()
}

// PodLog returns a container's log as the node keeps it (kubectl logs cannot reach a kubelet behind
// QEMU's user network): the CRI log lines of its latest run, with their timestamp and stream fields
// removed.
func (e *Env) PodLog(ctx context.Context, pod *corev1.Pod, container string) (string, error) {
	dir := fmt.Sprintf("/var/log/pods/%s_%s_%s/%s", pod.Namespace, pod.Name, pod.UID, container)
	out, err := e.Sh(ctx, "f=$(ls "+dir+"/*.log | sort -V | tail -n 1) && cat \"$f\"")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		// <RFC3339Nano> <stream> <P|F> <text>
		if f := strings.SplitN(l, " ", 4); len(f) == 4 {
			b.WriteString(f[3])
			if f[2] == "F" {
				b.WriteString("\n")
			}
		}
	}
	return b.String(), nil
}

// KubeletNFSMounts lists the NFS mounts under kubelet's root dir in the node's mount table (source,
// target, type, options; one a line), empty when there are none.
func (e *Env) KubeletNFSMounts(ctx context.Context) (string, error) {
	out, err := e.Sh(ctx, "awk '$2 ~ \"^"+KubeletDir+"/\" && $3 ~ /^nfs/ {print $1\" \"$2\" \"$3\" \"$4}' /proc/self/mounts")
	return strings.TrimSpace(out), err
}
