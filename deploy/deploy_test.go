package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/pkg/volume"
)

const (
	driverName     = "nfs.paddock.dev"
	namespace      = "paddock"
	nameLabel      = "app.kubernetes.io/name"
	componentLabel = "app.kubernetes.io/component"
	baseDir        = "kubernetes"
	examplesDir    = "examples"
	overlaysDir    = "overlays"
	kustomization  = "kustomization.yaml"

	registrarOverlay = "overlays/node-driver-registrar"
	registrarName    = "node-driver-registrar"
	registrarImage   = "registry.k8s.io/sig-storage/csi-node-driver-registrar"
	pluginsRegistry  = "/var/lib/kubelet/plugins_registry"

	paddockImage = "ghcr.io/paddock-csi/paddock"
)

// registrationFlags are paddock's flags for registering itself with kubelet (pkg/registration).
var registrationFlags = []string{"--registration-dir", "--kubelet-registration-path"}

// clusterScoped are the kinds in deploy/ that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CSIDriver": true, "StorageClass": true, "PersistentVolume": true,
}

type document struct {
	where string // file (document index), or built directory: kind name; for messages
	obj   runtime.Object
	gvk   schema.GroupVersionKind
}

func (d document) name() string {
	m, err := meta.Accessor(d.obj)
	if err != nil {
		return ""
	}
	return m.GetName()
}

// yamlFiles lists the YAML files under dir, sorted.
func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

// load decodes every Kubernetes document under dir (kustomization files excepted). A document that
// does not decode to a typed object, or has unknown or duplicate fields, fails the test.
func load(t *testing.T, dir string) []document {
	t.Helper()
	var docs []document
	for _, file := range yamlFiles(t, dir) {
		if filepath.Base(file) == kustomization {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: split documents: %v", file, err)
			}
			if d, ok := decode(t, fmt.Sprintf("%s (document %d)", file, i+1), raw); ok {
				docs = append(docs, d)
			}
		}
	}
	if len(docs) == 0 {
		t.Fatalf("no Kubernetes objects found under %s", dir)
	}
	return docs
}

var strictDecoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Strict: true})

// decode decodes one YAML document into a typed Kubernetes object, strictly (no unknown or duplicate
// fields); false, with the test failed, if it cannot, and false alone for an empty document.
func decode(t *testing.T, where string, raw []byte) (document, bool) {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		t.Errorf("%s: not valid YAML (or a duplicate key): %v", where, err)
		return document{}, false
	}
	if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
		return document{}, false // only comments or "---"
	}
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(js, nil, nil)
	if err != nil {
		t.Errorf("%s: does not decode to a known Kubernetes type: %v", where, err)
		return document{}, false
	}
	if _, isUnknown := obj.(*runtime.Unknown); isUnknown {
		t.Errorf("%s: %v decoded to runtime.Unknown", where, gvk)
		return document{}, false
	}
	if _, _, err := strictDecoder.Decode(js, nil, nil); err != nil {
		t.Errorf("%s: %v: strict decoding: %v", where, gvk, err)
	}
	return document{where: where, obj: obj, gvk: *gvk}, true
}

func TestEveryDocumentDecodes(t *testing.T) {
	// Overlays hold kustomize patches, not whole objects: TestOverlays checks them.
	docs := slices.Concat(load(t, baseDir), load(t, examplesDir))
	for _, d := range docs {
		if d.name() == "" {
			t.Errorf("%s: %s has no metadata.name", d.where, d.gvk.Kind)
		}
	}
	// Go files and README aside, deploy/ holds nothing but these trees (the chart's templates are
	// not Kubernetes YAML until rendered: deploy/helm/test checks them).
	trees := []string{baseDir, examplesDir, overlaysDir, "components", "helm"}
	for _, f := range yamlFiles(t, ".") {
		if !slices.ContainsFunc(trees, func(d string) bool { return strings.HasPrefix(f, d+string(filepath.Separator)) }) {
			t.Errorf("%s: YAML outside %v", f, trees)
		}
	}
}

// readKustomization reads dir's kustomization.yaml as kustomize does (unknown fields refused), and
// fails the test if it uses a field kustomize has deprecated.
func readKustomization(t *testing.T, dir string) *types.Kustomization {
	t.Helper()
	file := filepath.Join(dir, kustomization)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	k := &types.Kustomization{}
	if err := k.Unmarshal(data); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, w := range *k.CheckDeprecatedFields() {
		t.Errorf("%s: %s", file, strings.TrimPrefix(w, "# "))
	}
	return k
}

func TestKustomization(t *testing.T) {
	k := readKustomization(t, baseDir)
	if k.Namespace != namespace {
		t.Errorf("kustomization namespace = %q, want %q", k.Namespace, namespace)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		listed[filepath.Clean(filepath.Join(baseDir, r))] = true
		if _, err := os.Stat(filepath.Join(baseDir, r)); err != nil {
			t.Errorf("kustomization lists %q: %v", r, err)
		}
	}
	for _, f := range yamlFiles(t, baseDir) {
		if filepath.Base(f) != kustomization && !listed[f] {
			t.Errorf("%s is not listed in %s: kubectl apply -k would leave it out", f, kustomization)
		}
	}

	// Every image in the base can be pinned through the kustomization's images: list.
	imageNames := map[string]bool{}
	for _, im := range k.Images {
		imageNames[im.Name] = true
		if im.NewTag == "" && im.NewName == "" && im.Digest == "" {
			t.Errorf("images entry %q sets none of newTag, newName and digest", im.Name)
		}
	}
	if !imageNames["ghcr.io/paddock-csi/paddock"] {
		t.Errorf("kustomization images: has no entry for ghcr.io/paddock-csi/paddock")
	}
	for _, d := range load(t, baseDir) {
		spec := podSpec(d.obj)
		if spec == nil {
			continue
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			name, _, _ := strings.Cut(c.Image, "@")
			if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
				name = name[:i]
			}
			if !imageNames[name] {
				t.Errorf("%s: container %q image %q has no kustomization images: entry", d.where, c.Name, c.Image)
			}
		}
	}
}

func podSpec(obj runtime.Object) *corev1.PodSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &o.Spec.Template.Spec
	case *corev1.Pod:
		return &o.Spec
	}
	return nil
}

// TestBaseObjects checks the base's files as they are (kubectl apply -f would work too);
// TestKustomizeBuild and TestOverlays check what kustomize builds from them.
func TestBaseObjects(t *testing.T) {
	checkObjects(t, load(t, baseDir))
}

// checkObjects: the objects of a whole installation (the base, or an overlay built) are labelled, in
// the right namespace, with the kinds and ServiceAccounts Paddock needs, RBAC that refers to them
// and grants nothing wide, and a CSIDriver, controller and node plugin as Paddock needs them.
func checkObjects(t *testing.T, docs []document) {
	t.Helper()
	serviceAccounts := map[string]bool{}
	roles := map[string]bool{} // "Kind/name"
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.gvk.Kind]++
		m, err := meta.Accessor(d.obj)
		if err != nil {
			t.Fatalf("%s: %v", d.where, err)
		}
		if got := m.GetLabels()[nameLabel]; got != "paddock" {
			t.Errorf("%s: %s %s: label %s = %q, want paddock", d.where, d.gvk.Kind, m.GetName(), nameLabel, got)
		}
		if clusterScoped[d.gvk.Kind] {
			if m.GetNamespace() != "" {
				t.Errorf("%s: cluster-scoped %s %s has namespace %q", d.where, d.gvk.Kind, m.GetName(), m.GetNamespace())
			}
		} else if m.GetNamespace() != namespace {
			t.Errorf("%s: %s %s: namespace %q, want %q", d.where, d.gvk.Kind, m.GetName(), m.GetNamespace(), namespace)
		}
		switch o := d.obj.(type) {
		case *corev1.ServiceAccount:
			serviceAccounts[o.Name] = true
		case *rbacv1.ClusterRole:
			roles["ClusterRole/"+o.Name] = true
		case *rbacv1.Role:
			roles["Role/"+o.Name] = true
		}
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
		"Role", "RoleBinding", "CSIDriver", "Deployment", "DaemonSet", "Service"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s", kind)
		}
	}
	for _, sa := range []string{"paddock-controller", "paddock-node"} {
		if !serviceAccounts[sa] {
			t.Errorf("no ServiceAccount %s", sa)
		}
	}

	for _, d := range docs {
		switch o := d.obj.(type) {
		case *rbacv1.ClusterRoleBinding:
			checkBinding(t, d.where, o.RoleRef, o.Subjects, roles, serviceAccounts)
		case *rbacv1.RoleBinding:
			checkBinding(t, d.where, o.RoleRef, o.Subjects, roles, serviceAccounts)
		case *rbacv1.ClusterRole:
			for _, r := range o.Rules {
				if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
					t.Errorf("%s: ClusterRole %s has a wildcard rule %+v", d.where, o.Name, r)
				}
				if slices.Contains(r.Resources, "leases") {
					t.Errorf("%s: Leases belong in the namespaced Role, not ClusterRole %s", d.where, o.Name)
				}
				if slices.Contains(r.Resources, "secrets") {
					t.Errorf("%s: ClusterRole %s grants access to Secrets", d.where, o.Name)
				}
			}
		case *storagev1.CSIDriver:
			checkCSIDriver(t, d.where, o)
		case *appsv1.Deployment:
			checkWorkload(t, d.where, o.Spec.Selector.MatchLabels, o.Spec.Template, serviceAccounts)
			if o.Spec.Replicas == nil || *o.Spec.Replicas < 2 {
				t.Errorf("%s: controller Deployment should run 2 replicas (leader election)", d.where)
			}
		case *appsv1.DaemonSet:
			checkWorkload(t, d.where, o.Spec.Selector.MatchLabels, o.Spec.Template, serviceAccounts)
			checkNode(t, d.where, o)
		}
	}
}

func checkBinding(t *testing.T, where string, ref rbacv1.RoleRef, subjects []rbacv1.Subject, roles, serviceAccounts map[string]bool) {
	t.Helper()
	if !roles[ref.Kind+"/"+ref.Name] {
		t.Errorf("%s: binding refers to %s %s, not defined beside it", where, ref.Kind, ref.Name)
	}
	for _, s := range subjects {
		if s.Kind != "ServiceAccount" || !serviceAccounts[s.Name] || s.Namespace != namespace {
			t.Errorf("%s: subject %+v is not a ServiceAccount defined beside it", where, s)
		}
		if s.Name == "paddock-node" {
			t.Errorf("%s: the node ServiceAccount must have no API access", where)
		}
	}
}

func checkCSIDriver(t *testing.T, where string, d *storagev1.CSIDriver) {
	t.Helper()
	if d.Name != driverName {
		t.Errorf("%s: CSIDriver name %q, want %q", where, d.Name, driverName)
	}
	if d.Spec.AttachRequired == nil || *d.Spec.AttachRequired {
		t.Errorf("%s: CSIDriver attachRequired must be false", where)
	}
	if d.Spec.PodInfoOnMount == nil || *d.Spec.PodInfoOnMount {
		t.Errorf("%s: CSIDriver podInfoOnMount must be false", where)
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("%s: CSIDriver fsGroupPolicy must be File", where)
	}
	if !slices.Equal(d.Spec.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}) {
		t.Errorf("%s: CSIDriver volumeLifecycleModes = %v, want [Persistent]", where, d.Spec.VolumeLifecycleModes)
	}
}

// checkWorkload: the selector picks the template, the template has both labels, the service account
// exists, and every probe names a declared port.
func checkWorkload(t *testing.T, where string, selector map[string]string, tmpl corev1.PodTemplateSpec, serviceAccounts map[string]bool) {
	t.Helper()
	for k, v := range selector {
		if tmpl.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template", where, k, v)
		}
	}
	if tmpl.Labels[nameLabel] != "paddock" || tmpl.Labels[componentLabel] == "" {
		t.Errorf("%s: pod template labels %v lack %s=paddock or %s", where, tmpl.Labels, nameLabel, componentLabel)
	}
	if !serviceAccounts[tmpl.Spec.ServiceAccountName] {
		t.Errorf("%s: serviceAccountName %q is not defined beside it", where, tmpl.Spec.ServiceAccountName)
	}
	for _, c := range tmpl.Spec.Containers {
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.StrVal != "" && !ports[p.HTTPGet.Port.StrVal] {
				t.Errorf("%s: container %s: probe port %q is not declared", where, c.Name, p.HTTPGet.Port.StrVal)
			}
		}
	}
}

func checkNode(t *testing.T, where string, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("%s: node plugin needs hostNetwork with dnsPolicy ClusterFirstWithHostNet", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: node plugin must not mount a ServiceAccount token", where)
	}
	bidirectional := false
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/var/lib/kubelet" && m.MountPropagation != nil &&
				*m.MountPropagation == corev1.MountPropagationBidirectional {
				bidirectional = true
				if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
					t.Errorf("%s: container %s: Bidirectional propagation requires privileged", where, c.Name)
				}
			}
		}
	}
	if !bidirectional {
		t.Errorf("%s: no container mounts /var/lib/kubelet with Bidirectional propagation", where)
	}
}

func TestExamples(t *testing.T) {
	docs := load(t, examplesDir)
	classes := map[string]*storagev1.StorageClass{}
	wffc := false
	for _, d := range docs {
		sc, ok := d.obj.(*storagev1.StorageClass)
		if !ok {
			continue
		}
		classes[sc.Name] = sc
		if sc.Provisioner != driverName {
			t.Errorf("%s: StorageClass %s: provisioner %q, want %q", d.where, sc.Name, sc.Provisioner, driverName)
		}
		// The parameters are validated by the driver's own parser (pkg/volume, the one place that
		// knows the keys), and each subDir template must expand for an ordinary claim.
		for _, k := range []string{volume.ParamServer, volume.ParamShare, volume.ParamSubDir} {
			if sc.Parameters[k] == "" {
				t.Errorf("%s: StorageClass %s: parameter %s is missing", d.where, sc.Name, k)
			}
		}
		if p, err := volume.ParseParams(sc.Parameters); err != nil {
			t.Errorf("%s: StorageClass %s: the driver refuses its parameters: %v", d.where, sc.Name, err)
		} else if _, err := p.Volume("pvc-0b5e4a0c-1d2e-4f60-8a9b-123456789abc", volume.TemplateVars{
			PVCName: "data", PVCNamespace: "shop",
			Labels: map[string]string{"team": "web"}, Annotations: map[string]string{},
		}); err != nil {
			t.Errorf("%s: StorageClass %s: no volume for claim shop/data (label team=web): %v", d.where, sc.Name, err)
		}
		if !slices.Contains(sc.MountOptions, "nfsvers=4.1") {
			t.Errorf("%s: StorageClass %s: mountOptions %v lack nfsvers=4.1", d.where, sc.Name, sc.MountOptions)
		}
		if sc.AllowVolumeExpansion == nil || *sc.AllowVolumeExpansion {
			t.Errorf("%s: StorageClass %s: allowVolumeExpansion must be false", d.where, sc.Name)
		}
		if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
			wffc = true
		}
	}
	for _, name := range []string{"paddock-delete", "paddock-archive", "paddock-retain", "paddock-retain-data", "paddock-recycle"} {
		if classes[name] == nil {
			t.Errorf("examples lack StorageClass %s", name)
		}
	}
	if !wffc {
		t.Errorf("no example StorageClass uses volumeBindingMode WaitForFirstConsumer")
	}

	for _, d := range docs {
		switch o := d.obj.(type) {
		case *corev1.PersistentVolumeClaim:
			if sc := o.Spec.StorageClassName; sc != nil && *sc != "" && classes[*sc] == nil {
				t.Errorf("%s: PVC %s uses StorageClass %q, not among the examples", d.where, o.Name, *sc)
			}
		case *corev1.PersistentVolume:
			if o.Spec.CSI == nil || o.Spec.CSI.Driver != driverName || o.Spec.CSI.VolumeHandle == "" {
				t.Errorf("%s: PV %s must be a CSI volume of %s with a volumeHandle", d.where, o.Name, driverName)
				continue
			}
			for _, k := range []string{volume.ParamServer, volume.ParamShare, volume.ParamSubDir} {
				if o.Spec.CSI.VolumeAttributes[k] == "" {
					t.Errorf("%s: PV %s: volumeAttributes lack %s", d.where, o.Name, k)
				}
			}
			if _, err := volume.FromContext(o.Spec.CSI.VolumeHandle, o.Spec.CSI.VolumeAttributes); err != nil {
				t.Errorf("%s: PV %s: the driver refuses its volumeAttributes: %v", d.where, o.Name, err)
			}
		}
	}
}

// flagValue is the value of --name=value in args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func podVolume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// hostPathOf maps a path inside container c to the host path it is, through c's hostPath mounts;
// "" if no hostPath mount holds it.
func hostPathOf(spec *corev1.PodSpec, c *corev1.Container, p string) string {
	best, host := "", ""
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || len(m.MountPath) <= len(best) {
			continue
		}
		if v := podVolume(spec, m.Name); v != nil && v.HostPath != nil {
			best, host = m.MountPath, filepath.Join(v.HostPath.Path, rel)
		}
	}
	return host
}

func isRegistrar(c corev1.Container) bool {
	return c.Name == registrarName || strings.HasPrefix(c.Image, registrarImage)
}

func nodeDaemonSet(t *testing.T, docs []document) *appsv1.DaemonSet {
	t.Helper()
	var found *appsv1.DaemonSet
	for _, d := range docs {
		if ds, ok := d.obj.(*appsv1.DaemonSet); ok {
			if found != nil {
				t.Fatalf("more than one DaemonSet: %s and %s", found.Name, ds.Name)
			}
			found = ds
		}
	}
	if found == nil {
		t.Fatal("no DaemonSet")
	}
	return found
}

// TestNodeRegistersItself: the base's node plugin registers with kubelet itself, without the
// node-driver-registrar sidecar: its registration socket lands in kubelet's plugins_registry, and the
// CSI socket path it gives kubelet is where its own --endpoint is on the host.
func TestNodeRegistersItself(t *testing.T) {
	ds := nodeDaemonSet(t, build(t, baseDir))
	spec := &ds.Spec.Template.Spec
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if isRegistrar(c) {
			t.Errorf("base DaemonSet has a %s container (%s): the node plugin registers itself", registrarName, c.Image)
		}
	}
	p := container(spec, "paddock")
	if p == nil {
		t.Fatal("base DaemonSet has no paddock container")
	}
	dir, ok := flagValue(p.Args, "--registration-dir")
	if !ok {
		t.Fatalf("paddock args %v lack --registration-dir", p.Args)
	}
	if host := hostPathOf(spec, p, dir); host != pluginsRegistry {
		t.Errorf("--registration-dir=%s is host path %q in the paddock container, want kubelet's %s", dir, host, pluginsRegistry)
	}
	endpoint, _ := flagValue(p.Args, "--endpoint")
	sock, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		t.Fatalf("--endpoint=%q: registration needs a unix socket", endpoint)
	}
	kubeletPath, _ := flagValue(p.Args, "--kubelet-registration-path")
	if host := hostPathOf(spec, p, sock); host == "" || host != kubeletPath {
		t.Errorf("--kubelet-registration-path=%q, but --endpoint=%s is host path %q", kubeletPath, endpoint, host)
	}
	if driver, _ := flagValue(p.Args, "--driver-name"); !strings.Contains(kubeletPath, "/plugins/"+driver+"/") {
		t.Errorf("--kubelet-registration-path=%q is not in kubelet's plugins/%s/ directory", kubeletPath, driver)
	}
	// /healthz now fails until kubelet confirms: the liveness probe must give it time.
	lp := p.LivenessProbe
	if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/healthz" {
		t.Fatalf("paddock has no /healthz liveness probe")
	}
	if budget := lp.InitialDelaySeconds + lp.PeriodSeconds*lp.FailureThreshold; lp.InitialDelaySeconds < 20 || budget < 120 {
		t.Errorf("liveness probe: initialDelaySeconds %d, %d s before the first restart; a slow kubelet needs >= 20 and >= 120",
			lp.InitialDelaySeconds, budget)
	}
}

// allowedCaps are the capabilities each non-privileged container of Paddock's may add beyond none
// (every one drops ALL); docs/install.md ("Privileges") says why for each.
var allowedCaps = map[string][]corev1.Capability{
	"paddock-controller/paddock": {"SYS_ADMIN", "NET_BIND_SERVICE", "CHOWN", "FOWNER", "FSETID", "DAC_OVERRIDE", "MKNOD"},
}

// TestHardening: no container has a privilege its work does not need. Only the node plugin, which
// Kubernetes allows Bidirectional propagation only when privileged, is privileged; every other
// container drops all capabilities and adds only its listed ones, runs under the runtime's seccomp
// profile with a read-only root, and cannot gain privileges (unless it adds SYS_ADMIN, beside which
// Kubernetes refuses allowPrivilegeEscalation: false). A pod on the host network serves /metrics and
// /healthz on the node's loopback only, and kubelet probes it there.
func TestHardening(t *testing.T) {
	checkHardening(t, build(t, baseDir))
}

func checkHardening(t *testing.T, docs []document) {
	t.Helper()
	seen := 0
	for _, d := range docs {
		spec := podSpec(d.obj)
		if spec == nil {
			continue
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			seen++
			who := d.name() + "/" + c.Name
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: container %s has no securityContext", d.where, c.Name)
				continue
			}
			privileged := sc.Privileged != nil && *sc.Privileged
			bidirectional := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional
			})
			if privileged {
				if !bidirectional {
					t.Errorf("%s: container %s is privileged without needing Bidirectional mount propagation", d.where, c.Name)
				}
			} else {
				checkUnprivileged(t, d.where, who, spec, c)
			}
			if !spec.HostNetwork {
				continue
			}
			// On the host network a listener on every address is reachable from every network the
			// node is on.
			if ep, ok := flagValue(c.Args, "--http-endpoint"); ok {
				if host, _, err := net.SplitHostPort(ep); err != nil || (host != "127.0.0.1" && host != "::1") {
					t.Errorf("%s: container %s: --http-endpoint=%s on the host network; want 127.0.0.1:PORT", d.where, c.Name, ep)
				} else {
					for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
						if p != nil && p.HTTPGet != nil && p.HTTPGet.Host != host {
							t.Errorf("%s: container %s: probe of %s goes to host %q (the pod IP), where nothing listens; want %s",
								d.where, c.Name, p.HTTPGet.Path, p.HTTPGet.Host, host)
						}
					}
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("no containers")
	}
}

func checkUnprivileged(t *testing.T, where, who string, spec *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	seccomp := sc.SeccompProfile
	if seccomp == nil && spec.SecurityContext != nil {
		seccomp = spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: container %s: seccompProfile %v, want RuntimeDefault (on the container or the pod)", where, c.Name, seccomp)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", where, c.Name)
	}
	var add []corev1.Capability
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: container %s does not drop ALL capabilities", where, c.Name)
	}
	if sc.Capabilities != nil {
		add = sc.Capabilities.Add
	}
	for _, cp := range add {
		if !slices.Contains(allowedCaps[who], cp) {
			t.Errorf("%s: container %s adds capability %s, not among its allowed %v", where, c.Name, cp, allowedCaps[who])
		}
	}
	escalation := sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation
	if escalation && !slices.Contains(add, "SYS_ADMIN") {
		t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
	}
	// The runtime's default AppArmor profile denies mount(2); nothing else needs it off.
	if ap := sc.AppArmorProfile; ap != nil && ap.Type == corev1.AppArmorProfileTypeUnconfined && !slices.Contains(add, "SYS_ADMIN") {
		t.Errorf("%s: container %s runs without AppArmor but mounts nothing", where, c.Name)
	}
}

// TestPrivilegesDocumented: every capability a container adds, and the node plugin's privileged mode,
// has its row in docs/install.md's privileges table (which says why).
func TestPrivilegesDocumented(t *testing.T) {
	data, err := os.ReadFile("../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Privileges")
	if !ok {
		t.Fatal(`docs/install.md has no "## Privileges" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]string{} // "container privilege" -> the row
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) < 3 {
			continue
		}
		rows[strings.TrimSpace(cells[0])+" "+strings.Trim(strings.TrimSpace(cells[1]), "`")] = line
	}
	for _, d := range build(t, baseDir) {
		spec := podSpec(d.obj)
		if spec == nil {
			continue
		}
		for _, c := range spec.Containers {
			who := d.name() + "/" + c.Name
			var need []string
			if sc := c.SecurityContext; sc != nil {
				if sc.Privileged != nil && *sc.Privileged {
					need = append(need, "privileged")
				}
				if sc.Capabilities != nil {
					for _, cp := range sc.Capabilities.Add {
						need = append(need, string(cp))
					}
				}
				if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
					need = append(need, "appArmorProfile: Unconfined")
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					need = append(need, "writable root filesystem")
				}
			}
			for _, p := range need {
				if rows[who+" "+p] == "" {
					t.Errorf("docs/install.md, Privileges: no row %q | %q (container %s of %s)", who, p, c.Name, d.where)
				}
			}
		}
	}
}

// TestPinnedImages: every image in what users apply (the base, the examples, every overlay) names a
// tag or a digest, and never latest.
func TestPinnedImages(t *testing.T) {
	dirs := []string{baseDir}
	entries, err := os.ReadDir(overlaysDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(overlaysDir, e.Name()))
		}
	}
	var docs []document
	for _, dir := range dirs {
		docs = append(docs, build(t, dir)...)
	}
	docs = append(docs, load(t, examplesDir)...)
	docs = append(docs, load(t, baseDir)...)
	for _, d := range docs {
		spec := podSpec(d.obj)
		if spec == nil {
			continue
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			if !pinned(c.Image) {
				t.Errorf("%s: container %s: image %q is not pinned to a tag other than latest", d.where, c.Name, c.Image)
			}
		}
	}
}

func pinned(image string) bool {
	if _, digest, ok := strings.Cut(image, "@"); ok {
		return strings.HasPrefix(digest, "sha256:")
	}
	i := strings.LastIndex(image, ":")
	return i > strings.LastIndex(image, "/") && image[i+1:] != "latest"
}

// TestVersion: VERSION is the one release number. The Makefile stamps it into the binary (paddock
// --version prints it), the base's image tag is it (in kustomization.yaml and in the files, for
// kubectl apply -f), the Helm chart's appVersion is it and its version the same without the v, and
// CHANGELOG.md has its section.
func TestVersion(t *testing.T) {
	data, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(data))
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`).MatchString(version) || string(data) != version+"\n" {
		t.Fatalf("VERSION is %q; want one line vMAJOR.MINOR.PATCH[-PRE]", data)
	}
	semver := strings.TrimPrefix(version, "v")

	k := readKustomization(t, baseDir)
	for _, im := range k.Images {
		if im.Name == paddockImage && im.NewTag != version {
			t.Errorf("%s/%s: images: %s newTag %q, want VERSION %s", baseDir, kustomization, im.Name, im.NewTag, version)
		}
	}
	for _, d := range load(t, baseDir) {
		if spec := podSpec(d.obj); spec != nil {
			for _, c := range spec.Containers {
				if name, tag, _ := strings.Cut(c.Image, ":"); name == paddockImage && tag != version {
					t.Errorf("%s: container %s image %s, want tag %s", d.where, c.Name, c.Image, version)
				}
			}
		}
	}

	chart := struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}{}
	if data, err := os.ReadFile("helm/paddock/Chart.yaml"); err != nil {
		t.Error(err)
	} else if err := yaml.Unmarshal(data, &chart); err != nil {
		t.Errorf("helm/paddock/Chart.yaml: %v", err)
	} else if chart.AppVersion != version || chart.Version != semver {
		t.Errorf("helm/paddock/Chart.yaml: version %q, appVersion %q; want %s and %s", chart.Version, chart.AppVersion, semver, version)
	}

	if data, err := os.ReadFile("../CHANGELOG.md"); err != nil {
		t.Error(err)
	} else if !regexp.MustCompile(`(?m)^## \[` + regexp.QuoteMeta(semver) + `\] - [0-9]{4}-[0-9]{2}-[0-9]{2}$`).Match(data) {
		t.Errorf("CHANGELOG.md has no section ## [%s] - YYYY-MM-DD", semver)
	}

	// The binary as the Makefile builds it (guest-binaries' flags, so make test builds it once).
	ldflags := makeVar(t, "LDFLAGS")
	if !strings.Contains(ldflags, "-X main.version="+version) {
		t.Errorf("the Makefile's LDFLAGS %q do not stamp main.version=%s", ldflags, version)
	}
	bin := filepath.Join(t.TempDir(), "paddock")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "../cmd/paddock")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "paddock "+version {
		t.Errorf("paddock --version: %q (%v), want %q", got, err, "paddock "+version)
	}
}

// makeVar is the value of a variable of the repository's Makefile, as make computes it (VERSION
// cleared from the environment, as make test has it).
func makeVar(t *testing.T, name string) string {
	t.Helper()
	cmd := exec.Command("make", "-s", "--no-print-directory", "-C", "..", "--eval", "print-var: ; @echo $("+name+")", "print-var")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VERSION=") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make print-var %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}
