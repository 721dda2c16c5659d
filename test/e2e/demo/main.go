// Command demo is `make demo`: Paddock end to end on one machine. It starts a real Kubernetes control
// plane on the host and a QEMU guest with a kernel NFS server, installs Paddock with
// `kubectl apply -k deploy/kubernetes`, runs the Paddock controller (with its ServiceAccount's token)
// and node plugin in the guest, applies the example StorageClass and PVC, waits for Bound, publishes
// the volume on the "node" the way kubelet does (CSI NodePublishVolume), writes a file through the
// mount and shows it on the NFS server's export. Then it cleans up, or with -keep leaves everything
// running until interrupted.
//
//	make demo                      # or: go run ./test/e2e/demo -guest-dir=_output/guest
//	make demo DEMO_FLAGS=-keep
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
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

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	nodePort  = 10100            // the node plugin's CSI endpoint in the guest, forwarded to the host
	nodeID    = "demo-node"
	ctrlSock  = kubeenv.RunDir + "/controller.sock"
)

var (
	guestDir = flag.String("guest-dir", "_output/guest", "directory with the static guest binaries (make guest-binaries)")
	keep     = flag.Bool("keep", false, "leave the control plane, the guest and the volume running until interrupted")
	start    = time.Now()
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
	e, err := kubeenv.Start(ctx, kubeenv.Options{GuestDir: *guestDir, Forward: []int{nodePort}, Logf: info})
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
	info("NFS server in the guest: %s, exports %s and %s", kubeenv.Server, kubeenv.ExportA, kubeenv.ExportB)

	step("Installing Paddock: kubectl apply -k deploy/kubernetes")
	kc, err := e.Install(ctx)
	if err != nil {
		return err
	}
	info("(no kubelet here: the Deployment's and DaemonSet's pods are never run; the same binary runs as processes in the guest)")

	step("Starting the Paddock controller in the guest with the paddock-controller ServiceAccount's token (RBAC from the manifests)")
	args := kubeenv.ControllerArgs(kc, ctrlSock, "/var/lib/paddock")
	info("paddock %s", strings.Join(args, " "))
	if err := e.StartPaddock(ctx, "controller", ctrlSock, args...); err != nil {
		return err
	}
	cleanups = append(cleanups, func(ctx context.Context) error { return e.StopPaddock(ctx, "controller", syscall.SIGTERM) })

	step("Starting the Paddock node plugin in the guest (the DaemonSet's container)")
	nargs := []string{"--mode=node", fmt.Sprintf("--endpoint=tcp://0.0.0.0:%d", nodePort), "--node-id=" + nodeID, "--driver-name=" + kubeenv.Driver, "-v=2"}
	info("paddock %s", strings.Join(nargs, " "))
	info("(kubelet would talk to it over a unix socket; here the host talks to it over a TCP port QEMU forwards)")
	if err := e.StartPaddock(ctx, "node", "", nargs...); err != nil {
		return err
	}
	cleanups = append(cleanups, func(ctx context.Context) error { return e.StopPaddock(ctx, "node", syscall.SIGTERM) })
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", e.Guest.HostPort(nodePort)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func(context.Context) error { return conn.Close() })
	node := csi.NewNodeClient(conn)
	if err := kubeenv.WaitFor(ctx, 90*time.Second, func(ctx context.Context) (bool, string, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := node.NodeGetInfo(cctx, &csi.NodeGetInfoRequest{})
		if err != nil {
			return false, "NodeGetInfo: " + err.Error(), nil
		}
		info("NodeGetInfo: node_id=%s", r.GetNodeId())
		return true, "", nil
	}); err != nil {
		return err
	}

	step("Applying the example StorageClass %s from deploy/examples/storageclasses.yaml", className)
	sc, err := exampleClass(e.Repo)
	if err != nil {
		return err
	}
	info("server %s -> %s, share %s -> %s (edited in memory: the file names nfs.example.com)", sc.Parameters["server"], kubeenv.Server, sc.Parameters["share"], kubeenv.ExportA)
	sc.Parameters["server"], sc.Parameters["share"] = kubeenv.Server, kubeenv.ExportA
	scYAML, err := yaml.Marshal(sc)
	if err != nil {
		return err
	}
	scFile := filepath.Join(e.ShareDir, "storageclass.yaml")
	if err := os.WriteFile(scFile, scYAML, 0o644); err != nil {
		return err
	}
	if out, err := e.Cluster.Kubectl(ctx, "apply", "-f", scFile); err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	} else {
		info("%s", out)
	}
	cleanups = append(cleanups, func(ctx context.Context) error {
		return ignoreNotFound(e.Cluster.Client.StorageV1().StorageClasses().Delete(ctx, className, metav1.DeleteOptions{}))
	})

	pvcFile := filepath.Join(e.Repo, "deploy", "examples", "pvc.yaml")
	step("kubectl apply -f deploy/examples/pvc.yaml (namespace default), then wait for Bound")
	applied := time.Now()
	out, err := e.Cluster.Kubectl(ctx, "apply", "-n", "default", "-f", pvcFile)
	if err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	info("%s", out)
	pvcName := "paddock-demo"
	cleanups = append(cleanups, func(ctx context.Context) error { return deleteClaim(ctx, e, pvcName) })
	var pvc *v1.PersistentVolumeClaim
	if err := kubeenv.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		pvc, err = e.Cluster.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, pvcName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return pvc.Status.Phase == v1.ClaimBound, "claim phase " + string(pvc.Status.Phase), nil
	}); err != nil {
		return fmt.Errorf("%w\ncontroller log:\n%s", err, e.Log(ctx, "controller", 30))
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
	out, err = e.Sh(ctx, "ls -la "+kubeenv.ExportA)
	if err != nil {
		return err
	}
	info("On the NFS server: $ ls -la %s\n%s", kubeenv.ExportA, out)

	podUID := "00000000-0000-4000-8000-0000000de300"
	target := fmt.Sprintf("/var/lib/kubelet/pods/%s/volumes/kubernetes.io~csi/%s/mount", podUID, pv.Name)
	// kubelet's own staging path for a CSI volume: one per volume and node, shared by its pods.
	staging := fmt.Sprintf("/var/lib/kubelet/plugins/kubernetes.io/csi/%s/%x/globalmount", pv.Spec.CSI.Driver, sha256.Sum256([]byte(pv.Spec.CSI.VolumeHandle)))
	capability := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: pv.Spec.MountOptions}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
	step("NodeStageVolume, as kubelet does before the first pod on a node uses the claim: the NFS mount, at %s", staging)
	if _, err := e.Sh(ctx, "mkdir -p "+filepath.Dir(staging)+" "+filepath.Dir(target)); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = node.NodeStageVolume(sctx, &csi.NodeStageVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, StagingTargetPath: staging,
		VolumeCapability: capability, VolumeContext: pv.Spec.CSI.VolumeAttributes})
	cancel()
	if err != nil {
		return fmt.Errorf("NodeStageVolume: %w\nnode log:\n%s", err, e.Log(ctx, "node", 30))
	}
	cleanups = append(cleanups, func(ctx context.Context) error {
		step("NodeUnstageVolume %s", staging)
		_, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, StagingTargetPath: staging})
		return err
	})
	step("NodePublishVolume, as kubelet does for each pod that uses the claim: a bind mount of the staged mount at %s", target)
	pub := &csi.NodePublishVolumeRequest{
		VolumeId:          pv.Spec.CSI.VolumeHandle,
		StagingTargetPath: staging,
		TargetPath:        target,
		VolumeCapability:  capability,
		VolumeContext:     withPodInfo(pv.Spec.CSI.VolumeAttributes, podUID),
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = node.NodePublishVolume(pctx, pub)
	cancel()
	if err != nil {
		return fmt.Errorf("NodePublishVolume: %w\nnode log:\n%s", err, e.Log(ctx, "node", 30))
	}
	cleanups = append(cleanups, func(ctx context.Context) error {
		step("NodeUnpublishVolume %s", target)
		_, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, TargetPath: target})
		return err
	})
	out, err = e.Sh(ctx, "grep -e "+staging+" -e "+target+" /proc/mounts")
	if err != nil {
		return err
	}
	info("mounted: %s", out)

	line := fmt.Sprintf("hello from the Paddock demo, %s", time.Now().UTC().Format(time.RFC3339))
	step("Writing a file through the mount (what the example pod does): %s/hello.txt", target)
	out, err = e.Exec(ctx, "/bin/sh", "-c", `printf '%s\n' "$1" >> "$2/hello.txt" && cat "$2/hello.txt"`, "sh", line, target)
	if err != nil {
		return err
	}
	info("$ cat <target>/hello.txt\n%s", out)

	step("The file on the NFS server's export (%s)", dir)
	out, err = e.Sh(ctx, "ls -la "+dir+" && echo '$ cat "+dir+"/hello.txt' && cat "+dir+"/hello.txt")
	if err != nil {
		return err
	}
	info("$ ls -la %s\n%s", dir, out)
	got, err := e.Exec(ctx, "cat", dir+"/hello.txt")
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != line {
		return fmt.Errorf("the export's %s/hello.txt holds %q, want %q", dir, got, line)
	}

	fmt.Printf("\nPVC apply -> Bound: %.2fs\n", bound.Seconds())
	if *keep {
		step("Left running (-keep). Try:")
		info("export KUBECONFIG=%s", e.Cluster.Kubeconfig)
		info("kubectl get pvc,pv,storageclass,csidriver; kubectl -n paddock get all")
		info("kubectl is at %s/kubectl", e.Cluster.BinDir)
		info("the volume is mounted in the guest at %s", target)
		info("Stop with Ctrl-C (or kill %d): it stops the guest and the control plane and removes their state.", os.Getpid())
		<-ctx.Done()
		// Ctrl-C reaches the whole process group, QEMU too: the guest may be gone already, so there is
		// nothing to unpublish or delete; everything is thrown away.
		step("Stopping the guest and the control plane")
		cleanups = cleanups[:1]
		*keep = false
		return nil
	}
	step("Cleaning up: unpublish, unstage, delete the claim (its directory goes to the trash and is reaped), stop everything")
	return nil
}

// withPodInfo adds what kubelet adds for a CSIDriver with podInfoOnMount (harmless otherwise).
func withPodInfo(attrs map[string]string, podUID string) map[string]string {
	m := map[string]string{}
	for k, v := range attrs {
		m[k] = v
	}
	m["csi.storage.k8s.io/pod.name"] = "paddock-demo"
	m["csi.storage.k8s.io/pod.namespace"] = "default"
	m["csi.storage.k8s.io/pod.uid"] = podUID
	m["csi.storage.k8s.io/ephemeral"] = "false"
	return m
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
