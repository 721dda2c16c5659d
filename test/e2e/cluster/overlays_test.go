//go:build e2e

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// The overlays of deploy/overlays against the real API server: each one applied server-side with
// dryRun=All (every object validated and admitted as it would be, nothing stored), and the sidecars
// the components add run for real in the guest, with the rendered container's own arguments, the
// controller's ServiceAccount (as in the controller pod) and the component's RBAC applied for real.

const (
	// overlayFieldManager owns what these tests apply, apart from the base's kubectl apply.
	overlayFieldManager = "paddock-e2e-overlays"
	snapshotterModule   = "github.com/kubernetes-csi/external-snapshotter/v8"
)

// overlayDirs are the directories of deploy/overlays.
func overlayDirs(t *testing.T) []string {
	t.Helper()
	root := filepath.Join(env.Repo, "deploy", "overlays")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, e.Name()))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no overlays in deploy/overlays")
	}
	return dirs
}

// renderedObject is an object of a kustomize build: its YAML and what identifies it.
type renderedObject struct {
	apiVersion, kind, namespace, name string
	yaml                              []byte
}

// render builds the kustomization in dir as kubectl apply -k does (krusty, default options).
func render(t *testing.T, dir string) []renderedObject {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []renderedObject
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, renderedObject{r.GetApiVersion(), r.GetKind(), r.GetNamespace(), r.GetName(), y})
	}
	return out
}

// writeObjects writes objs as one multi-document file and returns its path.
func writeObjects(t *testing.T, objs []renderedObject) string {
	t.Helper()
	var b []byte
	for _, o := range objs {
		b = append(append(b, "---\n"...), o.yaml...)
	}
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// appliedName is how kubectl names an object in its output: kind[.group]/name, lower case.
func appliedName(o renderedObject) string {
	group, _, ok := strings.Cut(o.apiVersion, "/")
	if !ok {
		group = ""
	}
	n := strings.ToLower(o.kind)
	if group != "" {
		n += "." + group
	}
	return n + "/" + o.name
}

// dryRun applies file server-side with dryRun=All, strict field validation and the conflicts with
// the base's field manager forced (as an upgrade would), and returns kubectl's output.
func dryRun(ctx context.Context, args ...string) (string, error) {
	return env.Cluster.Kubectl(ctx, append([]string{"apply", "--server-side", "--dry-run=server", "--validate=strict",
		"--force-conflicts", "--field-manager=" + overlayFieldManager}, args...)...)
}

// Every shipped overlay, as kubectl apply -k applies it, server-side with dryRun=All: the API server
// (RBAC, CSIDriver and workloads as built in, the VolumeSnapshotClass against the snapshot CRDs this
// tier installed) accepts every object of it, and nothing is stored. A VolumeSnapshotClass with a
// deletionPolicy the CRD does not allow is refused by the same dry run, so it is not a no-op.
func TestOverlaysServerSideDryRun(t *testing.T) {
	ctx := kubeenv.Context(t, 5*time.Minute)
	for _, dir := range overlayDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := render(t, dir)
			out, err := dryRun(ctx, "-k", dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if want := appliedName(o) + " serverside-applied (server dry run)"; !strings.Contains(out, want) {
					t.Errorf("kubectl apply -k %s: no %q in its output:\n%s", dir, want, out)
				}
			}
			if n := strings.Count(out, "serverside-applied (server dry run)"); n != len(objs) {
				t.Errorf("kubectl apply -k %s applied %d objects, the build has %d:\n%s", dir, n, len(objs), out)
			}
			t.Logf("kubectl apply -k %s --server-side --dry-run=server: %d objects accepted", filepath.Base(dir), len(objs))
		})
	}

	// Nothing of it was stored: the components' objects do not exist, the controller has no sidecar.
	for _, name := range []string{"paddock-csi-snapshotter", "paddock-csi-resizer"} {
		if _, err := env.Cluster.Client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ClusterRole %s after dry runs only: %v", name, err)
		}
	}
	dep, err := env.Cluster.Client.AppsV1().Deployments(kubeenv.Namespace).Get(ctx, "paddock-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(dep.Spec.Template.Spec.Containers); n != 1 {
		t.Errorf("the controller Deployment has %d containers after dry runs only, want the base's 1", n)
	}

	// The dry run validates: the CRD's enum refuses a deletionPolicy it does not know.
	objs := render(t, filepath.Join(env.Repo, "deploy", "overlays", "snapshots"))
	for i, o := range objs {
		if o.kind == "VolumeSnapshotClass" {
			objs[i].yaml = []byte(strings.Replace(string(o.yaml), "deletionPolicy: Delete", "deletionPolicy: Sometimes", 1))
		}
	}
	out, err := dryRun(ctx, "-f", writeObjects(t, objs))
	if err == nil || !strings.Contains(out, "deletionPolicy") {
		t.Errorf("a VolumeSnapshotClass with deletionPolicy Sometimes passed the dry run (%v):\n%s", err, out)
	}
}

// deployFS is an in-memory copy of deploy/kubernetes and deploy/components, where overlays that
// combine the components are written without touching the repository.
func deployFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	for _, dir := range []string{"kubernetes", "components"} {
		root := filepath.Join(env.Repo, "deploy", dir)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(filepath.Join(env.Repo, "deploy"), p)
			return fsys.WriteFile("/deploy/"+filepath.ToSlash(rel), data)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return fsys
}

// Every combination of the components (node-driver-registrar, snapshots, resizer, quota, each with and
// without, and kubelet-dir last with k0s's and microk8s's root dir, or without), as an overlay of a
// user's would list them, server-side with dryRun=All: what deploy/overlays ships and what users
// compose from it alike.
func TestComponentCombinationsServerSideDryRun(t *testing.T) {
	ctx := kubeenv.Context(t, 5*time.Minute)
	fsys := deployFS(t)
	optional := []string{"node-driver-registrar", "snapshots", "resizer", "quota"}
	n := 0
	for mask := 0; mask < 1<<len(optional); mask++ {
		for _, kubeletDir := range []string{"", "/var/lib/k0s/kubelet", "/var/snap/microk8s/common/var/lib/kubelet"} {
			var comps []string
			for i, c := range optional {
				if mask&(1<<i) != 0 {
					comps = append(comps, c)
				}
			}
			k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../kubernetes\n"
			if kubeletDir != "" {
				k += "  - kubelet-dir.yaml\n"
				comps = append(comps, "kubelet-dir")
			}
			if len(comps) > 0 {
				k += "components:\n"
				for _, c := range comps {
					k += "  - ../../components/" + c + "\n"
				}
			}
			dir := fmt.Sprintf("/deploy/combos/%d", n)
			n++
			must := func(err error) {
				if err != nil {
					t.Fatal(err)
				}
			}
			must(fsys.MkdirAll(dir))
			must(fsys.WriteFile(dir+"/kustomization.yaml", []byte(k)))
			if kubeletDir != "" {
				must(fsys.WriteFile(dir+"/kubelet-dir.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: paddock-kubelet-dir\n"+
					"  annotations:\n    config.kubernetes.io/local-config: \"true\"\ndata:\n  kubeletDir: "+kubeletDir+"\n")))
			}
			m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
			if err != nil {
				t.Fatalf("components %v: %v", comps, err)
			}
			var objs []renderedObject
			for _, r := range m.Resources() {
				y, err := r.AsYAML()
				if err != nil {
					t.Fatal(err)
				}
				objs = append(objs, renderedObject{r.GetApiVersion(), r.GetKind(), r.GetNamespace(), r.GetName(), y})
			}
			out, err := dryRun(ctx, "-f", writeObjects(t, objs))
			if err != nil {
				t.Errorf("components %v: %v", comps, err)
				continue
			}
			if got := strings.Count(out, "serverside-applied (server dry run)"); got != len(objs) {
				t.Errorf("components %v: %d of %d objects applied:\n%s", comps, got, len(objs), out)
			}
		}
	}
	t.Logf("%d combinations accepted by the API server's dry run", n)
}

// ---------- the sidecars for real ----------

// componentSidecar is container name of the controller Deployment in overlay's build, and the
// overlay's objects other than the base's workloads (what the component adds: RBAC, classes).
func componentSidecar(t *testing.T, overlay, name string) (v1.Container, []renderedObject) {
	t.Helper()
	var (
		c     *v1.Container
		added []renderedObject
	)
	for _, o := range render(t, filepath.Join(env.Repo, "deploy", "overlays", overlay)) {
		switch {
		case o.kind == "Deployment":
			dep := &appsv1.Deployment{}
			if err := yaml.UnmarshalStrict(o.yaml, dep); err != nil {
				t.Fatal(err)
			}
			for i := range dep.Spec.Template.Spec.Containers {
				if dep.Spec.Template.Spec.Containers[i].Name == name {
					c = &dep.Spec.Template.Spec.Containers[i]
				}
			}
		case strings.HasPrefix(o.name, "paddock-csi-") || o.kind == "VolumeSnapshotClass":
			added = append(added, o)
		}
	}
	if c == nil {
		t.Fatalf("overlay %s has no %s container in the controller", overlay, name)
	}
	return *c, added
}

// guestArgs are c's arguments for the guest's process: as the kubelet would expand them
// ($(POD_NAMESPACE) is the pod's namespace), the controller's socket in the guest for the pod's
// /csi/csi.sock, and the controller's ServiceAccount token (the pod's) through a kubeconfig.
func guestArgs(t *testing.T, c v1.Container) []string {
	t.Helper()
	var args []string
	for _, a := range c.Args {
		a = strings.ReplaceAll(a, "$(POD_NAMESPACE)", kubeenv.Namespace)
		if strings.Contains(a, "$(") {
			t.Fatalf("%s: argument %q refers to a variable this test does not set", c.Name, a)
		}
		if v, ok := strings.CutPrefix(a, "--csi-address="); ok {
			if v != "/csi/csi.sock" {
				t.Fatalf("%s: --csi-address=%s, the controller's socket is /csi/csi.sock", c.Name, v)
			}
			a = "--csi-address=" + ctrlSock
		}
		args = append(args, a)
	}
	return append(args, "--kubeconfig="+ctrlKubeconfig)
}

// imageTag is the tag of c's image.
func imageTag(t *testing.T, c v1.Container) string {
	t.Helper()
	m := regexp.MustCompile(`^registry\.k8s\.io/sig-storage/[a-z-]+:(v[0-9]+\.[0-9]+\.[0-9]+)$`).FindStringSubmatch(c.Image)
	if m == nil {
		t.Fatalf("%s: image %q is not a sig-storage release", c.Name, c.Image)
	}
	return m[1]
}

// applyForReal applies objs server-side (stored) and deletes them when the test ends.
func applyForReal(t *testing.T, objs []renderedObject) {
	t.Helper()
	file := writeObjects(t, objs)
	ctx := kubeenv.Context(t, 2*time.Minute)
	out, err := env.Cluster.Kubectl(ctx, "apply", "--server-side", "--field-manager="+overlayFieldManager, "-f", file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied for real:\n%s", strings.TrimRight(out, "\n"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = env.Cluster.Kubectl(ctx, "delete", "--ignore-not-found", "--wait=false", "-f", file)
	})
}

// grant is one thing a ServiceAccount may do (namespace "": cluster-wide).
type grant struct{ group, resource, verb, namespace string }

// upstreamRBAC is what the ClusterRole and the Role (in the controller's namespace) of an upstream
// RBAC file grant.
func upstreamRBAC(t *testing.T, file string) []grant {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []grant
	r := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		var obj struct {
			Kind  string              `json:"kind"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := r.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		ns := ""
		switch obj.Kind {
		case "ClusterRole":
		case "Role":
			ns = kubeenv.Namespace // the sidecar's namespace: the controller pod's
		default:
			continue
		}
		for _, rule := range obj.Rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						out = append(out, grant{g, res, v, ns})
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", file)
	}
	return out
}

// may asks the API server's authorizer whether the controller's ServiceAccount may do g.
func may(t *testing.T, g grant) bool {
	t.Helper()
	res, sub, _ := strings.Cut(g.resource, "/")
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + kubeenv.Namespace + ":" + kubeenv.ControllerSA,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + kubeenv.Namespace, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: g.namespace, Verb: g.verb, Group: g.group,
			Resource: res, Subresource: sub},
	}}
	r, err := env.Cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(kubeenv.Context(t, time.Minute), sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// leaderElection is what the sidecars' leader election does with its Lease (csi-lib-utils, a
// client-go LeaseLock: get, create, update); the upstream files' Role also grants list, watch and
// delete, which the sidecars never do (their real runs below hold their Lease with the base's Role).
var leaderElection = []string{"get", "create", "update"}

// checkUpstreamRBAC: with the component's RBAC applied, the controller's ServiceAccount may do all
// that the sidecar's own upstream RBAC file grants it (leases in the controller's namespace: what
// leader election does).
func checkUpstreamRBAC(t *testing.T, file string) {
	t.Helper()
	for _, g := range upstreamRBAC(t, file) {
		if g.resource == "leases" && !slices.Contains(leaderElection, g.verb) {
			if may(t, g) {
				t.Errorf("the controller's ServiceAccount may %+v, which no sidecar does", g)
			}
			continue
		}
		if !may(t, g) {
			t.Errorf("the controller's ServiceAccount may not %+v, which %s grants", g, filepath.Base(file))
		}
	}
}

// waitLease waits until the Lease name in the controller's namespace has a holder.
func waitLease(t *testing.T, name string) {
	t.Helper()
	kubeenv.WaitT(t, time.Minute, "Lease "+name+" held", func(ctx context.Context) (bool, string, error) {
		l, err := env.Cluster.Client.CoordinationV1().Leases(kubeenv.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return ptr.Deref(l.Spec.HolderIdentity, "") != "", "no holder", nil
	})
}

// The snapshots component for real: its RBAC and VolumeSnapshotClass applied, csi-snapshotter run
// with the rendered container's arguments as the controller's ServiceAccount (leader election on, in
// the controller's namespace) instead of the tier's own; a VolumeSnapshot of the class copies the
// claim's files into the export's .paddock/snapshots, and deleting it removes the copy. The
// ServiceAccount may also do everything external-snapshotter's own RBAC file grants the sidecar.
func TestSnapshotsComponentForReal(t *testing.T) {
	c, added := componentSidecar(t, "snapshots", "csi-snapshotter")
	if v := imageTag(t, c); v != snapshotterVersion(t) {
		t.Fatalf("the component runs csi-snapshotter %s, this tier has %s", v, snapshotterVersion(t))
	}
	// Without the component's RBAC the ServiceAccount may not complete a snapshot.
	status := grant{"snapshot.storage.k8s.io", "volumesnapshotcontents/status", "update", ""}
	if may(t, status) {
		t.Fatalf("the controller may %+v before the component's RBAC is applied", status)
	}
	applyForReal(t, added)
	dir, err := kubeenv.ModuleDir(kubeenv.Context(t, 5*time.Minute), snapshotterModule, snapshotterVersion(t))
	if err != nil {
		t.Fatal(err)
	}
	checkUpstreamRBAC(t, filepath.Join(dir, "deploy", "kubernetes", "csi-snapshotter", "rbac-csi-snapshotter.yaml"))

	// The tier's csi-snapshotter (its own ServiceAccount) steps aside; tests after this one start it
	// again when they need it.
	ctx := kubeenv.Context(t, 5*time.Minute)
	if running, _, _ := env.Guest.SpawnStatus(ctx, snapName); running {
		if err := env.StopSidecar(ctx, snapName); err != nil {
			t.Fatal(err)
		}
	}
	const name = "overlay-csi-snapshotter"
	if err := env.StartSidecar(ctx, name, append([]string{"/usr/local/bin/csi-snapshotter"}, guestArgs(t, c)...), "Starting CSI snapshotter"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the component's csi-snapshotter's log:\n%s", env.Log(context.Background(), name, 40))
		}
		_ = env.StopSidecar(context.Background(), name)
	})
	waitLease(t, "external-snapshotter-leader-"+strings.ReplaceAll(kubeenv.Driver, ".", "-"))

	ns := env.NewNamespace(t, "snapcomp")
	sc := storageClass(t, "snapcomp", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}})
	createClaim(t, ns, "data", claimOpts{class: &sc.Name})
	env.WaitBound(t, ns, "data")
	writeFile(t, kubeenv.ExportA+"/"+ns+"-data/f.txt", "snap me")

	var class string
	for _, o := range added {
		if o.kind == "VolumeSnapshotClass" {
			class = o.name
		}
	}
	snaps := snapshotClient(t)
	content, copyDir := takeSnapshot(t, ctx, snaps, ns, "data", class, name)
	if got := readFile(t, copyDir+"/data/f.txt"); got != "snap me" {
		t.Errorf("the snapshot's copy of f.txt is %q, want %q", got, "snap me")
	}
	deleteSnapshot(t, ctx, snaps, ns, content)
	if exists(t, copyDir) {
		t.Errorf("the snapshot's copy %s is still there after its VolumeSnapshot was deleted", copyDir)
	}
}

// snapshotterVersion is the external-snapshotter release this tier's csi-snapshotter is built from
// (test/cluster/tools/go.mod).
func snapshotterVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.Repo, "test", "cluster", "tools", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(snapshotterModule) + ` (v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("test/cluster/tools/go.mod does not require %s", snapshotterModule)
	}
	return string(m[1])
}

// The resizer component for real: csi-resizer of the release the component pins, built from the
// module proxy, run with the rendered container's arguments as the controller's ServiceAccount with
// the component's RBAC. It expands a claim the embedded provisioner made (the new capacity on the PV,
// in the claim's status and in Paddock's claim record on the export) and applies a
// VolumeAttributesClass to it (mode and group of the directory on the server, the class in the
// claim's status and on the PV). The ServiceAccount may also do everything external-resizer's own
// RBAC file grants the sidecar.
func TestResizerComponentForReal(t *testing.T) {
	c, added := componentSidecar(t, "resizer", "csi-resizer")
	version := imageTag(t, c)
	status := grant{"", "persistentvolumeclaims/status", "patch", ""}
	if may(t, status) {
		t.Fatalf("the controller may %+v before the component's RBAC is applied", status)
	}
	bin, err := kubeenv.BuildCSIResizer(kubeenv.Context(t, 20*time.Minute), version)
	if err != nil {
		t.Fatal(err)
	}
	ctx := kubeenv.Context(t, 10*time.Minute)
	guestBin, err := env.InstallSidecar(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	applyForReal(t, added)
	dir, err := kubeenv.ModuleDir(ctx, kubeenv.ResizerModule, version)
	if err != nil {
		t.Fatal(err)
	}
	checkUpstreamRBAC(t, filepath.Join(dir, "deploy", "kubernetes", "rbac.yaml"))

	ns := env.NewNamespace(t, "resize")
	// The class exists before csi-resizer starts: a claim naming a class its informer has not seen
	// yet is marked Pending ("does not exist") and only retried at its resync (10 minutes).
	vac := volumeAttributesClass(t, "restricted-"+ns, kubeenv.Driver, map[string]string{"mode": "0750", "gid": "2000"})

	const name = "overlay-csi-resizer"
	// The modify controller starts only where the VolumeAttributesClass API is served (v1 here).
	if err := env.StartSidecar(ctx, name, append([]string{guestBin}, guestArgs(t, c)...), "Starting external resizer for modify volume"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the component's csi-resizer's log:\n%s", env.Log(context.Background(), name, 40))
		}
		_ = env.StopSidecar(context.Background(), name)
	})
	waitLease(t, "external-resizer-"+strings.ReplaceAll(kubeenv.Driver, ".", "-"))

	// Expansion needs a class that allows it.
	sc := env.NewStorageClass(t, "resize", &storagev1.StorageClass{AllowVolumeExpansion: ptr.To(true), Parameters: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}})
	createClaim(t, ns, "data", claimOpts{class: &sc.Name, size: "1Gi"})
	_, pv := env.WaitBound(t, ns, "data")
	subDir := ns + "-data"
	claims := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns)

	t.Run("expand", func(t *testing.T) {
		patch := `{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}`
		if _, err := claims.Patch(ctx, "data", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		want := resource.MustParse("3Gi")
		waitExpanded(t, ns, "data", pv.Name, want, name)
		if rec := claimFile(t, kubeenv.ExportA, subDir); !strings.Contains(rec, fmt.Sprintf("capacity=%d\n", want.Value())) {
			t.Errorf("Paddock's claim record of %s does not hold the new capacity %d:\n%s", subDir, want.Value(), rec)
		}
	})

	t.Run("enforced capacity", func(t *testing.T) { quotaExpansion(t, name) })

	t.Run("volumeAttributesClass", func(t *testing.T) {
		patch := `{"spec":{"volumeAttributesClassName":"` + vac + `"}}`
		if _, err := claims.Patch(ctx, "data", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		kubeenv.WaitT(t, kubeenv.PhaseTimeout, "claim data modified to "+vac, func(ctx context.Context) (bool, string, error) {
			pvc, err := claims.Get(ctx, "data", metav1.GetOptions{})
			if err != nil {
				return false, "", err
			}
			p, err := env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if err != nil {
				return false, "", err
			}
			return ptr.Deref(pvc.Status.CurrentVolumeAttributesClassName, "") == vac && pvc.Status.ModifyVolumeStatus == nil &&
					ptr.Deref(p.Spec.VolumeAttributesClassName, "") == vac,
				fmt.Sprintf("claim status current %v, modify %+v; PV class %v; events: %s; sidecar log: %s",
					pvc.Status.CurrentVolumeAttributesClassName, pvc.Status.ModifyVolumeStatus, p.Spec.VolumeAttributesClassName,
					env.ClaimEvents(ctx, ns, "data"), env.Log(ctx, name, 3)), nil
		})
		if got := statOf(t, kubeenv.ExportA+"/"+subDir); got != "0:2000:750" {
			t.Errorf("owner:group:mode of %s on the server = %s, want 0:2000:750 (the class's gid and mode)", subDir, got)
		}
	})
}

// waitExpanded waits until the claim and its PV show capacity want and no resize is in progress or
// failed (the resizer is the spawned sidecar whose log a failure shows).
func waitExpanded(t *testing.T, ns, claim, pvName string, want resource.Quantity, resizer string) {
	t.Helper()
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "claim "+claim+" expanded to "+want.String(), func(ctx context.Context) (bool, string, error) {
		pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		p, err := env.Cluster.Client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		got, pvGot := pvc.Status.Capacity[v1.ResourceStorage], p.Spec.Capacity[v1.ResourceStorage]
		resizing := slices.ContainsFunc(pvc.Status.Conditions, func(c v1.PersistentVolumeClaimCondition) bool {
			return strings.Contains(string(c.Type), "Resiz") // Resizing, FileSystemResizePending, ...ResizeError
		})
		return got.Cmp(want) == 0 && pvGot.Cmp(want) == 0 && !resizing && len(pvc.Status.AllocatedResourceStatuses) == 0,
			fmt.Sprintf("claim capacity %s, conditions %+v, resize statuses %v; PV capacity %s; events: %s; sidecar log: %s", got.String(),
				pvc.Status.Conditions, pvc.Status.AllocatedResourceStatuses, pvGot.String(), env.ClaimEvents(ctx, ns, claim), env.Log(ctx, resizer, 3)), nil
	})
}
