//go:build cluster

// Run with: go test -tags cluster ./test/cluster/
// The first run builds the binaries (~10 min cold, over go test's default
// 10 min timeout): run test/cluster/build.sh first, or pass -timeout 30m.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// poll calls cond every 100 ms until it returns true or the deadline passes;
// last describes the state seen, for the failure message.
func poll(t *testing.T, ctx context.Context, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached within %s; last state: %s", what, d, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t0 := time.Now()
	c, err := Start(ctx, Options{Dir: dir, Scheduler: true, ExtraSANs: []string{"10.0.2.2", "paddock.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane ready in %s at %s (binaries %s)", time.Since(t0).Round(time.Millisecond), c.URL, c.BinDir)
	t.Cleanup(func() { _ = c.Stop() })

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "paddock-test"}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("StaticPVBinds", func(t *testing.T) {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "static-nfs"},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "",
				PersistentVolumeSource: corev1.PersistentVolumeSource{
					NFS: &corev1.NFSVolumeSource{Server: "192.0.2.10", Path: "/export/static"},
				},
			},
		}
		if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "claim", Namespace: ns.Name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
				StorageClassName: ptr.To(""), // no dynamic provisioning: only static PVs match
				Resources: corev1.VolumeResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("500Mi")},
				},
			},
		}
		if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns.Name).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		poll(t, ctx, 30*time.Second, "PV and PVC Bound", func() (bool, string) {
			gotPVC, err := c.Client.CoreV1().PersistentVolumeClaims(ns.Name).Get(ctx, pvc.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			gotPV, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			state := "pvc " + string(gotPVC.Status.Phase) + " volumeName=" + gotPVC.Spec.VolumeName + ", pv " + string(gotPV.Status.Phase)
			ok := gotPVC.Status.Phase == corev1.ClaimBound && gotPVC.Spec.VolumeName == pv.Name &&
				gotPV.Status.Phase == corev1.VolumeBound && gotPV.Spec.ClaimRef != nil &&
				gotPV.Spec.ClaimRef.Namespace == ns.Name && gotPV.Spec.ClaimRef.Name == pvc.Name
			return ok, state
		})
		t.Logf("bound in %s", time.Since(t1).Round(time.Millisecond))
	})

	t.Run("ServiceAccountKubeconfigHasExactlyItsRBAC", func(t *testing.T) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns.Name}}
		if _, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "cm-getter", Namespace: ns.Name},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
		}
		if _, err := c.Client.RbacV1().Roles(ns.Name).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "reader-cm-getter", Namespace: ns.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns.Name}},
		}
		if _, err := c.Client.RbacV1().RoleBindings(ns.Name).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: ns.Name}, Data: map[string]string{"k": "v"}}
		if _, err := c.Client.CoreV1().ConfigMaps(ns.Name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kc, err := c.ServiceAccountKubeconfig(ctx, ns.Name, sa.Name, "")
		if err != nil {
			t.Fatal(err)
		}
		// Exercise the file itself, with the real kubectl, as a component
		// given that kubeconfig would.
		kubectl := func(args ...string) (string, error) {
			out, err := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"),
				append([]string{"--kubeconfig=" + kc, "--namespace=" + ns.Name}, args...)...).CombinedOutput()
			return string(out), err
		}
		out, err := kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		if err != nil || out != "system:serviceaccount:paddock-test:reader" {
			t.Fatalf("whoami: %q, %v", out, err)
		}
		out, err = kubectl("get", "configmap", cm.Name, "-o", "jsonpath={.data.k}")
		if err != nil || out != "v" {
			t.Fatalf("get configmap with the SA kubeconfig: %q, %v", out, err)
		}
		out, err = kubectl("get", "secrets")
		if err == nil {
			t.Fatalf("list secrets with the SA kubeconfig succeeded: %s", out)
		}
		if !strings.Contains(out, "Forbidden") || !strings.Contains(out, `cannot list resource "secrets"`) {
			t.Fatalf("list secrets: want Forbidden, got %v: %s", err, out)
		}
		// Listing configmaps is not granted either: only get.
		out, err = kubectl("get", "configmaps")
		if err == nil || !strings.Contains(out, "Forbidden") {
			t.Fatalf("list configmaps: want Forbidden, got %v: %s", err, out)
		}
	})

	t.Run("PodIsScheduledToFakeNode", func(t *testing.T) {
		if err := c.AddFakeNode(ctx, "fake-node-1", map[string]string{"paddock.dev/pool": "test"}); err != nil {
			t.Fatal(err)
		}
		// The ServiceAccount admission plugin rejects pods until the
		// controller-manager has created the namespace's default SA.
		poll(t, ctx, 30*time.Second, "default ServiceAccount", func() (bool, string) {
			_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, ""
		})
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: ns.Name},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"paddock.dev/pool": "test"},
				Containers:   []corev1.Container{{Name: "c", Image: "registry.invalid/never-pulled:1"}},
			},
		}
		if _, err := c.Client.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		poll(t, ctx, 30*time.Second, "pod scheduled", func() (bool, string) {
			p, err := c.Client.CoreV1().Pods(ns.Name).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled {
					return p.Spec.NodeName == "fake-node-1" && cond.Status == corev1.ConditionTrue,
						"nodeName=" + p.Spec.NodeName + " " + string(cond.Status) + " " + cond.Message
				}
			}
			return false, "nodeName=" + p.Spec.NodeName + ", no PodScheduled condition"
		})
		t.Logf("scheduled in %s", time.Since(t1).Round(time.Millisecond))
		node, err := c.Client.CoreV1().Nodes().Get(ctx, "fake-node-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(node.Spec.Taints) != 0 {
			t.Fatalf("fake node got taints %v", node.Spec.Taints)
		}
	})

	t.Run("Kubectl", func(t *testing.T) {
		out, err := c.Kubectl(ctx, "get", "pv", "static-nfs", "-o", "jsonpath={.spec.nfs.server}")
		if err != nil || out != "192.0.2.10" {
			t.Fatalf("kubectl get pv: %q, %v", out, err)
		}
		out, err = c.Kubectl(ctx, "version", "-o", "json")
		if err != nil || strings.Count(out, `"gitVersion": "v1.37.1"`) != 2 {
			t.Fatalf("kubectl version should report v1.37.1 for client and server: %v\n%s", err, out)
		}
	})

	t.Run("ExtraSANsInServingCert", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.CAData) {
			t.Fatal("bad CA PEM")
		}
		// Dial loopback but verify as a QEMU guest (10.0.2.2) or a DNS
		// name would: the cert must carry both SANs.
		for _, name := range []string{"10.0.2.2", "paddock.test", "localhost", "127.0.0.1"} {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port), &tls.Config{RootCAs: pool, ServerName: name})
			if err != nil {
				t.Fatalf("verify serving cert as %s: %v", name, err)
			}
			conn.Close()
		}
		if _, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port), &tls.Config{RootCAs: pool, ServerName: "10.9.9.9"}); err == nil {
			t.Fatal("serving cert verified for an address it should not name")
		}
	})

	t.Run("StopIsIdempotentAndStopsEverything", func(t *testing.T) {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		for _, p := range c.procs {
			if !p.exited() {
				t.Errorf("%s still running after Stop", p.name)
			}
		}
		client := insecureClient()
		client.Timeout = 2 * time.Second
		if _, err := client.Get(c.URL + "/readyz"); err == nil {
			t.Fatal("apiserver still answers after Stop")
		}
		if _, err := os.Stat(filepath.Join(dir, "kube-apiserver.log")); err != nil {
			t.Fatalf("a caller's Dir must be kept, with the logs: %v", err)
		}
	})
}

// A component that dies at startup must make Start fail with its log tail, and
// leave nothing running.
func TestStartFailureReportsLogTail(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho 'etcd: boom: cannot start' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(bin, "etcd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Dir: t.TempDir(), BinDir: bin})
	if err == nil {
		c.Stop()
		t.Fatal("Start succeeded with a failing etcd")
	}
	if !strings.Contains(err.Error(), "boom: cannot start") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error lacks the log tail or exit status: %v", err)
	}
	t.Logf("Start failed as expected: %v", err)
}

// Two clusters at once must not collide (ports, dirs): a VM suite and a unit
// suite may both run one.
func TestTwoClustersAtOnce(t *testing.T) {
	ctx := context.Background()
	var cs []*Cluster
	for range 2 {
		c, err := Start(ctx, Options{}) // default temp Dir, removed by Stop
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		t.Cleanup(func() { _ = c.Stop() })
	}
	if cs[0].Port == cs[1].Port || cs[0].EtcdURL == cs[1].EtcdURL {
		t.Fatalf("clusters share ports: %d/%d, %s/%s", cs[0].Port, cs[1].Port, cs[0].EtcdURL, cs[1].EtcdURL)
	}
	// Each apiserver sees its own etcd: a namespace made in one is absent from the other.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-first"}}
	if _, err := cs[0].Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].Client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("second cluster: want NotFound for the first cluster's namespace, got %v", err)
	}
	dirs := []string{cs[0].Dir, cs[1].Dir}
	for _, c := range cs {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temp state dir %s not removed by Stop: %v", d, err)
		}
	}
}
