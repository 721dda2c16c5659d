//go:build e2e

package kubelet

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// podTimeout bounds a pod's start, run and deletion: generous (the node is emulated and shares two
// host cores with the control plane) but bounded; a timeout reports what was last seen.
const podTimeout = 4 * time.Minute

// export is the export the tier's classes use, as the NFS server sees it.
const export = kubeenv.ExportA

// storageClass creates a class on the guest's NFS server as pods reach it (kubeenv.NFSServer) with
// the volume directory named after the claim; params add to or override those.
func storageClass(t *testing.T, prefix string, reclaim v1.PersistentVolumeReclaimPolicy, params map[string]string) *storagev1.StorageClass {
	t.Helper()
	p := map[string]string{"server": kubeenv.NFSServer, "share": export, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}
	maps.Copy(p, params)
	return env.NewStorageClass(t, prefix, &storagev1.StorageClass{Parameters: p, ReclaimPolicy: &reclaim, MountOptions: []string{"nfsvers=4.2"}})
}

func createClaim(t *testing.T, ns, name, class string, mode v1.PersistentVolumeAccessMode) {
	t.Helper()
	createClaimOf(t, ns, name, class, mode, "")
}

// createClaimOf creates a claim, for the PV pvName if it is not empty.
func createClaimOf(t *testing.T, ns, name, class string, mode v1.PersistentVolumeAccessMode, pvName string) {
	t.Helper()
	pvc := kubeenv.Claim(ns, name, class, "1Gi", mode)
	pvc.Spec.VolumeName = pvName
	env.CreateClaim(t, pvc)
}

// boundDir waits for the claim to be Bound and returns its PV and the PV's volume directory (relative
// to the export).
func boundDir(t *testing.T, ns, name string) (*v1.PersistentVolume, string) {
	t.Helper()
	_, pv := env.WaitBound(t, ns, name)
	return pv, volumeDir(t, pv)
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
			TerminationGracePeriodSeconds: ptr.To(int64(2)),
			SecurityContext:               o.sc,
			AutomountServiceAccountToken:  ptr.To(false),
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
	if _, err := env.Cluster.Client.CoreV1().Pods(ns).Create(kubeenv.Context(t, time.Minute), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
}

// waitPod waits for the pod to reach one of phases and returns it.
func waitPod(t *testing.T, ns, name string, phases ...v1.PodPhase) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	kubeenv.WaitT(t, podTimeout, fmt.Sprintf("pod %s/%s %v", ns, name, phases), func(ctx context.Context) (bool, string, error) {
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
		return false, fmt.Sprintf("phase %s; events: %s", pod.Status.Phase, env.PodEvents(ctx, ns, name)), nil
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
	out, err := env.PodLog(kubeenv.Context(t, time.Minute), pod, pod.Spec.Containers[0].Name)
	if err != nil {
		t.Fatalf("log of %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return out
}

// deletePod deletes the pod and waits until it is gone (kubelet has unmounted its volumes).
func deletePod(t *testing.T, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	pods := env.Cluster.Client.CoreV1().Pods(ns)
	if err := pods.Delete(kubeenv.Context(t, time.Minute), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
	kubeenv.WaitGone(t, timeout, "pod "+ns+"/"+name+" gone", func(ctx context.Context) (string, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("phase %s, deletion since %v; events: %s", p.Status.Phase, p.DeletionTimestamp, env.PodEvents(ctx, ns, name)), nil
	})
	return time.Since(t0)
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
	m, err := env.KubeletNFSMounts(kubeenv.Context(t, 2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitNoKubeletMounts waits until kubelet has unmounted every NFS mount under its root dir: the
// pods' (NodeUnpublishVolume, before a pod object is removed) and the staging mounts
// (NodeUnstageVolume, which kubelet calls shortly after a volume's last pod on the node is gone).
func waitNoKubeletMounts(t *testing.T) {
	t.Helper()
	kubeenv.WaitT(t, 2*time.Minute, "no NFS mount under kubelet's root", func(context.Context) (bool, string, error) {
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
