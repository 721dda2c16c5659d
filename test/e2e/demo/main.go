// Command demo is `make demo`: Paddock end to end on one machine, as a user runs it. It starts a real
// Kubernetes control plane on the host and a QEMU guest with a kernel NFS server that is also a real
// node (containerd, runc, the CNI bridge and kubelet), imports Paddock's image archive (make images),
// installs Paddock with `kubectl apply -k` (an overlay of deploy/kubernetes that only points at the
// imported image), so the controller Deployment and the node DaemonSet run as pods and the node plugin
// registers itself with kubelet. Then it applies the example StorageClass, PVC and Pod from
// deploy/examples, waits for the pod, and shows the file it wrote on the NFS server's export. Then it
// cleans up, or with -keep leaves everything running until interrupted.
//
//	make demo                      # or: go run ./test/e2e/demo -guest-dir=_output/guest -images-dir=_output/images
//	make demo DEMO_FLAGS=-keep
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

const (
	className = "paddock-delete" // the example class the example PVC uses
	pvcName   = "paddock-demo"
	podName   = "paddock-demo"
)

var (
	guestDir  = flag.String("guest-dir", "_output/guest", "directory with the static guest binaries (make guest-binaries)")
	imagesDir = flag.String("images-dir", "_output/images", "directory with the image archives (make images)")
	keep      = flag.Bool("keep", false, "leave the control plane, the guest and the volume running until interrupted")
	start     = time.Now()
)

func step(format string, args ...any) {
	fmt.Printf("\n[%6.1fs] ==> %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func info(format string, args ...any) {
	for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n") {
		fmt.Println("           " + l)
	}
}

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\n[%6.1fs] demo OK\n", time.Since(start).Seconds())
}

func run(ctx context.Context) (err error) {
	step("Starting a Kubernetes v1.37.1 control plane on the host (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and a QEMU guest with a kernel NFS server")
	e, err := kubeenv.Start(ctx, kubeenv.Options{GuestDir: *guestDir, Node: true, CPUs: 2, Logf: info})
	if err != nil {
		return err
	}
	cleanups := []func(context.Context) error{func(context.Context) error { e.Stop(); return nil }}
	defer func() {
		if *keep && err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		for i := len(cleanups) - 1; i >= 0; i-- {
			if cerr := cleanups[i](cctx); cerr != nil && err == nil {
				err = fmt.Errorf("cleanup: %w", cerr)
			}
		}
	}()
	info("NFS server in the guest: %s, exports %s and %s", kubeenv.NFSServer, kubeenv.ExportA, kubeenv.ExportB)

	images, err := filepath.Abs(*imagesDir)
	if err != nil {
		return err
	}
	step("Making the guest a Kubernetes node: containerd, runc, CNI bridge, kubelet (node %s); importing the image archives from %s", kubeenv.NodeName, images)
	if err := e.StartNode(ctx, kubeenv.NodeOptions{ImagesDir: images}); err != nil {
		return err
	}
	out, _ := e.Cluster.Kubectl(ctx, "get", "nodes", "-o", "wide")
	info("$ kubectl get nodes -o wide\n%s", out)

	overlay := filepath.Join(e.Repo, "test", "e2e", "kubelet", "overlay")
	step("Installing Paddock: kubectl apply -k test/e2e/kubelet/overlay (deploy/kubernetes with the imported image, imagePullPolicy Never)")
	if err := e.ApplyPods(ctx, overlay, 5*time.Minute); err != nil {
		return fmt.Errorf("%w\nkubelet log:\n%s", err, e.Log(ctx, "kubelet", 40))
	}
	out, _ = e.Cluster.Kubectl(ctx, "-n", kubeenv.Namespace, "get", "pods", "-o", "wide")
	info("$ kubectl -n paddock get pods -o wide\n%s", out)
	out, _ = e.Cluster.Kubectl(ctx, "get", "csinode", kubeenv.NodeName, "-o", "jsonpath={range .spec.drivers[*]}{.name} nodeID={.nodeID}{\"\\n\"}{end}")
	info("the node plugin registered itself with kubelet; CSINode %s lists: %s", kubeenv.NodeName, strings.TrimSpace(out))

	step("Applying the example StorageClass %s from deploy/examples/storageclasses.yaml", className)
	sc, err := exampleClass(e.Repo)
	if err != nil {
		return err
	}
	info("server %s -> %s, share %s -> %s (edited in memory: the file names nfs.example.com)", sc.Parameters["server"], kubeenv.NFSServer, sc.Parameters["share"], kubeenv.ExportA)
	sc.Parameters["server"], sc.Parameters["share"] = kubeenv.NFSServer, kubeenv.ExportA
	if err := applyEdited(ctx, e, "storageclass.yaml", sc); err != nil {
		return err
	}
	cleanups = append(cleanups, func(ctx context.Context) error {
		return ignoreNotFound(e.Cluster.Client.StorageV1().StorageClasses().Delete(ctx, className, metav1.DeleteOptions{}))
	})

	step("kubectl apply -f deploy/examples/pvc.yaml (namespace default), then wait for Bound")
	applied := time.Now()
	out, err = e.Cluster.Kubectl(ctx, "apply", "-n", "default", "-f", filepath.Join(e.Repo, "deploy", "examples", "pvc.yaml"))
	if err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	info("%s", out)
	cleanups = append(cleanups, func(ctx context.Context) error { return deleteClaim(ctx, e, pvcName) })
	var pvc *v1.PersistentVolumeClaim
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		pvc, err = e.Cluster.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, pvcName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return pvc.Status.Phase == v1.ClaimBound, "claim phase " + string(pvc.Status.Phase), nil
	}); err != nil {
		return err
	}
	bound := time.Since(applied)
	info("claim default/%s is Bound to %s: %.2fs from kubectl apply to Bound", pvcName, pvc.Spec.VolumeName, bound.Seconds())
	out, _ = e.Cluster.Kubectl(ctx, "get", "pvc,pv", "-n", "default")
	info("$ kubectl get pvc,pv\n%s", out)
	pv, err := e.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	info("PV volumeHandle: %s", pv.Spec.CSI.VolumeHandle)
	info("PV volumeAttributes: %v, mountOptions: %v, reclaimPolicy: %s", pv.Spec.CSI.VolumeAttributes, pv.Spec.MountOptions, pv.Spec.PersistentVolumeReclaimPolicy)
	dir := kubeenv.ExportA + "/" + pv.Spec.CSI.VolumeAttributes["subDir"]

	step("Applying the example Pod from deploy/examples/pod.yaml; kubelet stages and publishes the volume through the node plugin")
	pod, err := examplePod(e.Repo)
	if err != nil {
		return err
	}
	info("image %s -> %s, imagePullPolicy Never (edited in memory: there is no registry here; the image is one of the imported archives)", pod.Spec.Containers[0].Image, kubeenv.BusyboxImage)
	pod.Spec.Containers[0].Image, pod.Spec.Containers[0].ImagePullPolicy = kubeenv.BusyboxImage, v1.PullNever
	pod.Namespace = "default"
	if err := applyEdited(ctx, e, "pod.yaml", pod); err != nil {
		return err
	}
	cleanups = append(cleanups, func(ctx context.Context) error { return deletePod(ctx, e) })
	scheduled := time.Now()
	if err := kubeenv.WaitFor(ctx, 4*time.Minute, func(ctx context.Context) (bool, string, error) {
		pod, err = e.Cluster.Client.CoreV1().Pods("default").Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if pod.Status.Phase == v1.PodFailed || pod.Status.Phase == v1.PodSucceeded {
			return false, "", fmt.Errorf("pod %s ended: %s", podName, pod.Status.Phase)
		}
		return pod.Status.Phase == v1.PodRunning, "pod phase " + string(pod.Status.Phase), nil
	}); err != nil {
		return err
	}
	info("pod default/%s is Running %.1fs after it was created", podName, time.Since(scheduled).Seconds())
	out, _ = e.Cluster.Kubectl(ctx, "get", "pod", podName, "-n", "default", "-o", "wide")
	info("$ kubectl get pod -o wide\n%s", out)
	var log string
	if err := kubeenv.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
		log, err = e.PodLog(ctx, pod, pod.Spec.Containers[0].Name)
		return err == nil && strings.TrimSpace(log) != "", fmt.Sprint("pod log: ", err), nil
	}); err != nil {
		return err
	}
	info("the pod's log (read on the node: kubectl logs cannot reach a kubelet behind QEMU's user network):\n%s", log)
	out, err = e.Sh(ctx, "grep "+pv.Name+" /proc/mounts")
	if err != nil {
		return err
	}
	info("on the node, kubelet's mounts of the volume:\n%s", out)

	step("The pod's file on the NFS server's export (%s)", dir)
	out, err = e.Sh(ctx, "ls -la "+dir+" && echo '$ cat "+dir+"/hello.txt' && cat "+dir+"/hello.txt")
	if err != nil {
		return err
	}
	info("$ ls -la %s\n%s", dir, out)
	got, err := e.Exec(ctx, "cat", dir+"/hello.txt")
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) == "" || strings.TrimSpace(got) != strings.TrimSpace(log) {
		return fmt.Errorf("the export's %s/hello.txt holds %q, but the pod printed %q", dir, got, log)
	}

	fmt.Printf("\nPVC apply -> Bound: %.2fs\n", bound.Seconds())
	if *keep {
		step("Left running (-keep). Try:")
		info("export KUBECONFIG=%s", e.Cluster.Kubeconfig)
		info("kubectl get pvc,pv,storageclass,csidriver,csinode; kubectl -n paddock get all")
		info("kubectl is at %s/kubectl", e.Cluster.BinDir)
		info("Stop with Ctrl-C (or kill %d): it stops the guest and the control plane and removes their state.", os.Getpid())
		<-ctx.Done()
		// Ctrl-C reaches the whole process group, QEMU too: the guest may be gone already, so there is
		// nothing to unpublish or delete; everything is thrown away.
		step("Stopping the guest and the control plane")
		cleanups = cleanups[:1]
		*keep = false
		return nil
	}
	step("Cleaning up: delete the pod (kubelet unpublishes and unstages), delete the claim (its directory goes to the trash and is reaped), stop everything")
	return nil
}

// applyEdited writes an example object edited in memory to the share and applies it with kubectl.
func applyEdited(ctx context.Context, e *kubeenv.Env, name string, obj any) error {
	b, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	f := filepath.Join(e.ShareDir, name)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		return err
	}
	out, err := e.Cluster.Kubectl(ctx, "apply", "-f", f)
	if err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	info("%s", out)
	return nil
}

// examplePod reads deploy/examples/pod.yaml.
func examplePod(repo string) (*v1.Pod, error) {
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "examples", "pod.yaml"))
	if err != nil {
		return nil, err
	}
	var p v1.Pod
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("deploy/examples/pod.yaml: %w", err)
	}
	if p.Name != podName || len(p.Spec.Containers) != 1 {
		return nil, fmt.Errorf("deploy/examples/pod.yaml: want one pod %s with one container", podName)
	}
	return &p, nil
}

// deletePod deletes the example pod and waits until kubelet has unmounted its volume.
func deletePod(ctx context.Context, e *kubeenv.Env) error {
	step("Deleting pod default/%s", podName)
	if err := e.Cluster.Client.CoreV1().Pods("default").Delete(ctx, podName, metav1.DeleteOptions{}); err != nil {
		return ignoreNotFound(err)
	}
	t0 := time.Now()
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := e.Cluster.Client.CoreV1().Pods("default").Get(ctx, podName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "pod still there", nil
	}); err != nil {
		return err
	}
	if err := kubeenv.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		out, err := e.KubeletNFSMounts(ctx)
		return err == nil && out == "", "still mounted: " + out, err
	}); err != nil {
		return err
	}
	info("pod gone and its volume unmounted (NodeUnpublishVolume, NodeUnstageVolume) %.1fs after the delete", time.Since(t0).Seconds())
	info("(the example pod's sleep ignores SIGTERM, so kubelet waits out its 30 s termination grace period first)")
	return nil
}

// exampleClass reads the class the example claim uses from deploy/examples/storageclasses.yaml.
func exampleClass(repo string) (*storagev1.StorageClass, error) {
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "examples", "storageclasses.yaml"))
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var sc storagev1.StorageClass
		if err := dec.Decode(&sc); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("no StorageClass %s in deploy/examples/storageclasses.yaml", className)
			}
			return nil, err
		}
		if sc.Name == className {
			if sc.Parameters == nil {
				sc.Parameters = map[string]string{}
			}
			return &sc, nil
		}
	}
}

func deleteClaim(ctx context.Context, e *kubeenv.Env, name string) error {
	pvc, err := e.Cluster.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	step("Deleting claim default/%s", name)
	if err := e.Cluster.Client.CoreV1().PersistentVolumeClaims("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	pvName := pvc.Spec.VolumeName
	if pvName == "" {
		return nil
	}
	var dir string
	if pv, err := e.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{}); err == nil && pv.Spec.CSI != nil {
		dir = pv.Spec.CSI.VolumeAttributes["share"] + "/" + pv.Spec.CSI.VolumeAttributes["subDir"]
	}
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		_, err := e.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "PV " + pvName + " still there", nil
	}); err != nil {
		return err
	}
	info("PV %s deleted by the provisioner", pvName)
	if dir == "" || dir == "/" {
		return nil
	}
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		r, err := e.Guest.Exec(ctx, "test", "-e", dir)
		if err != nil {
			return false, "", err
		}
		return r.ExitCode != 0, dir + " still on the export", nil
	}); err != nil {
		return err
	}
	info("%s is gone from its place (moved to %s/.paddock/trash at once)", dir, kubeenv.ExportA)
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		out, err := e.Sh(ctx, "ls -A1 "+kubeenv.ExportA+"/.paddock/trash")
		if err != nil {
			return false, "", err
		}
		return !strings.Contains(out, pvName), "trash still holds " + strings.TrimSpace(out), nil
	}); err != nil {
		return err
	}
	out, _ := e.Sh(ctx, "ls -la "+kubeenv.ExportA+" "+kubeenv.ExportA+"/.paddock/trash")
	info("and removed from the trash by the reaper:\n%s", out)
	return nil
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
