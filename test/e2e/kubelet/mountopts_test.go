//go:build e2e

package kubelet

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// classWith creates a Delete class on the tier's export with the given mountOptions.
func classWith(t *testing.T, prefix string, mountOptions ...string) *storagev1.StorageClass {
	t.Helper()
	p := map[string]string{"server": kubeenv.NFSServer, "share": export, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}
	reclaim := v1.PersistentVolumeReclaimDelete
	return env.NewStorageClass(t, prefix, &storagev1.StorageClass{Parameters: p, ReclaimPolicy: &reclaim, MountOptions: mountOptions})
}

// controllerPID is a controller container's process as the node sees it.
func controllerPID(t *testing.T) string {
	t.Helper()
	pid := strings.TrimSpace(env.ShT(t, `for p in /proc/[0-9]*; do if tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q -- '--mode=controller'; then echo ${p#/proc/}; break; fi; done`))
	if pid == "" {
		t.Fatal("no controller process on the node")
	}
	return pid
}

// TestNFSv3WithoutRPCBindInThePod: why the controller mounts with nolock. In the controller pod's own
// network and mount namespaces (no rpcbind there, as in any pod without hostNetwork), an NFSv3 mount
// with locking fails (mount.nfs needs rpc.statd, which needs a local rpcbind); the same mount with
// nolock, as the controller makes it, succeeds.
func TestNFSv3WithoutRPCBindInThePod(t *testing.T) {
	pid := controllerPID(t)
	probe := func(opts string) string {
		// -r -w: the container's root (runc chroots it, NoPivotRoot), so its own mount and start-statd run.
		return env.ShT(t, fmt.Sprintf(`nsenter -t %s -m -n -r -w -- sh -c 'd=/var/lib/paddock/probe-$$; mkdir -p $d && if mount -t nfs -o %s %s:%s $d 2>&1; then echo MOUNTED; umount $d 2>&1 || umount -l $d; fi; rmdir $d; true'`,
			pid, opts, kubeenv.NFSServer, export))
	}
	locked := probe("nfsvers=3")
	if strings.Contains(locked, "MOUNTED") || !strings.Contains(locked, "statd") {
		t.Errorf("an NFSv3 mount with locking in the controller pod: %q; want a failure naming rpc.statd", locked)
	}
	if out := probe("nfsvers=3,nolock"); !strings.Contains(out, "MOUNTED") {
		t.Errorf("an NFSv3 mount with nolock in the controller pod: %q; want it mounted", out)
	}
	t.Logf("in the controller pod, nfsvers=3 with locking: %s", strings.TrimSpace(locked))
}

// TestClassMountOptions: a class with nfsvers=3 and one with nfsvers=4.1 on the same export provision,
// serve pods (the node mounts each with its class's version) and delete through the controller pod,
// which has no rpcbind. A class with an option no CSI mount can honour, and one with an option the
// kernel refuses, get a ProvisioningFailed event naming it and leave nothing on the server.
func TestClassMountOptions(t *testing.T) {
	ns := env.NewNamespace(t, "mountopts")
	for _, c := range []struct {
		name string
		opts []string
		vers string
	}{
		{"v3", []string{"nfsvers=3", "hard"}, "vers=3"},
		{"v41", []string{"nfsvers=4.1", "noatime"}, "vers=4.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc := classWith(t, "mountopts-"+c.name, c.opts...)
			createClaim(t, ns, c.name, sc.Name, v1.ReadWriteMany)
			pv, dir := boundDir(t, ns, c.name)
			startPod(t, ns, c.name+"-pod", c.name, "echo "+c.name+" > /data/file && sync && sleep 3600", podOpts{})
			waitPod(t, ns, c.name+"-pod", v1.PodRunning)
			if got := strings.TrimSpace(env.ShT(t, "cat "+server(dir)+"/file")); got != c.name {
				t.Errorf("server has %q in the volume", got)
			}
			var line string
			for _, l := range strings.Split(nfsMountsUnderKubelet(t), "\n") {
				if strings.Contains(l, dir) {
					line = l
				}
			}
			if !strings.Contains(line, c.vers+",") {
				t.Errorf("the node's mount of %s is %q, want %s", dir, line, c.vers)
			}
			deletePod(t, ns, c.name+"-pod", podTimeout)
			env.DeleteClaim(t, ns, c.name)
			env.WaitPVGone(t, pv.Name)
			if out := strings.TrimSpace(env.ShT(t, "test -e "+server(dir)+" && echo present || echo absent")); out != "absent" {
				t.Errorf("%s still on the server after the claim was deleted", dir)
			}
		})
	}

	for _, c := range []struct {
		name, mention string
		opts          []string
	}{
		{"refused", `option "bg" is refused`, []string{"nfsvers=4.1", "bg"}},
		{"kernel-refused", "mounting export", []string{"nfsvers=4.1", "proto=bogus"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc := classWith(t, "mountopts-"+c.name, c.opts...)
			createClaim(t, ns, c.name, sc.Name, v1.ReadWriteMany)
			var events string
			kubeenv.WaitT(t, 2*time.Minute, "a ProvisioningFailed event naming the option", func(ctx context.Context) (bool, string, error) {
				events = env.ClaimEvents(ctx, ns, c.name)
				return strings.Contains(events, "ProvisioningFailed") && strings.Contains(events, c.mention), events, nil
			})
			t.Logf("claim events: %s", events)
			if out := strings.TrimSpace(env.ShT(t, "test -e "+server(ns+"-"+c.name)+" && echo present || echo absent")); out != "absent" {
				t.Errorf("a directory was made on the server for the refused class")
			}
			env.DeleteClaim(t, ns, c.name)
		})
	}
}
