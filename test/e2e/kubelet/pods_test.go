//go:build e2e

package kubelet

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// TestRWXSharedBetweenPods: one pod writes a file into an RWX claim and stays up; a second pod on the
// same claim, mounted at the same time, reads it. The file is on the NFS server under the volume's
// directory. Deleting the pods unmounts everything kubelet had mounted for them.
func TestRWXSharedBetweenPods(t *testing.T) {
	ns := env.NewNamespace(t, "rwx")
	sc := storageClass(t, "rwx", v1.PersistentVolumeReclaimDelete, nil)
	createClaim(t, ns, "shared", sc.Name, v1.ReadWriteMany)
	_, dir := boundDir(t, ns, "shared")

	startPod(t, ns, "writer", "shared", "echo written-by-writer > /data/greeting && sync && exec sleep 3600", podOpts{})
	writer := waitPod(t, ns, "writer", v1.PodRunning)
	kubeenv.WaitT(t, time.Minute, "greeting on the server", func(ctx context.Context) (bool, string, error) {
		out, _ := env.Sh(ctx, "cat "+server(dir)+"/greeting 2>&1")
		return strings.TrimSpace(out) == "written-by-writer", "server has: " + out, nil
	})
	phase, log := runPod(t, ns, "reader", "shared", "cat /data/greeting", podOpts{})
	if phase != v1.PodSucceeded || strings.TrimSpace(log) != "written-by-writer" {
		t.Errorf("reader: phase %s, log %q; want Succeeded and the writer's line", phase, log)
	}
	if m := nfsMountsUnderKubelet(t); !strings.Contains(m, "/pods/"+string(writer.UID)+"/") {
		t.Errorf("no NFS mount of the running writer under kubelet's pods dir; NFS mounts under kubelet:\n%s", m)
	}

	deletePod(t, ns, "reader", podTimeout)
	deletePod(t, ns, "writer", podTimeout)
	waitNoKubeletMounts(t)
	// kubelet's housekeeping removes a deleted pod's directory once its volumes are unmounted.
	kubeenv.WaitT(t, 2*time.Minute, "kubelet removes the writer's pod dir", func(ctx context.Context) (bool, string, error) {
		out, err := env.Sh(ctx, "ls -d "+kubeenv.KubeletDir+"/pods/"+string(writer.UID)+" 2>/dev/null || true")
		return err == nil && strings.TrimSpace(out) == "", "still there: " + out, err
	})
}

// TestReadOnlyRefusesWrites: a readOnly claim source on an RWX claim, and a ReadOnlyMany claim, are
// both mounted read-only: the pod's write fails with EROFS and nothing reaches the server.
func TestReadOnlyRefusesWrites(t *testing.T) {
	ns := env.NewNamespace(t, "ro")
	sc := storageClass(t, "ro", v1.PersistentVolumeReclaimDelete, nil)
	cases := []struct {
		name     string
		mode     v1.PersistentVolumeAccessMode
		readOnly bool
	}{
		{"rwx-readonly-source", v1.ReadWriteMany, true},
		{"rox", v1.ReadOnlyMany, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			createClaim(t, ns, c.name, sc.Name, c.mode)
			_, dir := boundDir(t, ns, c.name)
			phase, log := runPod(t, ns, c.name, c.name,
				"if touch /data/forbidden 2>/tmp/err; then echo WROTE; exit 1; fi; cat /tmp/err; grep -q ' /data nfs[^ ]* ro[,:]' /proc/mounts && echo MOUNTED-RO", podOpts{readOnly: c.readOnly})
			if phase != v1.PodSucceeded || !strings.Contains(log, "Read-only file system") || !strings.Contains(log, "MOUNTED-RO") {
				t.Errorf("pod: phase %s, log %q; want Succeeded with EROFS (Read-only file system) and a ro mount", phase, log)
			}
			if out := env.ShT(t, "ls -A "+server(dir)); strings.TrimSpace(out) != "" {
				t.Errorf("server directory %s is not empty after a refused write: %q", dir, out)
			}
			deletePod(t, ns, c.name, podTimeout)
		})
	}
}

// TestFSGroupApplied: the CSIDriver says fsGroupPolicy File, so kubelet makes the volume's root
// group-owned by the pod's fsGroup with the setgid bit, and a non-root pod in that group can write.
// Checked on the server, where ownership is what the export really stores.
func TestFSGroupApplied(t *testing.T) {
	ns := env.NewNamespace(t, "fsgroup")
	sc := storageClass(t, "fsgroup", v1.PersistentVolumeReclaimDelete, nil)
	createClaim(t, ns, "data", sc.Name, v1.ReadWriteOnce)
	_, dir := boundDir(t, ns, "data")
	sec := &v1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)), RunAsGroup: ptr.To(int64(1000)), FSGroup: ptr.To(int64(2000))}
	phase, log := runPod(t, ns, "fsgroup", "data", "id && touch /data/by-1000 && stat -c '%u:%g' /data/by-1000", podOpts{sc: sec})
	if phase != v1.PodSucceeded {
		t.Fatalf("pod: phase %s, log %q", phase, log)
	}
	if !strings.Contains(log, "groups=") || !strings.Contains(log, "2000") {
		t.Errorf("pod's id does not show supplementary group 2000: %q", log)
	}
	root := strings.TrimSpace(env.ShT(t, "stat -c '%g %A' "+server(dir)))
	if !strings.HasPrefix(root, "2000 ") || root[len(root)-4] != 's' {
		t.Errorf("volume root on the server is %q; want group 2000 with the setgid bit (drwxrwsr-x)", root)
	}
	if f := strings.TrimSpace(env.ShT(t, "stat -c '%u:%g' "+server(dir)+"/by-1000")); f != "1000:2000" {
		t.Errorf("file written by the pod is %s on the server, want 1000:2000", f)
	}
	deletePod(t, ns, "fsgroup", podTimeout)
}
