package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/pkg/quota"
	"github.com/paddock-csi/paddock/pkg/quota/rpc"
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
		if filepath.Base(file) != kustomization {
			docs = append(docs, decodeFile(t, file)...)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("no Kubernetes objects found under %s", dir)
	}
	return docs
}

// decodeFile decodes every document of one YAML file, as load does.
func decodeFile(t *testing.T, file string) []document {
	t.Helper()
	var docs []document
	for i, raw := range yamlDocuments(t, file) {
		if d, ok := decode(t, fmt.Sprintf("%s (document %d)", file, i+1), raw); ok {
			docs = append(docs, d)
		}
	}
	return docs
}

// yamlDocuments splits a YAML file into its documents.
func yamlDocuments(t *testing.T, file string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: split documents: %v", file, err)
		}
		out = append(out, raw)
	}
}

var strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Strict: true})

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
	// not Kubernetes YAML until rendered: deploy/helm/test checks them; the quota agent's examples
	// are checked by the TestQuota* tests).
	trees := []string{baseDir, examplesDir, overlaysDir, "components", "helm", quotaAgentDir}
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
	// The in-cluster quota agent example (quota-agent/quota-agent.yaml says why).
	"paddock-quota-agent/quota-agent": {"SYS_ADMIN", "FOWNER", "DAC_OVERRIDE"},
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
	docs = append(docs, decodeFile(t, quotaAgentManifest)...)
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

	// The binary as the Makefile builds it.
	if ldflags := makeVar(t, "LDFLAGS"); !strings.Contains(ldflags, "-X main.version="+version) {
		t.Errorf("the Makefile's LDFLAGS %q do not stamp main.version=%s", ldflags, version)
	}
	out, err := exec.Command(paddockBinary(t), "--version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "paddock "+version {
		t.Errorf("paddock --version: %q (%v), want %q", got, err, "paddock "+version)
	}
}

var builtBinary struct {
	once     sync.Once
	dir, bin string
	err      error
}

// paddockBinary builds cmd/paddock once for the tests that run it, as the Makefile does
// (guest-binaries' flags, so make test builds it once), and returns its path. TestMain removes it.
func paddockBinary(t *testing.T) string {
	t.Helper()
	b := &builtBinary
	ldflags := makeVar(t, "LDFLAGS")
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "paddock-deploy-test"); b.err != nil {
			return
		}
		b.bin = filepath.Join(b.dir, "paddock")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", b.bin, "../cmd/paddock")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinary.dir != "" {
		os.RemoveAll(builtBinary.dir)
	}
	os.Exit(code)
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

// ---------- the quota agent's examples (quota-agent/) ----------

const (
	quotaAgentDir      = "quota-agent"
	quotaAgentManifest = quotaAgentDir + "/quota-agent.yaml"
	quotaAgentUnit     = quotaAgentDir + "/paddock-quota-agent.service"
	quotaClass         = quotaAgentDir + "/paddock-quota.yaml"
	quotaCertManager   = quotaAgentDir + "/cert-manager.yaml"
	quotaAgentName     = "paddock-quota-agent"
	quotaAgentBin      = "/usr/local/bin/paddock"
)

// quotaAgentFlags are the flags of paddock the agent's examples may use: the quota agent's own
// (cmd/paddock/quota.go), --mode, --http-endpoint and klog's -v. The tests cannot import package
// main; TestQuotaAgentUnit checks each name against the built binary's --help.
var quotaAgentFlags = []string{"mode", "quota-credentials", "quota-export-roots", "quota-listen",
	"quota-project-ids", "quota-allowed-clients", "http-endpoint", "v"}

// agentFlags parses a quota agent's arguments (--name=value each) into name -> value, failing the
// test on a flag that is not among quotaAgentFlags, one given twice, or one without a value.
func agentFlags(t *testing.T, who string, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-") || !ok:
			t.Errorf("%s: argument %q is not -name=value", who, a)
		case !slices.Contains(quotaAgentFlags, name):
			t.Errorf("%s: flag %q is not one of the quota agent's %v", who, name, quotaAgentFlags)
		case out[name] != "":
			t.Errorf("%s: flag %q given twice", who, name)
		default:
			out[name] = value
		}
	}
	if out["mode"] != "quota-agent" {
		t.Errorf("%s: --mode=%q, want quota-agent", who, out["mode"])
	}
	for _, f := range []string{"quota-credentials", "quota-export-roots", "quota-allowed-clients"} {
		if out[f] == "" {
			t.Errorf("%s: no --%s", who, f)
		}
	}
	for _, r := range splitFlag(out["quota-export-roots"]) {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" {
			t.Errorf("%s: export root %q is not a clean absolute path other than /", who, r)
		}
	}
	if _, err := listenPort(out); err != nil {
		t.Errorf("%s: %v", who, err)
	}
	return out
}

// splitFlag is a comma-separated flag value as paddock splits it (cmd/paddock's splitList).
func splitFlag(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// listenPort is the port of the agent's --quota-listen (its default :9820 when not given).
func listenPort(flags map[string]string) (string, error) {
	l, ok := flags["quota-listen"]
	if !ok {
		l = ":9820"
	}
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return "", fmt.Errorf("--quota-listen=%q: %v", l, err)
	}
	return port, nil
}

// quotaAgentExample is the in-cluster agent's Deployment, its container and its Service.
func quotaAgentExample(t *testing.T) (docs []document, dep *appsv1.Deployment, c *corev1.Container, svc *corev1.Service) {
	t.Helper()
	docs = decodeFile(t, quotaAgentManifest)
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.gvk.Kind]++
		switch o := d.obj.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		}
	}
	if want := map[string]int{"ServiceAccount": 1, "Deployment": 1, "Service": 1}; !maps.Equal(kinds, want) {
		t.Fatalf("%s: objects %v, want %v", quotaAgentManifest, kinds, want)
	}
	c = container(&dep.Spec.Template.Spec, "quota-agent")
	if c == nil || len(dep.Spec.Template.Spec.Containers) != 1 || len(dep.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("%s: the Deployment's containers are not quota-agent alone", quotaAgentManifest)
	}
	return docs, dep, c, svc
}

// TestQuotaAgentManifest: the in-cluster agent's example is Paddock's (labels, namespace), as hardened
// as Paddock's own containers (checkHardening, with only its three capabilities), on the base's
// image, pinned to one node, and wired up: the export roots are hostPaths at the same path,
// propagation None; the credentials are the agent's Secret, read-only and whole; the Service, the
// ports, the probes and --quota-listen agree; the Service selects the agent and nothing of the base.
func TestQuotaAgentManifest(t *testing.T) {
	docs, dep, c, svc := quotaAgentExample(t)
	serviceAccounts := map[string]bool{}
	for _, d := range docs {
		m, _ := meta.Accessor(d.obj)
		if m.GetLabels()[nameLabel] != "paddock" || m.GetNamespace() != namespace {
			t.Errorf("%s: %s %s: labels %v, namespace %q; want %s=paddock in %s", d.where, d.gvk.Kind, m.GetName(),
				m.GetLabels(), m.GetNamespace(), nameLabel, namespace)
		}
		if sa, ok := d.obj.(*corev1.ServiceAccount); ok {
			serviceAccounts[sa.Name] = true
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("%s: ServiceAccount %s mounts a token; the agent has no API access", d.where, sa.Name)
			}
		}
	}
	where := quotaAgentManifest + ": Deployment " + dep.Name
	spec := &dep.Spec.Template.Spec
	checkWorkload(t, where, dep.Spec.Selector.MatchLabels, dep.Spec.Template, serviceAccounts)
	checkHardening(t, docs)
	if dep.Name != quotaAgentName || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || spec.NodeSelector["kubernetes.io/hostname"] == "" {
		t.Errorf("%s: want %s, one replica pinned with a kubernetes.io/hostname nodeSelector (the agent of one node's filesystem)", where, quotaAgentName)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC || (spec.HostUsers != nil && !*spec.HostUsers) {
		t.Errorf("%s: hostNetwork, hostPID, hostIPC or hostUsers: false (the kernel changes project IDs only from the host's user namespace)", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a ServiceAccount token", where)
	}
	sc := c.SecurityContext
	if sc == nil || (sc.Privileged != nil && *sc.Privileged) || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Add, allowedCaps[quotaAgentName+"/quota-agent"]) {
		t.Errorf("%s: securityContext %+v; want uid 0 (added capabilities are lost by another user) with exactly %v, not privileged",
			where, sc, allowedCaps[quotaAgentName+"/quota-agent"])
	}

	// The image is the base's own, so that deploy_test's pins (VERSION, kustomization images) hold it.
	baseImage := ""
	for _, d := range load(t, baseDir) {
		if dp, ok := d.obj.(*appsv1.Deployment); ok {
			baseImage = container(&dp.Spec.Template.Spec, "paddock").Image
		}
	}
	if c.Image != baseImage || c.ImagePullPolicy != "" {
		t.Errorf("%s: image %q, pull policy %q; want the base's %q and the cluster's default policy", where, c.Image, c.ImagePullPolicy, baseImage)
	}

	flags := agentFlags(t, where, c.Args)
	mountOf := func(p string) (*corev1.VolumeMount, *corev1.Volume) {
		for i, m := range c.VolumeMounts {
			if m.MountPath == p {
				return &c.VolumeMounts[i], podVolume(spec, m.Name)
			}
		}
		return nil, nil
	}
	for _, root := range splitFlag(flags["quota-export-roots"]) {
		m, v := mountOf(root)
		switch {
		case m == nil || v == nil || v.HostPath == nil:
			t.Errorf("%s: export root %s is no hostPath mount", where, root)
		case v.HostPath.Path != root || m.SubPath != "" || m.ReadOnly:
			t.Errorf("%s: export root %s mounts host path %s (subPath %q, read-only %v); want the same path, whole, writable (the registry)",
				where, root, v.HostPath.Path, m.SubPath, m.ReadOnly)
		case m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone:
			t.Errorf("%s: export root %s: mountPropagation %s, want None", where, root, *m.MountPropagation)
		case v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory:
			t.Errorf("%s: export root %s: hostPath type %v, want Directory (never created empty)", where, root, v.HostPath.Type)
		}
	}
	m, v := mountOf(flags["quota-credentials"])
	if m == nil || v == nil || v.Secret == nil || v.Secret.SecretName != quotaAgentName || !m.ReadOnly || m.SubPath != "" ||
		v.Secret.Optional == nil || *v.Secret.Optional || len(v.Secret.Items) > 0 || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0 {
		t.Errorf("%s: --quota-credentials=%s is mount %+v of %+v; want the Secret %s whole, read-only, required, owner-only",
			where, flags["quota-credentials"], m, v, quotaAgentName)
	}
	for _, vol := range spec.Volumes {
		if vol.HostPath != nil && !slices.Contains(splitFlag(flags["quota-export-roots"]), vol.HostPath.Path) {
			t.Errorf("%s: hostPath %s is no export root", where, vol.HostPath.Path)
		}
	}

	// Ports: --quota-listen is the declared port the readiness probe dials and the Service targets;
	// --http-endpoint the one the liveness probe asks.
	port, _ := listenPort(flags)
	portName := ""
	for _, p := range c.Ports {
		if fmt.Sprint(p.ContainerPort) == port {
			portName = p.Name
		}
	}
	if rp := c.ReadinessProbe; portName == "" || rp == nil || rp.TCPSocket == nil || rp.TCPSocket.Port.String() != portName {
		t.Errorf("%s: --quota-listen port %s (declared as %q): want it declared and a TCP readiness probe on it, got %+v", where, port, portName, rp)
	}
	if host, p, err := net.SplitHostPort(flags["http-endpoint"]); err == nil {
		if lp := c.LivenessProbe; host != "" || lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/healthz" ||
			!slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
				return cp.Name == lp.HTTPGet.Port.String() && fmt.Sprint(cp.ContainerPort) == p
			}) {
			t.Errorf("%s: --http-endpoint=%s: want the pod IP and a /healthz liveness probe on its declared port, got %+v", where, flags["http-endpoint"], lp)
		}
	}
	if svc.Name != quotaAgentName || svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 ||
		fmt.Sprint(svc.Spec.Ports[0].Port) != port || svc.Spec.Ports[0].TargetPort.String() != portName {
		t.Errorf("%s: Service %s %s %+v; want %s, ClusterIP, port %s to %q", quotaAgentManifest, svc.Name, svc.Spec.Type, svc.Spec.Ports, quotaAgentName, port, portName)
	}
	selects := func(labels map[string]string) bool {
		for k, v := range svc.Spec.Selector {
			if labels[k] != v {
				return false
			}
		}
		return len(svc.Spec.Selector) > 0
	}
	if !selects(dep.Spec.Template.Labels) {
		t.Errorf("Service %s does not select the agent's pods %v", svc.Name, dep.Spec.Template.Labels)
	}
	for _, d := range build(t, baseDir) {
		switch o := d.obj.(type) {
		case *appsv1.Deployment:
			if selects(o.Spec.Template.Labels) {
				t.Errorf("Service %s selects the base's %s", svc.Name, d.where)
			}
		case *appsv1.DaemonSet:
			if selects(o.Spec.Template.Labels) {
				t.Errorf("Service %s selects the base's %s", svc.Name, d.where)
			}
		case *corev1.Service:
			if o.Name == svc.Name {
				t.Errorf("the base has a Service %s too", svc.Name)
			}
		}
	}
}

// systemdUnit is a unit file: section -> key -> values (in order; a key may repeat).
type systemdUnit map[string]map[string][]string

// parseUnit reads a systemd unit file: [Section] headers, Key=Value lines, # and ; comments,
// lines continued with a trailing backslash.
func parseUnit(t *testing.T, file string) systemdUnit {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := systemdUnit{}
	section := ""
	var logical []string
	cont := ""
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cont == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, ";")) {
			continue
		}
		if rest, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cont += rest + " "
			continue
		}
		logical = append(logical, cont+trimmed)
		cont = ""
	}
	if cont != "" {
		t.Fatalf("%s: ends in a continued line", file)
	}
	for _, l := range logical {
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = strings.Trim(l, "[]")
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section == "" {
			t.Fatalf("%s: %q is not Key=Value in a section", file, l)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

// one is the single value of section's key ("" if absent), failing the test if it is given twice.
func (u systemdUnit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) > 1 {
		t.Errorf("%s: [%s] %s= given %d times", quotaAgentUnit, section, key, len(v))
	}
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestQuotaAgentUnit: the systemd unit runs the agent from /usr/local/bin/paddock with flags paddock
// has (checked against the built binary's --help) and the credentials in /etc/paddock/quota, after
// the filesystems and nfs-server, restarted on failure, as root with only the three capabilities it
// needs, and sandboxed with everything read-only but exactly its export roots. Where systemd-analyze
// is installed, systemd itself verifies the unit (any warning fails).
func TestQuotaAgentUnit(t *testing.T) {
	u := parseUnit(t, quotaAgentUnit)
	exec0 := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(exec0) == 0 || exec0[0] != quotaAgentBin {
		t.Fatalf("%s: ExecStart=%v, want %s ...", quotaAgentUnit, exec0, quotaAgentBin)
	}
	flags := agentFlags(t, quotaAgentUnit+": ExecStart", exec0[1:])
	roots := splitFlag(flags["quota-export-roots"])
	if flags["quota-credentials"] != "/etc/paddock/quota" {
		t.Errorf("%s: --quota-credentials=%s, want /etc/paddock/quota (README.md copies the Secret there)", quotaAgentUnit, flags["quota-credentials"])
	}

	// Every flag name the examples may use is one paddock has.
	help, _ := exec.Command(paddockBinary(t), "--help").CombinedOutput() // exits 2 after the usage
	has := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-(\S+)`).FindAllStringSubmatch(string(help), -1) {
		has[m[1]] = true
	}
	for _, f := range quotaAgentFlags {
		if !has[f] {
			t.Errorf("paddock --help has no flag -%s (quotaAgentFlags lists it):\n%s", f, help)
		}
	}

	after := strings.Fields(strings.Join(u["Unit"]["After"], " "))
	for _, want := range []string{"local-fs.target", "nfs-server.service"} {
		if !slices.Contains(after, want) {
			t.Errorf("%s: After=%v lacks %s", quotaAgentUnit, after, want)
		}
	}
	mounts := strings.Fields(strings.Join(u["Unit"]["RequiresMountsFor"], " "))
	rw := strings.Fields(strings.Join(u["Service"]["ReadWritePaths"], " "))
	slices.Sort(rw)
	sortedRoots := slices.Sorted(slices.Values(roots))
	if !slices.Equal(rw, sortedRoots) {
		t.Errorf("%s: ReadWritePaths=%v, want exactly the export roots %v (the filesystems' mount points)", quotaAgentUnit, rw, sortedRoots)
	}
	for _, r := range roots {
		if !slices.Contains(mounts, r) {
			t.Errorf("%s: RequiresMountsFor=%v lacks export root %s", quotaAgentUnit, mounts, r)
		}
	}
	for key, want := range map[string]string{
		"Restart": "on-failure", "User": "root", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectHome": "yes", "ProtectKernelTunables": "yes",
		"ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
	} {
		if got := u.one(t, "Service", key); got != want {
			t.Errorf("%s: %s=%q, want %q", quotaAgentUnit, key, got, want)
		}
	}
	caps := strings.Fields(u.one(t, "Service", "CapabilityBoundingSet"))
	slices.Sort(caps)
	var wantCaps []string
	for _, c := range allowedCaps[quotaAgentName+"/quota-agent"] { // the in-cluster agent's, the same three
		wantCaps = append(wantCaps, "CAP_"+string(c))
	}
	slices.Sort(wantCaps)
	if !slices.Equal(caps, wantCaps) {
		t.Errorf("%s: CapabilityBoundingSet=%v, want %v", quotaAgentUnit, caps, wantCaps)
	}
	if v := u["Service"]["AmbientCapabilities"]; len(v) > 0 {
		t.Errorf("%s: AmbientCapabilities=%v: root needs none", quotaAgentUnit, v)
	}
	if filter := strings.Fields(strings.Join(u["Service"]["SystemCallFilter"], " ")); len(filter) > 0 &&
		(!slices.Contains(filter, "quotactl_fd") || strings.HasPrefix(filter[0], "~")) {
		t.Errorf("%s: SystemCallFilter=%v must allow quotactl_fd", quotaAgentUnit, filter)
	}
	if u.one(t, "Install", "WantedBy") != "multi-user.target" {
		t.Errorf("%s: WantedBy=%q, want multi-user.target", quotaAgentUnit, u.one(t, "Install", "WantedBy"))
	}

	// The in-cluster example serves the same clients on the same port.
	_, _, c, _ := quotaAgentExample(t)
	k8s := agentFlags(t, quotaAgentManifest, c.Args)
	lu, _ := listenPort(flags)
	lk, _ := listenPort(k8s)
	if flags["quota-allowed-clients"] != k8s["quota-allowed-clients"] || lu != lk {
		t.Errorf("the unit serves %q on port %s, the in-cluster agent %q on port %s", flags["quota-allowed-clients"], lu, k8s["quota-allowed-clients"], lk)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("no systemd-analyze here")
		}
		data, err := os.ReadFile(quotaAgentUnit)
		if err != nil {
			t.Fatal(err)
		}
		// verify wants ExecStart's binary to exist: the one just built.
		f := filepath.Join(t.TempDir(), filepath.Base(quotaAgentUnit))
		if err := os.WriteFile(f, bytes.ReplaceAll(data, []byte(quotaAgentBin), []byte(paddockBinary(t))), 0o644); err != nil {
			t.Fatal(err)
		}
		// Only this unit: not whatever nfs-server.service the machine may have.
		if out, err := exec.Command(analyze, "verify", "--recursive-errors=no", f).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", quotaAgentUnit, err, out)
		}
	})
}

// certManagerObject is the part of cert-manager.io/v1 Issuer and Certificate objects the example
// uses, with cert-manager's field names; decoding refuses any other field (a misspelt one).
type certManagerObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		// Issuer
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
		// Certificate
		IsCA        bool     `json:"isCA,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		SecretName  string   `json:"secretName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		IPAddresses []string `json:"ipAddresses,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef *struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef,omitempty"`
	} `json:"spec"`
}

// cert-manager's key usages the example may use, and what each is in a certificate.
var (
	certKeyUsages = map[string]x509.KeyUsage{"digital signature": x509.KeyUsageDigitalSignature,
		"key encipherment": x509.KeyUsageKeyEncipherment, "cert sign": x509.KeyUsageCertSign}
	certExtKeyUsages = map[string]x509.ExtKeyUsage{"server auth": x509.ExtKeyUsageServerAuth, "client auth": x509.ExtKeyUsageClientAuth}
)

// quotaCertificates decodes cert-manager.yaml and checks it on its own: Issuers and Certificates of
// cert-manager.io/v1 in Paddock's namespace, each Certificate issued by an Issuer of the file,
// valid durations, usages and key options, the CA Issuer's Secret that of a CA Certificate. It
// returns the Certificates by name and the Issuers.
func quotaCertificates(t *testing.T) (certs map[string]*certManagerObject, issuers map[string]*certManagerObject) {
	t.Helper()
	certs, issuers = map[string]*certManagerObject{}, map[string]*certManagerObject{}
	for i, raw := range yamlDocuments(t, quotaCertManager) {
		where := fmt.Sprintf("%s (document %d)", quotaCertManager, i+1)
		o := &certManagerObject{}
		if err := yaml.UnmarshalStrict(raw, o); err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		// UnmarshalStrict matches field names regardless of case (isCa would fill isCA), the API
		// server does not: the object must come back from its fields as it was written.
		var in, back any
		again, err := json.Marshal(o)
		if err == nil {
			err = yaml.Unmarshal(raw, &in)
		}
		if err == nil {
			err = yaml.Unmarshal(again, &back)
		}
		if err != nil || !equality.Semantic.DeepEqual(in, back) {
			t.Errorf("%s: not as cert-manager spells it (%v):\n%s", where, err, diff.Diff(in, back))
			continue
		}
		if o.Kind == "" {
			continue
		}
		if o.APIVersion != "cert-manager.io/v1" || o.Metadata.Namespace != namespace || o.Metadata.Labels[nameLabel] != "paddock" || o.Metadata.Name == "" {
			t.Errorf("%s: %s %s %s in %q, labels %v; want cert-manager.io/v1, named, in %s, %s=paddock", where, o.APIVersion, o.Kind,
				o.Metadata.Name, o.Metadata.Namespace, o.Metadata.Labels, namespace, nameLabel)
		}
		switch o.Kind {
		case "Issuer":
			issuers[o.Metadata.Name] = o
			if (o.Spec.SelfSigned == nil) == (o.Spec.CA == nil) {
				t.Errorf("%s: Issuer %s is not one of selfSigned or ca", where, o.Metadata.Name)
			}
		case "Certificate":
			certs[o.Metadata.Name] = o
			s := o.Spec
			if s.SecretName == "" || s.IssuerRef == nil || (s.IssuerRef.Kind != "" && s.IssuerRef.Kind != "Issuer") || s.PrivateKey == nil ||
				s.PrivateKey.Algorithm != "ECDSA" || s.PrivateKey.Size != 256 {
				t.Errorf("%s: Certificate %s: secretName %q, issuerRef %+v, privateKey %+v; want a Secret, an Issuer of the file, ECDSA 256",
					where, o.Metadata.Name, s.SecretName, s.IssuerRef, s.PrivateKey)
			}
			for _, d := range []string{s.Duration, s.RenewBefore} {
				if _, err := time.ParseDuration(cmpOr(d, "1h")); err != nil {
					t.Errorf("%s: Certificate %s: %v", where, o.Metadata.Name, err)
				}
			}
			for _, us := range s.Usages {
				if _, ok := certKeyUsages[us]; !ok {
					if _, ok := certExtKeyUsages[us]; !ok {
						t.Errorf("%s: Certificate %s: usage %q is not one this example knows", where, o.Metadata.Name, us)
					}
				}
			}
			if p := s.PrivateKey; p != nil && !slices.Contains([]string{"", "Always", "Never"}, p.RotationPolicy) {
				t.Errorf("%s: Certificate %s: rotationPolicy %q", where, o.Metadata.Name, p.RotationPolicy)
			}
		default:
			t.Errorf("%s: kind %s; want Issuers and Certificates", where, o.Kind)
		}
	}
	for name, c := range certs {
		if c.Spec.IssuerRef != nil && issuers[c.Spec.IssuerRef.Name] == nil {
			t.Errorf("%s: Certificate %s is issued by Issuer %q, not in the file", quotaCertManager, name, c.Spec.IssuerRef.Name)
		}
	}
	for name, is := range issuers {
		if is.Spec.CA != nil && !slices.ContainsFunc(slices.Collect(maps.Values(certs)), func(c *certManagerObject) bool {
			return c.Spec.IsCA && c.Spec.SecretName == is.Spec.CA.SecretName
		}) {
			t.Errorf("%s: CA Issuer %s signs with Secret %s, which no CA Certificate of the file makes", quotaCertManager, name, is.Spec.CA.SecretName)
		}
	}
	return certs, issuers
}

// TestQuotaCertificates: the cert-manager example fits the other examples. The agent's certificate
// goes to the Secret the in-cluster agent mounts and is a server certificate naming the in-cluster
// Service and the host of the example class's quotaAgent; the client's goes to the Secret the quota
// component mounts, in the controller's namespace, and is a client certificate carrying the name
// every example agent allows; both come from one CA Issuer. Then certificates made as cert-manager
// would make them from these specs pass a real mutual TLS handshake with the agent's server
// (pkg/quota/rpc) for each name, and one for another name does not.
func TestQuotaCertificates(t *testing.T) {
	certs, issuers := quotaCertificates(t)
	agent, client := certs[quotaAgentName], certs[quotaSecret]
	if agent == nil || client == nil {
		t.Fatalf("%s: Certificates %v; want %s and %s", quotaCertManager, slices.Collect(maps.Keys(certs)), quotaAgentName, quotaSecret)
	}
	_, dep, c, svc := quotaAgentExample(t)
	secretOf := func(spec *corev1.PodSpec, cont *corev1.Container, dir string) string {
		for _, m := range cont.VolumeMounts {
			if v := podVolume(spec, m.Name); m.MountPath == dir && v != nil && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
		return ""
	}
	agentFlagsK8s := agentFlags(t, quotaAgentManifest, c.Args)
	if got := secretOf(&dep.Spec.Template.Spec, c, agentFlagsK8s["quota-credentials"]); agent.Spec.SecretName != got {
		t.Errorf("the agent's Certificate writes Secret %s, the in-cluster agent reads %q", agent.Spec.SecretName, got)
	}
	ctrl := controllerDeployment(t, build(t, filepath.Join(overlaysDir, quotaComp)))
	p := container(&ctrl.Spec.Template.Spec, "paddock")
	dir, _ := flagValue(p.Args, quotaFlag)
	if got := secretOf(&ctrl.Spec.Template.Spec, p, dir); client.Spec.SecretName != got || client.Metadata.Namespace != ctrl.Namespace {
		t.Errorf("the client Certificate writes Secret %s/%s, the controller (overlays/quota) reads %s/%q",
			client.Metadata.Namespace, client.Spec.SecretName, ctrl.Namespace, got)
	}
	if agent.Spec.IssuerRef == nil || client.Spec.IssuerRef == nil || agent.Spec.IssuerRef.Name != client.Spec.IssuerRef.Name ||
		issuers[agent.Spec.IssuerRef.Name] == nil || issuers[agent.Spec.IssuerRef.Name].Spec.CA == nil {
		t.Errorf("the agent's and the client's Certificates must come from one CA Issuer (each side trusts the other's CA as its ca.crt)")
	}
	if agent.Spec.IsCA || client.Spec.IsCA || !slices.Contains(agent.Spec.Usages, "server auth") || slices.Contains(agent.Spec.Usages, "client auth") ||
		!slices.Contains(client.Spec.Usages, "client auth") || slices.Contains(client.Spec.Usages, "server auth") {
		t.Errorf("usages: agent %v, client %v; want a server certificate and a client certificate", agent.Spec.Usages, client.Spec.Usages)
	}

	// Names: the Service's, every example class's quotaAgent host, and the allowed clients.
	names := slices.Concat(agent.Spec.DNSNames, agent.Spec.IPAddresses)
	want := []string{svc.Name + "." + svc.Namespace + ".svc"}
	for _, d := range decodeFile(t, quotaClass) {
		if sc, ok := d.obj.(*storagev1.StorageClass); ok {
			host, _, _ := net.SplitHostPort(sc.Parameters[volume.ParamQuotaAgent])
			want = append(want, host)
		}
	}
	for _, n := range want {
		if !slices.Contains(names, n) {
			t.Errorf("the agent's certificate names %v, not %s", names, n)
		}
	}
	clientNames := append([]string{client.Spec.CommonName}, client.Spec.DNSNames...)
	unitFlags := agentFlags(t, quotaAgentUnit, strings.Fields(parseUnit(t, quotaAgentUnit).one(t, "Service", "ExecStart"))[1:])
	for _, allowed := range [][]string{splitFlag(agentFlagsK8s["quota-allowed-clients"]), splitFlag(unitFlags["quota-allowed-clients"])} {
		if !slices.ContainsFunc(allowed, func(n string) bool { return slices.Contains(clientNames, n) }) {
			t.Errorf("the agents allow %v, the client certificate names %v", allowed, clientNames)
		}
	}

	// A real handshake with certificates made from these specs.
	var caCert *certManagerObject
	for _, cc := range certs {
		if is := issuers[agent.Spec.IssuerRef.Name]; is != nil && is.Spec.CA != nil && cc.Spec.IsCA && cc.Spec.SecretName == is.Spec.CA.SecretName {
			caCert = cc
		}
	}
	ca := mintCertificate(t, caCert, nil)
	agentDir, clientDir := ca.issue(t, agent), ca.issue(t, client)
	agentCreds, err := rpc.LoadCredentials(agentDir)
	if err != nil {
		t.Fatal(err)
	}
	clientCreds, err := rpc.LoadCredentials(clientDir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(fakeQuotas{}, agentCreds, rpc.AllowClients(splitFlag(agentFlagsK8s["quota-allowed-clients"])...))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	capacity := func(name string) error {
		cl, err := rpc.Dial(l.Addr().String(), clientCreds, rpc.WithServerName(name))
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err = cl.Capacity(ctx, "/srv/nfs")
		return err
	}
	for _, n := range names {
		if err := capacity(n); err != nil {
			t.Errorf("the controller calling the agent as %s: %v", n, err)
		}
	}
	if err := capacity("elsewhere.example.com"); err == nil {
		t.Errorf("the controller reached the agent as elsewhere.example.com, a name its certificate does not have")
	}
}

// fakeQuotas answers every call of the agent's API.
type fakeQuotas struct{}

func (fakeQuotas) Set(context.Context, quota.Target, quota.Limit) (quota.Usage, error) {
	return quota.Usage{}, nil
}
func (fakeQuotas) Release(context.Context, quota.Target) error { return nil }
func (fakeQuotas) Usage(context.Context, quota.Target) (quota.Usage, error) {
	return quota.Usage{}, nil
}
func (fakeQuotas) Capacity(context.Context, string) (quota.Capacity, error) {
	return quota.Capacity{TotalBytes: 1 << 30}, nil
}

// mintedCA is a CA certificate made from a cert-manager Certificate spec.
type mintedCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// mintCertificate makes the certificate cert-manager would make from spec c (ECDSA P-256, its names,
// usages and CA flag), signed by parent (self-signed when nil).
func mintCertificate(t *testing.T, c *certManagerObject, parent *mintedCA) *mintedCA {
	t.Helper()
	if c == nil {
		t.Fatal("no CA Certificate")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: c.Spec.CommonName},
		DNSNames:     c.Spec.DNSNames,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	for _, ip := range c.Spec.IPAddresses {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	usages := c.Spec.Usages
	if len(usages) == 0 {
		usages = []string{"digital signature", "key encipherment"} // cert-manager's default
	}
	for _, us := range usages {
		tmpl.KeyUsage |= certKeyUsages[us]
		if e, ok := certExtKeyUsages[us]; ok {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, e)
		}
	}
	if c.Spec.IsCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &mintedCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes c's certificate signed by ca and writes the directory its Secret would be mounted as
// (tls.crt, tls.key, ca.crt).
func (ca *mintedCA) issue(t *testing.T, c *certManagerObject) string {
	t.Helper()
	leaf := mintCertificate(t, c, ca)
	keyDER, err := x509.MarshalECPrivateKey(leaf.key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"tls.crt": leaf.certPEM,
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":  ca.certPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestQuotaStorageClass: the example class is Paddock's, the driver's own parser accepts it with
// enforced capacity, its share is an export root of the example agents and its quotaAgent's port
// theirs.
func TestQuotaStorageClass(t *testing.T) {
	_, _, c, _ := quotaAgentExample(t)
	k8s := agentFlags(t, quotaAgentManifest, c.Args)
	unit := agentFlags(t, quotaAgentUnit, strings.Fields(parseUnit(t, quotaAgentUnit).one(t, "Service", "ExecStart"))[1:])
	n := 0
	for _, d := range decodeFile(t, quotaClass) {
		sc, ok := d.obj.(*storagev1.StorageClass)
		if !ok {
			t.Errorf("%s: %s, want StorageClasses only", d.where, d.gvk.Kind)
			continue
		}
		n++
		if sc.Provisioner != driverName {
			t.Errorf("%s: provisioner %q, want %s", d.where, sc.Provisioner, driverName)
		}
		p, err := volume.ParseParams(sc.Parameters)
		if err != nil {
			t.Errorf("%s: the driver refuses its parameters: %v", d.where, err)
			continue
		}
		if p.Quota.Agent == "" || p.Quota.Inodes == 0 {
			t.Errorf("%s: quota %+v; want enforced, with an agent and an inode limit (the example shows every key)", d.where, p.Quota)
		}
		if _, err := p.Volume("pvc-0b5e4a0c-1d2e-4f60-8a9b-123456789abc", volume.TemplateVars{PVCName: "data", PVCNamespace: "shop"}); err != nil {
			t.Errorf("%s: no volume for claim shop/data: %v", d.where, err)
		}
		_, port, _ := net.SplitHostPort(p.Quota.Agent)
		for who, f := range map[string]map[string]string{quotaAgentManifest: k8s, quotaAgentUnit: unit} {
			if l, _ := listenPort(f); l != port || !slices.Contains(splitFlag(f["quota-export-roots"]), sc.Parameters[volume.ParamShare]) {
				t.Errorf("%s: share %s, agent port %s; %s serves %v on port %s", d.where, sc.Parameters[volume.ParamShare], port, who,
					splitFlag(f["quota-export-roots"]), l)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no StorageClass", quotaClass)
	}
}
