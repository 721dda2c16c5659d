package deploy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func init() {
	// The snapshots component ships a VolumeSnapshotClass: decode it strictly, as the typed object it is.
	utilruntime.Must(snapv1.AddToScheme(scheme.Scheme))
}

const (
	// kubeletOverlay is the kubelet e2e tier's overlay of the base: its own image, never pulled.
	kubeletOverlay = "../test/e2e/kubelet/overlay"
	e2eImage       = "registry.paddock.test/paddock:e2e" // hack/image.sh, imported by the kubelet tier

	componentsDir     = "components"
	kubeletDirComp    = "kubelet-dir"
	defaultKubeletDir = "/var/lib/kubelet"
	controllerSA      = "paddock-controller"
	// kubeletDirMap is the ConfigMap an overlay names its kubelet root dir in, for kubelet-dir.
	kubeletDirMap = "paddock-kubelet-dir"

	// The quota component: the controller's client identity for the quota agents (docs/quota.md),
	// the Secret quotaSecret mounted at quotaDir and named by quotaFlag.
	quotaComp   = "quota"
	quotaSecret = "paddock-quota-client"
	quotaDir    = "/etc/paddock/quota"
	quotaFlag   = "--quota-credentials"
	quotaVolume = "quota-credentials"
)

// The kubelet root dirs the combinations are rendered with ("" is the base's /var/lib/kubelet).
var kubeletDirs = []string{"", "/var/lib/k0s/kubelet", "/var/snap/microk8s/common/var/lib/kubelet"}

// access is one thing a ServiceAccount may do: verb on resource of group, cluster-wide (namespace
// "") or in one namespace.
type access struct{ group, resource, verb, namespace string }

func accesses(group, resource, namespace string, verbs ...string) []access {
	var out []access
	for _, v := range verbs {
		out = append(out, access{group, resource, v, namespace})
	}
	return out
}

// leases is what a sidecar's leader election (csi-lib-utils, a LeaseLock) does, in paddock.
var leases = accesses("coordination.k8s.io", "leases", namespace, "get", "create", "update")

// controllerSidecar is a sidecar a component adds to the controller Deployment.
type controllerSidecar struct {
	component, container, image, major string
	// needs is what the sidecar's upstream RBAC file grants it (external-snapshotter v8.7.0
	// deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml, external-resizer v2.3.0
	// deploy/kubernetes/rbac.yaml); the cluster tier checks the files themselves against the API
	// server's authorizer.
	needs []access
	// objects are the objects the component adds (group/kind name, as objectID without namespace).
	objects []string
}

var sidecars = []controllerSidecar{
	{
		component: "snapshots", container: "csi-snapshotter", major: "v8.",
		image: "registry.k8s.io/sig-storage/csi-snapshotter",
		needs: slices.Concat(leases,
			accesses("", "events", "", "list", "watch", "create", "update", "patch"),
			accesses("snapshot.storage.k8s.io", "volumesnapshotclasses", "", "get", "list", "watch"),
			accesses("snapshot.storage.k8s.io", "volumesnapshotcontents", "", "get", "list", "watch", "update", "patch"),
			accesses("snapshot.storage.k8s.io", "volumesnapshotcontents/status", "", "update", "patch"),
			accesses("groupsnapshot.storage.k8s.io", "volumegroupsnapshotclasses", "", "get", "list", "watch"),
			accesses("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "", "get", "list", "watch", "update", "patch"),
			accesses("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents/status", "", "update", "patch")),
		objects: []string{"ClusterRole.rbac.authorization.k8s.io paddock-csi-snapshotter",
			"ClusterRoleBinding.rbac.authorization.k8s.io paddock-csi-snapshotter",
			"VolumeSnapshotClass.snapshot.storage.k8s.io paddock"},
	},
	{
		component: "resizer", container: "csi-resizer", major: "v2.",
		image: "registry.k8s.io/sig-storage/csi-resizer",
		needs: slices.Concat(leases,
			accesses("", "persistentvolumes", "", "get", "list", "watch", "patch"),
			accesses("", "persistentvolumeclaims", "", "get", "list", "watch"),
			accesses("", "persistentvolumeclaims/status", "", "patch"),
			accesses("", "pods", "", "get", "list", "watch"),
			accesses("", "events", "", "list", "watch", "create", "update", "patch"),
			accesses("storage.k8s.io", "volumeattributesclasses", "", "get", "list", "watch")),
		objects: []string{"ClusterRole.rbac.authorization.k8s.io paddock-csi-resizer",
			"ClusterRoleBinding.rbac.authorization.k8s.io paddock-csi-resizer"},
	},
}

// build runs kustomize (the library behind kubectl apply -k, with its default options: no plugins,
// files only from inside the kustomization's directory) on the kustomization in dir, and decodes
// every object it makes, strictly, into a typed object.
func build(t *testing.T, dir string) []document {
	t.Helper()
	return buildFS(t, filesys.MakeFsOnDisk(), dir)
}

// buildFS is build on a file system of its own (see combo.render).
func buildFS(t *testing.T, fsys filesys.FileSystem, dir string) []document {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var docs []document
	for _, r := range m.Resources() {
		where := fmt.Sprintf("kustomize build %s: %s %s", dir, r.GetKind(), r.GetName())
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if d, ok := decode(t, where, y); ok {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("kustomize build %s: no objects", dir)
	}
	return docs
}

// objectID is how kubectl tells objects apart: group, kind, namespace and name.
func objectID(d document) string {
	m, err := meta.Accessor(d.obj)
	if err != nil {
		return d.where
	}
	return d.gvk.GroupKind().String() + " " + m.GetNamespace() + "/" + m.GetName()
}

// byID indexes docs by objectID, failing the test on a duplicate.
func byID(t *testing.T, docs []document) map[string]document {
	t.Helper()
	out := map[string]document{}
	for _, d := range docs {
		id := objectID(d)
		if prev, ok := out[id]; ok {
			t.Errorf("%s and %s are both %s", prev.where, d.where, id)
		}
		out[id] = d
	}
	return out
}

// sameObjects: got (what a build made) has the objects of want (what it is compared with), no more
// and no fewer.
func sameObjects(t *testing.T, got, want []document, what, wantWhat string) {
	t.Helper()
	g, w := byID(t, got), byID(t, want)
	for id := range w {
		if _, ok := g[id]; !ok {
			t.Errorf("%s lacks %s of %s", what, id, wantWhat)
		}
	}
	for id, d := range g {
		if _, ok := w[id]; !ok {
			t.Errorf("%s: %s is not among %s", d.where, id, wantWhat)
		}
	}
}

// TestKustomizeBuild builds the base as kubectl apply -k would and checks what it makes: all the
// objects of the base's files, and whole as checkObjects wants an installation.
func TestKustomizeBuild(t *testing.T) {
	docs := build(t, baseDir)
	sameObjects(t, docs, load(t, baseDir), "kustomize build "+baseDir, "the base's files")
	checkObjects(t, docs)
}

// ---------- combinations of the components ----------

// combo is an installation a user composes: the base, some components of deploy/components (in
// this order), and, when kubeletDir is set, kubelet-dir last with that root dir.
type combo struct {
	components []string
	kubeletDir string
}

func (c combo) String() string {
	s := strings.Join(c.components, "+")
	if s == "" {
		s = "base"
	}
	if c.kubeletDir != "" {
		s += "@" + strings.ReplaceAll(strings.Trim(c.kubeletDir, "/"), "/", "_")
	}
	return s
}

func (c combo) has(component string) bool { return slices.Contains(c.components, component) }

// kustomization is the overlay a user would write for c.
func (c combo) kustomization() string {
	var b strings.Builder
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../kubernetes\n")
	comps := slices.Clone(c.components)
	if c.kubeletDir != "" {
		b.WriteString("  - kubelet-dir.yaml\n")
		comps = append(comps, kubeletDirComp)
	}
	if len(comps) > 0 {
		b.WriteString("components:\n")
		for _, comp := range comps {
			b.WriteString("  - ../../components/" + comp + "\n")
		}
	}
	return b.String()
}

func kubeletDirConfigMap(dir string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + kubeletDirMap +
		"\n  annotations:\n    config.kubernetes.io/local-config: \"true\"\ndata:\n  kubeletDir: " + dir + "\n"
}

// deployFS is an in-memory copy of the base and the components, where combinations are written
// without touching the repository.
func deployFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	for _, dir := range []string{baseDir, componentsDir} {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return fsys.WriteFile(path.Join("/deploy", filepath.ToSlash(p)), data)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return fsys
}

// render builds c as kubectl apply -k would build the overlay c.kustomization() in deploy/<dir>.
func (c combo) render(t *testing.T, fsys filesys.FileSystem) []document {
	t.Helper()
	dir := "/deploy/combos/" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(c.String(), "-")
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fsys.MkdirAll(dir))
	must(fsys.WriteFile(dir+"/"+kustomization, []byte(c.kustomization())))
	if c.kubeletDir != "" {
		must(fsys.WriteFile(dir+"/kubelet-dir.yaml", []byte(kubeletDirConfigMap(c.kubeletDir))))
	}
	return buildFS(t, fsys, dir)
}

// combos are every combination of the components (kubelet-dir with each root dir, and without).
func combos() []combo {
	var out []combo
	// quota last, after the sidecar components, which put their containers before paddock's: it
	// must find paddock's container wherever they put it (TestQuotaAnyOrder: the other order).
	others := []string{"node-driver-registrar", "snapshots", "resizer", quotaComp}
	for mask := 0; mask < 1<<len(others); mask++ {
		var comps []string
		for i, c := range others {
			if mask&(1<<i) != 0 {
				comps = append(comps, c)
			}
		}
		for _, dir := range kubeletDirs {
			out = append(out, combo{components: comps, kubeletDir: dir})
		}
	}
	return out
}

// TestComponentCombinations renders every combination of the components, as a user's overlay
// would list them, and checks each: the objects it adds, the sidecars' images, arguments, sockets,
// ports, probes and privileges, the RBAC each sidecar needs (and none it does not), registration
// with kubelet from wherever its root dir is, and nothing else of the base changed.
func TestComponentCombinations(t *testing.T) {
	fsys := deployFS(t)
	base := build(t, baseDir)
	plain := map[string][]document{} // combos without kubelet-dir, by their components
	for _, c := range combos() {
		t.Run(c.String(), func(t *testing.T) {
			docs := c.render(t, fsys)
			checkCombo(t, c, docs, base)
			key := strings.Join(c.components, "+")
			if c.kubeletDir == "" {
				plain[key] = docs
				return
			}
			// The same combination with /var/lib/kubelet, but for the root dir in every path.
			want, ok := plain[key]
			if !ok {
				t.Fatalf("combos() lists %s before its combination without kubelet-dir", c)
			}
			sameDocs(t, rootDirBack(t, docs, c.kubeletDir), want,
				"with every "+c.kubeletDir+" replaced by "+defaultKubeletDir)
		})
	}
}

// checkCombo checks one rendered combination (see TestComponentCombinations).
func checkCombo(t *testing.T, c combo, docs, base []document) {
	t.Helper()
	kubeletDir := cmpOr(c.kubeletDir, defaultKubeletDir)

	// The base's objects and each component's, no more.
	want := map[string]bool{}
	for _, d := range base {
		want[objectID(d)] = true
	}
	for _, s := range sidecars {
		if c.has(s.component) {
			for _, o := range s.objects {
				kind, name, _ := strings.Cut(o, " ")
				want[kind+" /"+name] = true
			}
		}
	}
	got := byID(t, docs)
	for id := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("no %s", id)
		}
	}
	for id := range got {
		if !want[id] {
			t.Errorf("%s: not the base's nor a component's", id)
		}
	}

	// A whole installation (checkObjects knows the built-in kinds; the VolumeSnapshotClass is
	// checked below) where kubelet's root dir is the base's.
	var builtin []document
	for _, d := range rootDirBack(t, docs, c.kubeletDir) {
		if _, ok := d.obj.(*snapv1.VolumeSnapshotClass); !ok {
			builtin = append(builtin, d)
		}
	}
	checkObjects(t, builtin)
	checkHardening(t, builtin) // deploy_test.go's policy for every container, the sidecars too
	checkDefaultContainer(t, builtin)

	deploy := controllerDeployment(t, docs)
	ds := nodeDaemonSet(t, docs)
	for _, s := range sidecars {
		checkControllerSidecar(t, s, c, deploy, ds, docs, base)
	}
	checkRegistration(t, ds, c.has(registrarName), kubeletDir)
	checkQuota(t, deploy, ds, base, c.has(quotaComp))

	// Nothing else changed: without what the components add, the base.
	if c.kubeletDir == "" {
		sameDocs(t, withoutComponents(t, docs, base, c), base, "without what its components add")
	}
}

// cmpOr is cmp.Or for strings.
func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// rootDirBack returns docs with every occurrence of kubeletDir in the node DaemonSet replaced by
// /var/lib/kubelet, failing the test if the DaemonSet still names /var/lib/kubelet anywhere else
// (a path kubelet-dir missed). docs as they are when kubeletDir is "".
func rootDirBack(t *testing.T, docs []document, kubeletDir string) []document {
	t.Helper()
	if kubeletDir == "" {
		return docs
	}
	out := make([]document, 0, len(docs))
	for _, d := range docs {
		ds, ok := d.obj.(*appsv1.DaemonSet)
		if !ok {
			out = append(out, d)
			continue
		}
		js, err := json.Marshal(ds)
		if err != nil {
			t.Fatal(err)
		}
		s := string(js)
		// The microk8s root dir ends in /var/lib/kubelet: look for the default one only outside it.
		if rest := strings.ReplaceAll(s, kubeletDir, "<root>"); strings.Contains(rest, defaultKubeletDir) {
			for _, m := range regexp.MustCompile(`"[^"]*`+regexp.QuoteMeta(defaultKubeletDir)+`[^"]*"`).FindAllString(rest, -1) {
				t.Errorf("%s: %s still names %s (with %s as kubelet's root dir)", d.where, m, defaultKubeletDir, kubeletDir)
			}
		}
		back := &appsv1.DaemonSet{}
		if err := json.Unmarshal([]byte(strings.ReplaceAll(s, kubeletDir, defaultKubeletDir)), back); err != nil {
			t.Fatal(err)
		}
		d.obj = back
		out = append(out, d)
	}
	return out
}

// withoutComponents undoes, on a copy of docs, what c's components (kubelet-dir aside) add:
// their objects and containers, node-driver-registrar's change to paddock (checked here: its
// arguments and mounts the base's but for the registration flags and the plugins_registry mount),
// and quota's flag, mount and volume (checkQuota checks them).
func withoutComponents(t *testing.T, docs, base []document, c combo) []document {
	t.Helper()
	added := map[string]bool{}
	containers := map[string]bool{}
	for _, s := range sidecars {
		if c.has(s.component) {
			containers[s.container] = true
			for _, o := range s.objects {
				kind, name, _ := strings.Cut(o, " ")
				added[kind+" /"+name] = true
			}
		}
	}
	if c.has(registrarName) {
		containers[registrarName] = true
	}
	baseNode := container(&nodeDaemonSet(t, base).Spec.Template.Spec, "paddock")
	var out []document
	for _, d := range docs {
		if added[objectID(d)] {
			continue
		}
		d.obj = d.obj.DeepCopyObject()
		if spec := podSpec(d.obj); spec != nil {
			spec.Containers = slices.DeleteFunc(spec.Containers, func(k corev1.Container) bool { return containers[k.Name] })
			if p := container(spec, "paddock"); p != nil && c.has(registrarName) && d.gvk.Kind == "DaemonSet" {
				if want := slices.DeleteFunc(slices.Clone(baseNode.Args), isRegistrationFlag); !slices.Equal(p.Args, want) {
					t.Errorf("%s: with %s, paddock's args\n  %v\nwant the base's without %v\n  %v", d.where, registrarName, p.Args, registrationFlags, want)
				}
				want := slices.DeleteFunc(slices.Clone(baseNode.VolumeMounts), func(m corev1.VolumeMount) bool { return m.MountPath == "/registration" })
				if !equality.Semantic.DeepEqual(p.VolumeMounts, want) {
					t.Errorf("%s: with %s, paddock's mounts %+v, want the base's without /registration %+v", d.where, registrarName, p.VolumeMounts, want)
				}
				// Checked: the base's, for the comparison of everything else.
				p.Args, p.VolumeMounts = baseNode.Args, baseNode.VolumeMounts
			}
			if p := container(spec, "paddock"); p != nil && c.has(quotaComp) && d.gvk.Kind == "Deployment" {
				p.Args = slices.DeleteFunc(p.Args, func(a string) bool { return a == quotaFlag+"="+quotaDir })
				p.VolumeMounts = slices.DeleteFunc(p.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == quotaVolume })
				spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == quotaVolume })
			}
		}
		out = append(out, d)
	}
	return out
}

func isRegistrationFlag(a string) bool {
	return slices.ContainsFunc(registrationFlags, func(f string) bool { return a == f || strings.HasPrefix(a, f+"=") })
}

// sameDocs: got and want have the same objects, each semantically equal.
func sameDocs(t *testing.T, got, want []document, how string) {
	t.Helper()
	w := byID(t, want)
	sameObjects(t, got, want, "the build "+how, "the objects compared with")
	for _, d := range got {
		if b, ok := w[objectID(d)]; ok && !equality.Semantic.DeepEqual(d.obj, b.obj) {
			t.Errorf("%s %s differs:\n%s", d.where, how, diff.Diff(b.obj, d.obj))
		}
	}
}

func controllerDeployment(t *testing.T, docs []document) *appsv1.Deployment {
	t.Helper()
	var found *appsv1.Deployment
	for _, d := range docs {
		if dep, ok := d.obj.(*appsv1.Deployment); ok {
			if found != nil {
				t.Fatalf("more than one Deployment: %s and %s", found.Name, dep.Name)
			}
			found = dep
		}
	}
	if found == nil {
		t.Fatal("no Deployment")
	}
	return found
}

func containersNamed(spec *corev1.PodSpec, name string) []corev1.Container {
	var out []corev1.Container
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// socketOf is the volume and the path inside it of a socket path as container c sees it.
func socketOf(c *corev1.Container, p string) (vol, rel string) {
	best := ""
	for _, m := range c.VolumeMounts {
		r, err := filepath.Rel(m.MountPath, p)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") || len(m.MountPath) <= len(best) {
			continue
		}
		best, vol, rel = m.MountPath, m.Name, r
	}
	return vol, rel
}

var releaseTag = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+$`)

// checkImage: image is name pinned to a release tag of the given major version ("v8.").
func checkImage(t *testing.T, who, image, name, major string) {
	t.Helper()
	n, tag, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(n, ":"); i > strings.LastIndex(n, "/") {
		n, tag = n[:i], n[i+1:]
	}
	if n != name || !releaseTag.MatchString(tag) || !strings.HasPrefix(tag, major) {
		t.Errorf("%s: image %q, want %s pinned to a %sx.y release tag", who, image, name, major)
	}
}

// checkSidecarSecurity: a sidecar gets no privilege at all (it talks to the API server and to a
// root-owned socket): every capability dropped, none added, no escalation, a read-only root and
// the runtime's seccomp profile.
func checkSidecarSecurity(t *testing.T, who string, spec *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", who)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", who)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and no add", who, sc.Capabilities)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", who)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", who)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && spec.SecurityContext != nil {
		seccomp = spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", who, seccomp)
	}
}

// checkHTTPEndpoint: the container's --http-endpoint port is one it declares, no other container of
// the pod declares it, and its liveness probe asks probePath there (on host, for a pod on the host
// network, whose endpoint must be that loopback address). It returns the port's name.
func checkHTTPEndpoint(t *testing.T, who string, spec *corev1.PodSpec, c *corev1.Container, probePath, host string) {
	t.Helper()
	ep, ok := flagValue(c.Args, "--http-endpoint")
	if !ok {
		t.Errorf("%s: no --http-endpoint (its health and metrics)", who)
		return
	}
	h, port, _ := strings.Cut(ep, ":")
	if h != host {
		t.Errorf("%s: --http-endpoint=%s listens on %q, want %q", who, ep, h, host)
	}
	var name string
	for _, p := range c.Ports {
		if fmt.Sprint(p.ContainerPort) == port {
			name = p.Name
		}
	}
	if name == "" {
		t.Errorf("%s: --http-endpoint=%s: port %s is not declared", who, ep, port)
	}
	for _, o := range spec.Containers {
		for _, p := range o.Ports {
			if o.Name != c.Name && fmt.Sprint(p.ContainerPort) == port {
				t.Errorf("%s: port %s is also container %s's", who, port, o.Name)
			}
		}
	}
	lp := c.LivenessProbe
	if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != probePath || lp.HTTPGet.Port.String() != name || lp.HTTPGet.Host != host {
		t.Errorf("%s: liveness probe %+v, want GET %s on port %s (host %q)", who, lp, probePath, name, host)
	}
}

// checkControllerSidecar checks sidecar s in the controller Deployment when the combination has
// its component, and its absence (and that of the access only it needs) when not.
func checkControllerSidecar(t *testing.T, s controllerSidecar, c combo, deploy *appsv1.Deployment, ds *appsv1.DaemonSet, docs, base []document) {
	t.Helper()
	present := c.has(s.component)
	spec := &deploy.Spec.Template.Spec
	found := containersNamed(spec, s.container)
	if n := len(containersNamed(&ds.Spec.Template.Spec, s.container)); n > 0 {
		t.Errorf("the node DaemonSet has %d %s containers: it belongs to the controller", n, s.container)
	}
	if !present {
		if len(found) > 0 {
			t.Errorf("the controller has a %s container without the %s component", s.container, s.component)
		}
		// What only this sidecar needs (not the base, not another sidecar there) is not granted.
		for _, a := range s.needs {
			if !allowed(base, controllerSA, a) && !neededByOthers(a, s, c) && allowed(docs, controllerSA, a) {
				t.Errorf("without the %s component the controller may still %+v", s.component, a)
			}
		}
		return
	}
	if len(found) != 1 {
		t.Fatalf("%d %s containers in the controller, want 1", len(found), s.container)
	}
	sc := container(spec, s.container)
	who := "controller container " + s.container
	checkImage(t, who, sc.Image, s.image, s.major)

	// The same socket as paddock's --endpoint: the same pod volume, the same path in it.
	p := container(spec, "paddock")
	endpoint, _ := flagValue(p.Args, "--endpoint")
	pv, prel := socketOf(p, strings.TrimPrefix(endpoint, "unix://"))
	addr, _ := flagValue(sc.Args, "--csi-address")
	cv, crel := socketOf(sc, addr)
	if addr == "" || cv == "" || cv != pv || crel != prel {
		t.Errorf("%s: --csi-address=%s is %s:%s, paddock's --endpoint=%s is %s:%s: not the same socket", who, addr, cv, crel, endpoint, pv, prel)
	}
	if v := podVolume(spec, cv); v == nil || v.EmptyDir == nil {
		t.Errorf("%s: the socket's volume %q is not the pod's emptyDir", who, cv)
	}

	// One replica's sidecar at a time, with its Lease in the pod's namespace.
	if !slices.Contains(sc.Args, "--leader-election") {
		t.Errorf("%s: no --leader-election (two replicas would both act)", who)
	}
	if ns, _ := flagValue(sc.Args, "--leader-election-namespace"); ns != "$(POD_NAMESPACE)" {
		t.Errorf("%s: --leader-election-namespace=%q, want $(POD_NAMESPACE)", who, ns)
	}
	if !slices.ContainsFunc(sc.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}) {
		t.Errorf("%s: no POD_NAMESPACE from metadata.namespace", who)
	}
	checkHTTPEndpoint(t, who, spec, sc, "/healthz/leader-election", "")
	checkSidecarSecurity(t, who, spec, sc)

	// It runs as the pod's ServiceAccount, which must be allowed all its upstream RBAC grants.
	if spec.ServiceAccountName != controllerSA {
		t.Errorf("the controller runs as %q, want %s", spec.ServiceAccountName, controllerSA)
	}
	for _, a := range s.needs {
		if !allowed(docs, controllerSA, a) {
			t.Errorf("%s: the controller's ServiceAccount may not %+v", who, a)
		}
	}
	// And the component's ClusterRole grants nothing more.
	for _, d := range docs {
		if r, ok := d.obj.(*rbacv1.ClusterRole); ok && slices.Contains(s.objects, "ClusterRole.rbac.authorization.k8s.io "+r.Name) {
			for _, rule := range r.Rules {
				for _, g := range rule.APIGroups {
					for _, res := range rule.Resources {
						for _, v := range rule.Verbs {
							if a := (access{g, res, v, ""}); !slices.Contains(s.needs, a) || len(rule.ResourceNames) > 0 {
								t.Errorf("%s: ClusterRole %s grants %+v, which %s does not need", d.where, r.Name, a, s.container)
							}
						}
					}
				}
			}
		}
	}
	if s.component == "snapshots" {
		checkSnapshotClass(t, docs)
	}
}

// neededByOthers: access a is also needed by another sidecar of the combination.
func neededByOthers(a access, s controllerSidecar, c combo) bool {
	for _, o := range sidecars {
		if o.component != s.component && c.has(o.component) && slices.Contains(o.needs, a) {
			return true
		}
	}
	return false
}

// allowed evaluates the RBAC objects in docs as the API server's authorizer would (no wildcards:
// checkObjects refuses them): may ServiceAccount namespace/sa do a?
func allowed(docs []document, sa string, a access) bool {
	roles := map[string][]rbacv1.PolicyRule{} // "ClusterRole/name" or "Role/ns/name"
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *rbacv1.ClusterRole:
			roles["ClusterRole/"+o.Name] = o.Rules
		case *rbacv1.Role:
			roles["Role/"+o.Namespace+"/"+o.Name] = o.Rules
		}
	}
	grants := func(rules []rbacv1.PolicyRule) bool {
		return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, a.group) && slices.Contains(r.Resources, a.resource) &&
				slices.Contains(r.Verbs, a.verb) && len(r.ResourceNames) == 0
		})
	}
	subject := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == namespace
		})
	}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *rbacv1.ClusterRoleBinding:
			if o.RoleRef.Kind == "ClusterRole" && subject(o.Subjects) && grants(roles["ClusterRole/"+o.RoleRef.Name]) {
				return true
			}
		case *rbacv1.RoleBinding:
			if a.namespace != o.Namespace || !subject(o.Subjects) {
				continue
			}
			key := "ClusterRole/" + o.RoleRef.Name
			if o.RoleRef.Kind == "Role" {
				key = "Role/" + o.Namespace + "/" + o.RoleRef.Name
			}
			if grants(roles[key]) {
				return true
			}
		}
	}
	return false
}

// checkSnapshotClass: the example VolumeSnapshotClass is Paddock's, cluster-scoped, deletes the
// copy with the VolumeSnapshot, and has no parameters (CreateSnapshot refuses any).
func checkSnapshotClass(t *testing.T, docs []document) {
	t.Helper()
	n := 0
	for _, d := range docs {
		c, ok := d.obj.(*snapv1.VolumeSnapshotClass)
		if !ok {
			continue
		}
		n++
		if c.Driver != driverName || c.DeletionPolicy != snapv1.VolumeSnapshotContentDelete || len(c.Parameters) > 0 ||
			c.Namespace != "" || c.Labels[nameLabel] != "paddock" {
			t.Errorf("%s: driver %q, deletionPolicy %q, parameters %v, namespace %q, labels %v; want %s, Delete, none, none, %s=paddock",
				d.where, c.Driver, c.DeletionPolicy, c.Parameters, c.Namespace, c.Labels, driverName, nameLabel)
		}
	}
	if n != 1 {
		t.Errorf("%d VolumeSnapshotClasses, want 1", n)
	}
}

// checkRegistration: the node plugin is registered with kubelet under its root dir kubeletDir,
// by paddock itself or, with the component, by node-driver-registrar alone; either way the socket
// kubelet is told of is where paddock's --endpoint is on the host.
func checkRegistration(t *testing.T, ds *appsv1.DaemonSet, registrar bool, kubeletDir string) {
	t.Helper()
	spec := &ds.Spec.Template.Spec
	p := container(spec, "paddock")
	if p == nil {
		t.Fatal("no paddock container in the node DaemonSet")
	}
	endpoint, _ := flagValue(p.Args, "--endpoint")
	sock := hostPathOf(spec, p, strings.TrimPrefix(endpoint, "unix://"))
	if want := kubeletDir + "/plugins/" + driverName + "/csi.sock"; sock != want {
		t.Errorf("paddock's --endpoint=%s is host path %q, want %s (kubelet's plugins dir)", endpoint, sock, want)
	}
	// kubelet hands paddock host paths under its root dir: they must be the same inside.
	if v := podVolume(spec, "kubelet-dir"); v == nil || v.HostPath == nil || v.HostPath.Path != kubeletDir {
		t.Errorf("volume kubelet-dir is %+v, want hostPath %s", v, kubeletDir)
	}
	if !slices.ContainsFunc(p.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "kubelet-dir" && m.MountPath == kubeletDir && m.MountPropagation != nil &&
			*m.MountPropagation == corev1.MountPropagationBidirectional
	}) {
		t.Errorf("paddock does not mount kubelet-dir at %s with Bidirectional propagation: %+v", kubeletDir, p.VolumeMounts)
	}
	registry := kubeletDir + "/plugins_registry"
	regs := containersNamed(spec, registrarName)
	if !registrar {
		if len(regs) > 0 {
			t.Errorf("a %s container without the component", registrarName)
		}
		dir, _ := flagValue(p.Args, "--registration-dir")
		if host := hostPathOf(spec, p, dir); dir == "" || host != registry {
			t.Errorf("paddock's --registration-dir=%q is host path %q, want %s", dir, host, registry)
		}
		if rp, _ := flagValue(p.Args, "--kubelet-registration-path"); rp != sock {
			t.Errorf("paddock's --kubelet-registration-path=%q, but its socket is host path %q", rp, sock)
		}
		return
	}
	if len(regs) != 1 {
		t.Fatalf("%d %s containers, want 1", len(regs), registrarName)
	}
	r := container(spec, registrarName)
	who := "node container " + registrarName
	checkImage(t, who, r.Image, registrarImage, "v2.")
	if slices.ContainsFunc(p.Args, isRegistrationFlag) {
		t.Errorf("paddock still registers itself beside %s: %v", registrarName, p.Args)
	}
	for _, m := range p.VolumeMounts {
		if hostPathOf(spec, p, m.MountPath) == registry {
			t.Errorf("paddock still mounts plugins_registry at %s", m.MountPath)
		}
	}
	addr, _ := flagValue(r.Args, "--csi-address")
	if hostPathOf(spec, r, addr) != sock {
		t.Errorf("%s: --csi-address=%s is host path %q, paddock's socket %q", who, addr, hostPathOf(spec, r, addr), sock)
	}
	if rp, _ := flagValue(r.Args, "--kubelet-registration-path"); rp != sock {
		t.Errorf("%s: --kubelet-registration-path=%q, want %s", who, rp, sock)
	}
	if dir := hostPathOf(spec, r, "/registration"); dir != registry {
		t.Errorf("%s: /registration is host path %q, want %s", who, dir, registry)
	}
	// On the host network: the node's loopback, probed there.
	checkHTTPEndpoint(t, who, spec, r, "/healthz", "127.0.0.1")
	checkSidecarSecurity(t, who, spec, r)
}

// checkQuota: with the quota component, the controller's paddock container (and it alone) has
// --quota-credentials naming the directory where the Secret paddock-quota-client is mounted,
// read-only and required; its arguments are the base's and that flag last, its securityContext the
// base's. Without the component, none of it.
func checkQuota(t *testing.T, deploy *appsv1.Deployment, ds *appsv1.DaemonSet, base []document, present bool) {
	t.Helper()
	spec := &deploy.Spec.Template.Spec
	p := container(spec, "paddock")
	if p == nil {
		t.Fatal("no paddock container in the controller")
	}
	baseP := container(&controllerDeployment(t, base).Spec.Template.Spec, "paddock")
	others := slices.DeleteFunc(slices.Clone(spec.Containers), func(c corev1.Container) bool { return c.Name == "paddock" })
	for _, c := range slices.Concat(others, ds.Spec.Template.Spec.Containers) {
		if _, ok := flagValue(c.Args, quotaFlag); ok {
			t.Errorf("container %s has %s: only the controller's paddock needs it", c.Name, quotaFlag)
		}
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == quotaVolume }) {
			t.Errorf("container %s mounts %s: only the controller's paddock needs the client key", c.Name, quotaVolume)
		}
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			t.Errorf("the node DaemonSet has Secret volume %s", v.Name)
		}
	}
	dir, ok := flagValue(p.Args, quotaFlag)
	v := podVolume(spec, quotaVolume)
	if !present {
		if ok || v != nil {
			t.Errorf("without the %s component: %s=%q, volume %+v", quotaComp, quotaFlag, dir, v)
		}
		return
	}
	if want := append(slices.Clone(baseP.Args), quotaFlag+"="+quotaDir); !slices.Equal(p.Args, want) {
		t.Errorf("paddock's args\n  %v\nwant the base's and %s=%s last\n  %v", p.Args, quotaFlag, quotaDir, want)
	}
	var mount *corev1.VolumeMount
	for i, m := range p.VolumeMounts {
		if m.MountPath == dir {
			mount = &p.VolumeMounts[i]
		}
	}
	if mount == nil || mount.Name != quotaVolume || !mount.ReadOnly || mount.SubPath != "" || mount.MountPropagation != nil {
		t.Fatalf("%s=%s: paddock's mount there is %+v; want volume %s, read-only, whole (no subPath: renewals reach it)",
			quotaFlag, dir, mount, quotaVolume)
	}
	if v == nil || v.Secret == nil || v.Secret.SecretName != quotaSecret || v.Secret.Optional == nil || *v.Secret.Optional ||
		len(v.Secret.Items) > 0 || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0 {
		t.Errorf("volume %s is %+v; want Secret %s, optional: false, all its keys, readable by its owner alone", quotaVolume, v, quotaSecret)
	}
	if !equality.Semantic.DeepEqual(p.SecurityContext, baseP.SecurityContext) {
		t.Errorf("the quota component changes paddock's securityContext:\n%s", diff.Diff(baseP.SecurityContext, p.SecurityContext))
	}
}

// TestQuotaAnyOrder: the quota component finds paddock's container by name, so it builds the same
// before or after the components that add sidecars (which put them first in the list), but for the
// order of the containers, which means nothing.
func TestQuotaAnyOrder(t *testing.T) {
	fsys := deployFS(t)
	first := combo{components: []string{quotaComp, registrarName, "snapshots", "resizer"}}
	last := combo{components: []string{registrarName, "snapshots", "resizer", quotaComp}}
	docs := first.render(t, fsys)
	checkQuota(t, controllerDeployment(t, docs), nodeDaemonSet(t, docs), build(t, baseDir), true)
	sameDocs(t, containersByName(docs), containersByName(last.render(t, fsys)),
		"with "+quotaComp+" listed first, compared with it last (containers in name order)")
}

// containersByName is docs with each workload's containers sorted by name, on copies.
func containersByName(docs []document) []document {
	out := make([]document, 0, len(docs))
	for _, d := range docs {
		d.obj = d.obj.DeepCopyObject()
		if spec := podSpec(d.obj); spec != nil {
			slices.SortFunc(spec.Containers, func(a, b corev1.Container) int { return strings.Compare(a.Name, b.Name) })
		}
		out = append(out, d)
	}
	return out
}

// TestKubeletDirGoesLast shows why kubelet-dir must follow node-driver-registrar in components:
// listed before it, the registrar the later component adds still registers /var/lib/kubelet's path.
func TestKubeletDirGoesLast(t *testing.T) {
	fsys := deployFS(t)
	dir := "/deploy/combos/wrong-order"
	if err := fsys.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../kubernetes\n  - kubelet-dir.yaml\n" +
		"components:\n  - ../../components/kubelet-dir\n  - ../../components/node-driver-registrar\n"
	if err := fsys.WriteFile(dir+"/"+kustomization, []byte(k)); err != nil {
		t.Fatal(err)
	}
	if err := fsys.WriteFile(dir+"/kubelet-dir.yaml", []byte(kubeletDirConfigMap("/var/lib/k0s/kubelet"))); err != nil {
		t.Fatal(err)
	}
	// The registrar's "test" of paddock's default registration path fails the build.
	_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err == nil || !strings.Contains(err.Error(), "test") {
		t.Fatalf("kubelet-dir before node-driver-registrar built (%v); want the registrar's test to fail it", err)
	}
}

// ---------- the shipped overlays and components ----------

// TestOverlays builds each overlay in overlays/: an overlay only composes (the base, components of
// deploy/components, kubelet-dir last with its root dir in a local-config ConfigMap, no patches of
// its own), uses every file in it, and builds exactly the combination it lists, which
// TestComponentCombinations checks.
func TestOverlays(t *testing.T) {
	entries, err := os.ReadDir(overlaysDir)
	if err != nil {
		t.Fatal(err)
	}
	fsys := deployFS(t)
	seen := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			t.Errorf("%s/%s: overlays/ holds only overlay directories", overlaysDir, e.Name())
			continue
		}
		dir := filepath.Join(overlaysDir, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			c := overlayCombo(t, dir)
			seen[c.String()] = true
			sameDocs(t, build(t, dir), c.render(t, fsys), "of "+dir+", compared with combination "+c.String())
		})
	}
	for _, want := range []combo{
		{components: []string{registrarName}},
		{components: []string{"snapshots"}},
		{components: []string{"resizer"}},
		{components: []string{quotaComp}},
		{kubeletDir: "/var/lib/k0s/kubelet"},
		{kubeletDir: "/var/snap/microk8s/common/var/lib/kubelet"},
	} {
		if !seen[want.String()] {
			t.Errorf("no overlay for %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(registrarOverlay, kustomization)); err != nil {
		t.Error(err)
	}
}

// overlayCombo reads the combination the overlay in dir lists, failing the test where it does
// more than compose.
func overlayCombo(t *testing.T, dir string) combo {
	t.Helper()
	k := readKustomization(t, dir)
	used := map[string]bool{filepath.Join(dir, kustomization): true}
	var c combo
	for i, r := range k.Resources {
		switch {
		case i == 0 && r == "../../"+baseDir:
		case i > 0 && r == "kubelet-dir.yaml":
			used[filepath.Join(dir, r)] = true
			c.kubeletDir = readKubeletDir(t, filepath.Join(dir, r))
		default:
			t.Errorf("%s: resource %q; an overlay has the base ../../%s first, and at most a kubelet-dir.yaml", dir, r, baseDir)
		}
	}
	for i, comp := range k.Components {
		name, ok := strings.CutPrefix(comp, "../../"+componentsDir+"/")
		if !ok || strings.Contains(name, "/") {
			t.Errorf("%s: component %q is not one of ../../%s", dir, comp, componentsDir)
			continue
		}
		if name == kubeletDirComp {
			if i != len(k.Components)-1 {
				t.Errorf("%s: %s must be the last component", dir, kubeletDirComp)
			}
			continue
		}
		c.components = append(c.components, name)
	}
	if (c.kubeletDir != "") != slices.Contains(k.Components, "../../"+componentsDir+"/"+kubeletDirComp) {
		t.Errorf("%s: kubelet-dir.yaml and the %s component go together", dir, kubeletDirComp)
	}
	if len(k.Patches) > 0 || len(k.Images) > 0 || len(k.Replacements) > 0 || k.Namespace != "" {
		t.Errorf("%s: an overlay only composes; patches, images, replacements and namespace belong in a component", dir)
	}
	for _, f := range yamlFiles(t, dir) {
		if !used[f] {
			t.Errorf("%s is not used by %s", f, filepath.Join(dir, kustomization))
		}
	}
	return c
}

// readKubeletDir reads kubelet's root dir from an overlay's kubelet-dir.yaml: the local-config
// ConfigMap kubelet-dir reads, never applied.
func readKubeletDir(t *testing.T, file string) string {
	t.Helper()
	docs := loadFile(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: %d objects, want the ConfigMap %s", file, len(docs), kubeletDirMap)
	}
	cm, ok := docs[0].obj.(*corev1.ConfigMap)
	if !ok || cm.Name != kubeletDirMap || cm.Annotations["config.kubernetes.io/local-config"] != "true" {
		t.Fatalf("%s: want ConfigMap %s annotated config.kubernetes.io/local-config: \"true\"", file, kubeletDirMap)
	}
	dir := cm.Data["kubeletDir"]
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == defaultKubeletDir {
		t.Errorf("%s: kubeletDir %q is not a clean absolute path other than %s", file, dir, defaultKubeletDir)
	}
	return dir
}

// loadFile is load for one file.
func loadFile(t *testing.T, file string) []document {
	t.Helper()
	var out []document
	for _, d := range load(t, filepath.Dir(file)) {
		if strings.HasPrefix(d.where, file+" ") {
			out = append(out, d)
		}
	}
	return out
}

// TestComponents: each directory in components/ is a kustomize Component (kubectl apply -k cannot
// apply it alone; an overlay lists it), uses every file in it, and is among the components
// TestComponentCombinations combines.
func TestComponents(t *testing.T) {
	entries, err := os.ReadDir(componentsDir)
	if err != nil {
		t.Fatal(err)
	}
	known := []string{registrarName, kubeletDirComp, quotaComp}
	for _, s := range sidecars {
		known = append(known, s.component)
	}
	var names []string
	for _, e := range entries {
		dir := filepath.Join(componentsDir, e.Name())
		if !e.IsDir() {
			t.Errorf("%s: components/ holds only component directories", dir)
			continue
		}
		names = append(names, e.Name())
		if !slices.Contains(known, e.Name()) {
			t.Errorf("%s is not among the combined components %v", dir, known)
		}
		k := readKustomization(t, dir)
		if k.Kind != types.ComponentKind || k.APIVersion != types.ComponentVersion {
			t.Errorf("%s: %s/%s, want a %s/%s", dir, k.APIVersion, k.Kind, types.ComponentVersion, types.ComponentKind)
		}
		if k.Namespace != "" {
			t.Errorf("%s: a component must not set namespace (it would apply to everything before it)", dir)
		}
		used := map[string]bool{filepath.Join(dir, kustomization): true}
		for _, r := range k.Resources {
			used[filepath.Join(dir, r)] = true
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				used[filepath.Join(dir, p.Path)] = true
			}
		}
		for _, f := range yamlFiles(t, dir) {
			if !used[f] {
				t.Errorf("%s is not used by %s", f, filepath.Join(dir, kustomization))
			}
		}
	}
	slices.Sort(known)
	if !slices.Equal(names, known) {
		t.Errorf("components %v, want %v", names, known)
	}
}

// TestSnapshotterMatchesTheTestedOne: the csi-snapshotter image is the release of the
// external-snapshotter module the cluster tier runs (test/cluster/tools/go.mod).
func TestSnapshotterMatchesTheTestedOne(t *testing.T) {
	data, err := os.ReadFile("../test/cluster/tools/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/kubernetes-csi/external-snapshotter/v8 (v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("test/cluster/tools/go.mod does not require github.com/kubernetes-csi/external-snapshotter/v8")
	}
	deploy := controllerDeployment(t, build(t, filepath.Join(overlaysDir, "snapshots")))
	c := container(&deploy.Spec.Template.Spec, "csi-snapshotter")
	if c == nil {
		t.Fatal("no csi-snapshotter in overlays/snapshots")
	}
	if want := "registry.k8s.io/sig-storage/csi-snapshotter:" + string(m[1]); c.Image != want {
		t.Errorf("csi-snapshotter image %s, but the cluster tier runs %s", c.Image, want)
	}
}

// TestKubeletOverlay: the kubelet e2e tier runs the base with its own image, which is imported into
// the node's containerd and never pulled, and nothing else changed: what it tests is what users
// install. Its overlay's build is the base's, but for the image and imagePullPolicy: Never of the
// controller's and the node plugin's paddock container.
func TestKubeletOverlay(t *testing.T) {
	readKustomization(t, kubeletOverlay)
	baseDocs, docs := build(t, baseDir), build(t, kubeletOverlay)
	sameObjects(t, docs, baseDocs, "kustomize build "+kubeletOverlay, "the base's objects")
	base := byID(t, baseDocs)
	changed := 0
	for _, d := range docs {
		b, ok := base[objectID(d)]
		if !ok {
			continue // sameObjects said so
		}
		got := d.obj.DeepCopyObject()
		if spec, baseSpec := podSpec(got), podSpec(b.obj); spec != nil && baseSpec != nil {
			for i := range spec.Containers {
				c, bc := &spec.Containers[i], container(baseSpec, spec.Containers[i].Name)
				if c.Name != "paddock" || bc == nil {
					continue // the comparison below shows any difference
				}
				if c.Image != e2eImage || c.ImagePullPolicy != corev1.PullNever {
					t.Errorf("%s: container paddock: image %q, imagePullPolicy %q; want %s, Never",
						d.where, c.Image, c.ImagePullPolicy, e2eImage)
				}
				// The two fields back to the base's: the rest must be equal.
				c.Image, c.ImagePullPolicy = bc.Image, bc.ImagePullPolicy
				changed++
			}
		}
		if !equality.Semantic.DeepEqual(b.obj, got) {
			t.Errorf("%s differs from the base's beyond the paddock image and imagePullPolicy:\n%s",
				d.where, diff.Diff(b.obj, got))
		}
	}
	if changed != 2 {
		t.Errorf("%d paddock containers in the kubelet overlay, want 2 (the controller's and the node plugin's)", changed)
	}
}

// checkDefaultContainer: every Paddock workload names paddock as its default container, so that
// kubectl logs and exec reach it whichever sidecar a component put first in the list.
func checkDefaultContainer(t *testing.T, docs []document) {
	t.Helper()
	for _, d := range docs {
		var meta metav1.ObjectMeta
		switch o := d.obj.(type) {
		case *appsv1.Deployment:
			meta = o.Spec.Template.ObjectMeta
		case *appsv1.DaemonSet:
			meta = o.Spec.Template.ObjectMeta
		default:
			continue
		}
		spec := podSpec(d.obj)
		if got := meta.Annotations["kubectl.kubernetes.io/default-container"]; got != "paddock" ||
			!slices.ContainsFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == got }) {
			t.Errorf("%s: default container %q, want paddock (containers %v)", d.where, got, containerNames(spec))
		}
	}
}

func containerNames(spec *corev1.PodSpec) []string {
	var n []string
	for _, c := range spec.Containers {
		n = append(n, c.Name)
	}
	return n
}
