//go:build e2e

package kubelet

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// Waits are generous (the node is emulated, on one vCPU, and shares two host cores with the control
// plane) but bounded; a timeout reports what was last seen.
const (
	bindTimeout = 3 * time.Minute
	podTimeout  = 4 * time.Minute
)

// export is the export the tier's classes use, as the NFS server sees it.
const export = kubeenv.ExportA

func ptr[T any](v T) *T { return &v }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var seq atomic.Int64

func namespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, seq.Add(1))
	if _, err := env.Cluster.Client.CoreV1().Namespaces().Create(ctxT(t, time.Minute), &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = env.Cluster.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// storageClass creates a class on the guest's NFS server as pods reach it (kubeenv.NFSServer) with
// the volume directory named after the claim; params add to or override those.
func storageClass(t *testing.T, prefix string, reclaim v1.PersistentVolumeReclaimPolicy, params map[string]string) *storagev1.StorageClass {
	t.Helper()
	p := map[string]string{"server": kubeenv.NFSServer, "share": export, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}
	for k, v := range params {
		p[k] = v
	}
	mode := storagev1.VolumeBindingImmediate
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, seq.Add(1))},
		Provisioner:       kubeenv.Driver,
		Parameters:        p,
		ReclaimPolicy:     &reclaim,
		MountOptions:      []string{"nfsvers=4.2"},
		VolumeBindingMode: &mode,
	}
	sc, err := env.Cluster.Client.StorageV1().StorageClasses().Create(ctxT(t, time.Minute), sc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("storageclass: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = env.Cluster.Client.StorageV1().StorageClasses().Delete(ctx, sc.Name, metav1.DeleteOptions{})
	})
	return sc
}

func createClaim(t *testing.T, ns, name, class string, mode v1.PersistentVolumeAccessMode) {
	t.Helper()
	createClaimOf(t, ns, name, class, mode, "")
}

// createClaimOf creates a claim, for the PV pvName if it is not empty.
func createClaimOf(t *testing.T, ns, name, class string, mode v1.PersistentVolumeAccessMode, pvName string) {
	t.Helper()
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{mode},
			StorageClassName: &class,
			VolumeName:       pvName,
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctxT(t, time.Minute), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create claim %s/%s: %v", ns, name, err)
	}
}

// waitBound waits for the claim to be Bound and returns its PV.
func waitBound(t *testing.T, ns, name string) *v1.PersistentVolume {
	t.Helper()
	var pv *v1.PersistentVolume
	waitT(t, bindTimeout, "claim "+ns+"/"+name+" Bound", func(ctx context.Context) (bool, string, error) {
		pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if pvc.Status.Phase != v1.ClaimBound {
			return false, fmt.Sprintf("phase %s; events: %s", pvc.Status.Phase, events(ctx, ns, name)), nil
		}
		pv, err = env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	})
	return pv
}

func deleteClaim(t *testing.T, ns, name string) {
	t.Helper()
	if err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctxT(t, time.Minute), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete claim %s/%s: %v", ns, name, err)
	}
	waitT(t, bindTimeout, "claim "+ns+"/"+name+" gone", func(ctx context.Context) (bool, string, error) {
		pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("phase %s, finalizers %v", pvc.Status.Phase, pvc.Finalizers), nil
	})
}

// waitPV waits until the PV is gone (phase "") or in phase.
func waitPV(t *testing.T, name string, phase v1.PersistentVolumePhase) *v1.PersistentVolume {
	t.Helper()
	var pv *v1.PersistentVolume
	waitT(t, bindTimeout, "PV "+name+" "+string(phase), func(ctx context.Context) (bool, string, error) {
		var err error
		pv, err = env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return phase == "", "gone", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return pv.Status.Phase == phase, fmt.Sprintf("phase %s (%s); events: %s", pv.Status.Phase, pv.Status.Message, events(ctx, "default", name)), nil
	})
	return pv
}

type podOpts struct {
	readOnly bool                   // the pod's volume source is readOnly
	sc       *v1.PodSecurityContext // pod security context (fsGroup, runAsUser)
	restart  v1.RestartPolicy       // default Never
}

// startPod creates a busybox pod on the node that runs script with the claim mounted at /data.
func startPod(t *testing.T, ns, name, claim, script string, o podOpts) {
	t.Helper()
	if o.restart == "" {
		o.restart = v1.RestartPolicyNever
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodSpec{
			RestartPolicy:                 o.restart,
			TerminationGracePeriodSeconds: ptr(int64(2)),
			SecurityContext:               o.sc,
			AutomountServiceAccountToken:  ptr(false),
			Containers: []v1.Container{{
				Name: "work", Image: kubeenv.BusyboxImage, ImagePullPolicy: v1.PullNever,
				Command:      []string{"sh", "-c", script},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: o.readOnly},
			}}},
		},
	}
	if _, err := env.Cluster.Client.CoreV1().Pods(ns).Create(ctxT(t, time.Minute), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
}

// waitPod waits for the pod to reach one of phases and returns it.
func waitPod(t *testing.T, ns, name string, phases ...v1.PodPhase) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	waitT(t, podTimeout, fmt.Sprintf("pod %s/%s %v", ns, name, phases), func(ctx context.Context) (bool, string, error) {
		var err error
		pod, err = env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, p := range phases {
			if pod.Status.Phase == p && (p != v1.PodRunning || ready(pod)) {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("phase %s; events: %s", pod.Status.Phase, events(ctx, ns, name)), nil
	})
	return pod
}

func ready(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// runPod runs script in a pod to completion and returns its phase and log.
func runPod(t *testing.T, ns, name, claim, script string, o podOpts) (v1.PodPhase, string) {
	t.Helper()
	startPod(t, ns, name, claim, script, o)
	pod := waitPod(t, ns, name, v1.PodSucceeded, v1.PodFailed)
	return pod.Status.Phase, podLog(t, pod)
}

func podLog(t *testing.T, pod *v1.Pod) string {
	t.Helper()
	out, err := env.PodLog(ctxT(t, time.Minute), pod, pod.Spec.Containers[0].Name)
	if err != nil {
		t.Fatalf("log of %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return out
}

// deletePod deletes the pod and waits until it is gone (kubelet has unmounted its volumes).
func deletePod(t *testing.T, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	if err := env.Cluster.Client.CoreV1().Pods(ns).Delete(ctxT(t, time.Minute), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
	waitT(t, timeout, "pod "+ns+"/"+name+" gone", func(ctx context.Context) (bool, string, error) {
		p, err := env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("phase %s, deletion since %v", p.Status.Phase, p.DeletionTimestamp), nil
	})
	return time.Since(t0)
}

func events(ctx context.Context, ns, name string) string {
	evs, err := env.Cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].LastTimestamp.Before(&evs.Items[j].LastTimestamp) })
	var b []string
	for _, e := range evs.Items {
		b = append(b, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	if len(b) > 6 {
		b = b[len(b)-6:]
	}
	return strings.Join(b, " | ")
}

func waitT(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) {
	t.Helper()
	if err := kubeenv.WaitFor(context.Background(), timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// gsh runs a shell script on the node (the guest, which is also the NFS server) and fails the test
// on a non-zero exit.
func gsh(t *testing.T, script string) string {
	t.Helper()
	out, err := env.Sh(ctxT(t, 2*time.Minute), script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// server is the path of a volume's directory (relative to the export) as the NFS server sees it.
func server(rel string) string { return export + "/" + rel }

// volumeDir is the volume directory of a PV, relative to the export.
func volumeDir(t *testing.T, pv *v1.PersistentVolume) string {
	t.Helper()
	if pv.Spec.CSI == nil {
		t.Fatalf("PV %s is not a CSI volume", pv.Name)
	}
	v, err := volume.ParseID(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		t.Fatalf("PV %s: %v", pv.Name, err)
	}
	return v.SubDir
}

// nfsMountsUnderKubelet lists the NFS mounts under kubelet's root dir.
func nfsMountsUnderKubelet(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(gsh(t, "awk '$2 ~ \"^"+kubeenv.KubeletDir+"/\" && $3 ~ /^nfs/ {print $1\" \"$2\" \"$3\" \"$4}' /proc/self/mounts"))
}

// waitNoKubeletMounts waits until kubelet has unmounted every NFS mount under its root dir: the
// pods' (NodeUnpublishVolume, before a pod object is removed) and the staging mounts
// (NodeUnstageVolume, which kubelet calls shortly after a volume's last pod on the node is gone).
func waitNoKubeletMounts(t *testing.T) {
	t.Helper()
	waitT(t, 2*time.Minute, "no NFS mount under kubelet's root", func(context.Context) (bool, string, error) {
		m := nfsMountsUnderKubelet(t)
		return m == "", "still mounted:\n" + m, nil
	})
}

func dumpPluginLogs(ctx context.Context) {
	pods, err := env.Cluster.Client.CoreV1().Pods(kubeenv.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		out, err := env.PodLog(ctx, p, "paddock")
		if err != nil {
			out = err.Error()
		}
		lines := strings.Split(out, "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Printf("---- %s (last lines) ----\n%s\n", p.Name, strings.Join(lines, "\n"))
	}
}
