//go:build e2e

package kubelet

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// TestReclaimFollowsTheClass: a pod writes into a claim, the pod and then the claim are deleted, and
// the volume's directory on the server is what the class's reclaim policy says: gone (Delete), kept
// with its data (Retain), or emptied and handed to a second claim whose pod sees it empty (Recycle).
func TestReclaimFollowsTheClass(t *testing.T) {
	ns := env.NewNamespace(t, "reclaim")
	cases := []struct {
		name    string
		reclaim v1.PersistentVolumeReclaimPolicy
		params  map[string]string
	}{
		{"delete", v1.PersistentVolumeReclaimDelete, nil},
		{"retain", v1.PersistentVolumeReclaimRetain, nil},
		// Kubernetes refuses Recycle on a StorageClass; Paddock's class parameter gives the PV it.
		{"recycle", v1.PersistentVolumeReclaimRetain, map[string]string{"reclaimPolicy": "Recycle"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := storageClass(t, "reclaim-"+c.name, c.reclaim, c.params)
			createClaim(t, ns, c.name, sc.Name, v1.ReadWriteOnce)
			pv, dir := boundDir(t, ns, c.name)
			if phase, log := runPod(t, ns, c.name+"-writer", c.name, "echo kept > /data/file && sync", podOpts{}); phase != v1.PodSucceeded {
				t.Fatalf("writer: %s %q", phase, log)
			}
			deletePod(t, ns, c.name+"-writer", podTimeout)
			if got := strings.TrimSpace(env.ShT(t, "cat "+server(dir)+"/file")); got != "kept" {
				t.Fatalf("server has %q in the volume before reclaim", got)
			}
			env.DeleteClaim(t, ns, c.name)
			switch c.name {
			case "delete":
				env.WaitPVGone(t, pv.Name)
				if out := env.ShT(t, "test -e "+server(dir)+" && echo present || echo absent"); strings.TrimSpace(out) != "absent" {
					t.Errorf("volume directory %s still on the server after Delete", dir)
				}
			case "retain":
				env.WaitPV(t, pv.Name, v1.VolumeReleased)
				if got := strings.TrimSpace(env.ShT(t, "cat "+server(dir)+"/file")); got != "kept" {
					t.Errorf("Retain: server has %q, want the data kept", got)
				}
				ctx := kubeenv.Context(t, time.Minute)
				_ = env.Cluster.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
			case "recycle":
				env.WaitPV(t, pv.Name, v1.VolumeAvailable)
				if out := strings.TrimSpace(env.ShT(t, "ls -A "+server(dir))); out != "" {
					t.Errorf("Recycle: the directory on the server still holds %q", out)
				}
				claim2 := c.name + "-again"
				createClaimOf(t, ns, claim2, sc.Name, v1.ReadWriteOnce, pv.Name)
				if _, pv2 := env.WaitBound(t, ns, claim2); pv2.Name != pv.Name {
					t.Fatalf("second claim bound %s, want the recycled %s", pv2.Name, pv.Name)
				}
				phase, log := runPod(t, ns, c.name+"-reader", claim2, "ls -A /data; echo END", podOpts{})
				if phase != v1.PodSucceeded || strings.TrimSpace(log) != "END" {
					t.Errorf("pod on the recycled volume: %s, log %q; want an empty directory", phase, log)
				}
				deletePod(t, ns, c.name+"-reader", podTimeout)
				env.DeleteClaim(t, ns, claim2)
				ctx := kubeenv.Context(t, time.Minute)
				env.WaitPV(t, pv.Name, v1.VolumeAvailable)
				_ = env.Cluster.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
			}
		})
	}
}
