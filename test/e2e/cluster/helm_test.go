//go:build e2e

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// The Helm release sits beside the base (driver nfs.paddock.dev in namespace paddock, which the tier
// installs with kubectl and the other tests use): its own release name, namespace and driver name,
// and its own node plugin port, so no object, Lease, host path or host port is shared; that is also
// how docs/install.md says to run two installations in one cluster.
const (
	helmRelease   = "paddock-e2e"
	helmNamespace = "paddock-helm"
	helmDriver    = "helm.paddock.dev"
	helmCtrl      = "helm-controller"
	helmSock      = kubeenv.RunDir + "/helm-controller.sock"
	helmWork      = "/var/lib/paddock-helm"
	helmPrefix    = helmRelease // the chart's object name prefix for this release name
)

// helmResult is what deploy/helm/test/cmd/helmrelease prints.
type helmResult struct {
	Name, Namespace, Status, Manifest, Info string
	Revision                                int
}

// helmRun runs an install, upgrade or uninstall of deploy/helm/paddock with Helm's own library
// (helm.sh/helm/v3's action package, in the helmrelease command of the chart's test module, which
// keeps Helm out of the driver's go.mod) against the control plane, as an admin would with helm.
func helmRun(t *testing.T, bin, op, values string) helmResult {
	t.Helper()
	args := []string{"-kubeconfig", env.Cluster.Kubeconfig, "-namespace", helmNamespace, "-release", helmRelease,
		"-chart", filepath.Join(env.Repo, "deploy", "helm", "paddock")}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	cmd := exec.CommandContext(kubeenv.Context(t, 3*time.Minute), bin, append(args, op)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", op, err, stderr.String())
	}
	var r helmResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helm %s: %v: %s", op, err, out)
	}
	t.Logf("helm %s: release %s revision %d %s", op, r.Name, r.Revision, r.Status)
	return r
}

// helmValues: one controller replica at -v=2 and one class; the upgrade asks for two replicas at
// -v=4 and a second class. The node plugin gets its own port: the base's node plugin has 9810.
const helmValues = `
driverName: ` + helmDriver + `
logLevel: 2
controller: {replicas: 1}
node: {metrics: {port: 9820}}
storageClasses:
  - name: helm-delete
    server: "` + kubeenv.Server + `"
    share: ` + kubeenv.ExportA + `
    mountOptions: [nfsvers=4.1]
`

const helmValuesUpgraded = `
driverName: ` + helmDriver + `
logLevel: 4
controller: {replicas: 2}
node: {metrics: {port: 9820}}
storageClasses:
  - name: helm-delete
    server: "` + kubeenv.Server + `"
    share: ` + kubeenv.ExportA + `
    mountOptions: [nfsvers=4.1]
  - name: helm-retain
    server: "` + kubeenv.Server + `"
    share: ` + kubeenv.ExportA + `
    subDir: ${pvc.metadata.namespace}-${pvc.metadata.name}
    reclaimPolicy: Retain
`

// TestHelmInstallUpgradeUninstall installs the chart with Helm's library into the control plane,
// runs a controller from what it installed, upgrades it to new values, uninstalls it, and checks each
// step in the API and on the export: what the chart makes works (the controller, with the Deployment's
// arguments and the release's ServiceAccount token, provisions and deletes through the release's
// classes), an upgrade changes what its values say, and an uninstall removes the release's objects and
// leaves the volumes, their data and the base's installation alone.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	ctx := kubeenv.Context(t, 15*time.Minute)
	c := env.Cluster.Client
	bin := filepath.Join(t.TempDir(), "helmrelease")
	// -race as make test-unit runs the chart's module: this build then reuses the Helm packages that
	// tier compiled instead of compiling Helm's tree a second time (minutes on a cold cache).
	build := exec.CommandContext(ctx, "go", "-C", filepath.Join(env.Repo, "deploy", "helm", "test"), "build", "-race", "-o", bin, "./cmd/helmrelease")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build helmrelease: %v\n%s", err, out)
	}
	// The base's objects, which the release must leave as they are.
	baseRole, err := c.RbacV1().ClusterRoles().Get(ctx, "paddock-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	baseDriver, err := c.StorageV1().CSIDrivers().Get(ctx, kubeenv.Driver, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupHelm(t, bin) })

	// Install.
	r := helmRun(t, bin, "install", helmValues)
	if r.Revision != 1 || r.Status != "deployed" {
		t.Fatalf("install: revision %d, status %s", r.Revision, r.Status)
	}
	dep, err := c.AppsV1().Deployments(helmNamespace).Get(ctx, helmPrefix+"-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the release's controller Deployment: %v", err)
	}
	ctrlArgs := paddockArgs(t, dep.Spec.Template.Spec.Containers)
	if *dep.Spec.Replicas != 1 || !slices.Contains(ctrlArgs, "-v=2") || !slices.Contains(ctrlArgs, "--driver-name="+helmDriver) {
		t.Errorf("installed Deployment: replicas %d, args %v", *dep.Spec.Replicas, ctrlArgs)
	}
	ds, err := c.AppsV1().DaemonSets(helmNamespace).Get(ctx, helmPrefix+"-node", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the release's node DaemonSet: %v", err)
	}
	if args := paddockArgs(t, ds.Spec.Template.Spec.Containers); !slices.Contains(args, "--http-endpoint=127.0.0.1:9820") ||
		!slices.Contains(args, "--kubelet-registration-path=/var/lib/kubelet/plugins/"+helmDriver+"/csi.sock") {
		t.Errorf("installed DaemonSet args %v", args)
	}
	if d, err := c.StorageV1().CSIDrivers().Get(ctx, helmDriver, metav1.GetOptions{}); err != nil || d.Spec.AttachRequired == nil || *d.Spec.AttachRequired {
		t.Errorf("CSIDriver %s: %v %+v", helmDriver, err, d)
	}
	if sc, err := c.StorageV1().StorageClasses().Get(ctx, "helm-delete", metav1.GetOptions{}); err != nil || sc.Provisioner != helmDriver ||
		sc.Parameters["share"] != kubeenv.ExportA || !slices.Equal(sc.MountOptions, []string{"nfsvers=4.1"}) {
		t.Errorf("StorageClass helm-delete: %v %+v", err, sc)
	}

	// What it installed works: a controller with the Deployment's arguments and its ServiceAccount's
	// token (so the chart's RBAC) provisions a claim of the chart's class and deletes it.
	startHelmController(t, ctrlArgs)
	ns := env.NewNamespace(t, "helm")
	createClaim(t, ns, "a", claimOpts{class: ptr.To("helm-delete")})
	_, pvA := env.WaitBound(t, ns, "a")
	if pvA.Spec.CSI == nil || pvA.Spec.CSI.Driver != helmDriver || !exists(t, kubeenv.ExportA+"/"+pvA.Name) {
		t.Fatalf("claim a: PV %s of driver %v, directory on the export: %v", pvA.Name, pvA.Spec.CSI, exists(t, kubeenv.ExportA+"/"+pvA.Name))
	}

	// Upgrade: two replicas, -v=4, a second class; the first class is unchanged.
	r = helmRun(t, bin, "upgrade", helmValuesUpgraded)
	if r.Revision != 2 || r.Status != "deployed" {
		t.Fatalf("upgrade: revision %d, status %s", r.Revision, r.Status)
	}
	dep, err = c.AppsV1().Deployments(helmNamespace).Get(ctx, helmPrefix+"-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctrlArgs = paddockArgs(t, dep.Spec.Template.Spec.Containers)
	if *dep.Spec.Replicas != 2 || !slices.Contains(ctrlArgs, "-v=4") || slices.Contains(ctrlArgs, "-v=2") {
		t.Errorf("upgraded Deployment: replicas %d, args %v; want 2 replicas, -v=4", *dep.Spec.Replicas, ctrlArgs)
	}
	if ds, err := c.AppsV1().DaemonSets(helmNamespace).Get(ctx, helmPrefix+"-node", metav1.GetOptions{}); err != nil ||
		!slices.Contains(paddockArgs(t, ds.Spec.Template.Spec.Containers), "-v=4") {
		t.Errorf("upgraded DaemonSet: %v, args %v", err, ds.Spec.Template.Spec.Containers)
	}
	retain, err := c.StorageV1().StorageClasses().Get(ctx, "helm-retain", metav1.GetOptions{})
	if err != nil || *retain.ReclaimPolicy != v1.PersistentVolumeReclaimRetain || retain.Provisioner != helmDriver {
		t.Fatalf("StorageClass helm-retain after the upgrade: %v %+v", err, retain)
	}
	if n := releaseSecrets(t); n != 2 {
		t.Errorf("%d release records after the upgrade, want 2 (revisions 1 and 2)", n)
	}

	// The upgraded controller (its new arguments) serves the new class, and deletes through the old.
	restartHelmController(t, ctrlArgs)
	createClaim(t, ns, "b", claimOpts{class: ptr.To("helm-retain")})
	_, pvB := env.WaitBound(t, ns, "b")
	dirB := kubeenv.ExportA + "/" + ns + "-b"
	writeFile(t, dirB+"/data.txt", "kept")
	env.DeleteClaim(t, ns, "a")
	env.WaitPVGone(t, pvA.Name)
	waitGuest(t, "claim a's directory gone from the export", func() (bool, string) {
		return !exists(t, kubeenv.ExportA+"/"+pvA.Name), "still there"
	})
	_ = env.StopPaddock(ctx, helmCtrl, syscall.SIGTERM) // its RBAC goes with the release

	// Uninstall.
	r = helmRun(t, bin, "uninstall", "")
	t.Logf("helm uninstall: %s", r.Info)
	gone := map[string]func(context.Context) error{
		"Deployment":                  getErr(c.AppsV1().Deployments(helmNamespace).Get, helmPrefix+"-controller"),
		"DaemonSet":                   getErr(c.AppsV1().DaemonSets(helmNamespace).Get, helmPrefix+"-node"),
		"controller ServiceAccount":   getErr(c.CoreV1().ServiceAccounts(helmNamespace).Get, helmPrefix+"-controller"),
		"node ServiceAccount":         getErr(c.CoreV1().ServiceAccounts(helmNamespace).Get, helmPrefix+"-node"),
		"ClusterRole":                 getErr(c.RbacV1().ClusterRoles().Get, helmPrefix+"-controller"),
		"ClusterRoleBinding":          getErr(c.RbacV1().ClusterRoleBindings().Get, helmPrefix+"-controller"),
		"leader-election Role":        getErr(c.RbacV1().Roles(helmNamespace).Get, helmPrefix+"-controller-leader-election"),
		"leader-election RoleBinding": getErr(c.RbacV1().RoleBindings(helmNamespace).Get, helmPrefix+"-controller-leader-election"),
		"metrics Service":             getErr(c.CoreV1().Services(helmNamespace).Get, helmPrefix+"-controller-metrics"),
		"PodDisruptionBudget":         getErr(c.PolicyV1().PodDisruptionBudgets(helmNamespace).Get, helmPrefix+"-controller"),
		"CSIDriver":                   getErr(c.StorageV1().CSIDrivers().Get, helmDriver),
		"StorageClass helm-delete":    getErr(c.StorageV1().StorageClasses().Get, "helm-delete"),
		"StorageClass helm-retain":    getErr(c.StorageV1().StorageClasses().Get, "helm-retain"),
	}
	for what, get := range gone {
		kubeenv.WaitGone(t, time.Minute, what+" deleted by helm uninstall", func(ctx context.Context) (string, error) {
			return "present", get(ctx)
		})
	}
	if n := releaseSecrets(t); n != 0 {
		t.Errorf("%d release records left after uninstall", n)
	}
	// What stays: the namespace, the Lease the controller made, the Retain claim and its PV, the
	// volume's directory with its data and the export's .paddock area; and the base untouched.
	if _, err := c.CoreV1().Namespaces().Get(ctx, helmNamespace, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace %s after uninstall: %v (Helm leaves namespaces)", helmNamespace, err)
	}
	if leases, err := c.CoordinationV1().Leases(helmNamespace).List(ctx, metav1.ListOptions{}); err != nil || len(leases.Items) == 0 {
		t.Errorf("the controller's Lease in %s after uninstall: %v, %d leases", helmNamespace, err, len(leases.Items))
	}
	if pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "b", metav1.GetOptions{}); err != nil || pvc.Status.Phase != v1.ClaimBound {
		t.Errorf("claim b after uninstall: %v %+v", err, pvc)
	}
	if pv := getPV(t, pvB.Name); pv == nil || pv.Status.Phase != v1.VolumeBound {
		t.Errorf("PV %s after uninstall: %+v", pvB.Name, pv)
	}
	if got := readFile(t, dirB+"/data.txt"); got != "kept" {
		t.Errorf("claim b's data after uninstall: %q", got)
	}
	if !exists(t, kubeenv.ExportA+"/.paddock/claims") {
		t.Errorf("the export's .paddock area is gone")
	}
	if role, err := c.RbacV1().ClusterRoles().Get(ctx, "paddock-controller", metav1.GetOptions{}); err != nil || role.ResourceVersion != baseRole.ResourceVersion {
		t.Errorf("the base's ClusterRole paddock-controller changed: %v", err)
	}
	if d, err := c.StorageV1().CSIDrivers().Get(ctx, kubeenv.Driver, metav1.GetOptions{}); err != nil || d.UID != baseDriver.UID {
		t.Errorf("the base's CSIDriver %s changed: %v", kubeenv.Driver, err)
	}

	// Tidy up as an admin who keeps no data of the uninstalled driver would.
	env.DeleteClaim(t, ns, "b")
	if err := c.CoreV1().PersistentVolumes().Delete(ctx, pvB.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete PV %s: %v", pvB.Name, err)
	}
	env.WaitPVGone(t, pvB.Name)
	forgetVolume(t, kubeenv.ExportA, ns+"-b", pvB.Name)
}

// paddockArgs are the arguments of the paddock container among cs.
func paddockArgs(t *testing.T, cs []v1.Container) []string {
	t.Helper()
	for _, c := range cs {
		if c.Name == "paddock" {
			return c.Args
		}
	}
	t.Fatalf("no paddock container in %v", cs)
	return nil
}

// startHelmController runs the release's controller in the guest as its pod would: the Deployment's
// arguments, but its own socket and work dir (the pod's emptyDirs), no metrics listener (the base's
// controller shares the guest), the API server through a token of the release's ServiceAccount, and
// the Lease in the release's namespace (the pod's POD_NAMESPACE).
func startHelmController(t *testing.T, deployArgs []string) {
	t.Helper()
	var args []string
	for _, a := range deployArgs {
		switch {
		case strings.HasPrefix(a, "--endpoint="), strings.HasPrefix(a, "--work-dir="), strings.HasPrefix(a, "--http-endpoint="):
		default:
			args = append(args, a)
		}
	}
	kubeconfig, err := env.ServiceAccountKubeconfig(kubeenv.Context(t, time.Minute), helmNamespace, helmPrefix+"-controller")
	if err != nil {
		t.Fatal(err)
	}
	args = append(args, "--endpoint=unix://"+helmSock, "--work-dir="+helmWork, "--kubeconfig="+kubeconfig,
		"--leader-elect-namespace="+helmNamespace)
	if err := env.StartPaddock(kubeenv.Context(t, 2*time.Minute), helmCtrl, helmSock, args...); err != nil {
		t.Fatalf("the release's controller: %v", err)
	}
	t.Logf("the release's controller runs in the guest: paddock %s", strings.Join(args, " "))
}

func restartHelmController(t *testing.T, deployArgs []string) {
	t.Helper()
	if err := env.StopPaddock(kubeenv.Context(t, time.Minute), helmCtrl, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	startHelmController(t, deployArgs)
}

// releaseSecrets counts Helm's release records (Secrets of the release in its namespace).
func releaseSecrets(t *testing.T) int {
	t.Helper()
	l, err := env.Cluster.Client.CoreV1().Secrets(helmNamespace).List(kubeenv.Context(t, time.Minute),
		metav1.ListOptions{LabelSelector: "owner=helm,name=" + helmRelease})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// getErr turns a client Get into a function that returns only its error.
func getErr[T any](get func(context.Context, string, metav1.GetOptions) (T, error), name string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := get(ctx, name, metav1.GetOptions{})
		return err
	}
}

// cleanupHelm removes what a failed run may leave: the guest controller, the release, the PVs of its
// driver, and the release's namespace (with the release's pods, which no kubelet ever ran on the
// tier's fake node: deleted without a grace period).
func cleanupHelm(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Cluster.Client
	_ = env.StopPaddock(ctx, helmCtrl, syscall.SIGTERM)
	if l, err := c.CoreV1().Secrets(helmNamespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + helmRelease}); err == nil && len(l.Items) > 0 {
		out, err := exec.CommandContext(ctx, bin, "-kubeconfig", env.Cluster.Kubeconfig, "-namespace", helmNamespace,
			"-release", helmRelease, "uninstall").CombinedOutput()
		t.Logf("cleanup: helm uninstall: %v %s", err, out)
	}
	if pvs, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, pv := range pvs.Items {
			if pv.Spec.CSI != nil && pv.Spec.CSI.Driver == helmDriver {
				_, _ = c.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
				_ = c.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
			}
		}
	}
	_ = c.CoreV1().Pods(helmNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
	if err := c.CoreV1().Namespaces().Delete(ctx, helmNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Logf("cleanup: delete namespace %s: %v", helmNamespace, err)
	}
}

// forgetVolume removes a volume Paddock no longer manages from the export, as an admin would after
// an uninstall: its directory, and its claim and name records in .paddock.
func forgetVolume(t *testing.T, export, subDir, name string) {
	t.Helper()
	sum := sha256.Sum256([]byte(subDir))
	env.ShT(t, "rm -rf "+kubeenv.Quote(export+"/"+subDir)+" "+kubeenv.Quote(export+"/.paddock/claims/"+hex.EncodeToString(sum[:]))+
		" "+kubeenv.Quote(export+"/.paddock/names/"+name))
}
