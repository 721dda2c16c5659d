package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/paddock-csi/paddock/pkg/volume"
)

const (
	chartDir    = "../paddock"
	baseDir     = "../../kubernetes"
	kubeVersion = "v1.37.1" // the test control plane's (test/cluster)
)

// helmLabels are the labels the chart adds to the base's (app.kubernetes.io/name and component).
var helmLabels = []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"}

// object is one rendered or built Kubernetes object: typed, and as JSON for normalising.
type object struct {
	id  string // group/kind namespace/name, how kubectl and Helm tell objects apart
	obj runtime.Object
	raw map[string]any
}

func (o object) kind() string { return o.obj.GetObjectKind().GroupVersionKind().Kind }

func init() {
	// VolumeSnapshotClass (the snapshotter's values) decodes like the core kinds.
	if err := snapshotv1.AddToScheme(scheme.Scheme); err != nil {
		panic(err)
	}
}

var strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, kjson.SerializerOptions{Strict: true})

// decode decodes a YAML document strictly (no unknown or duplicate fields) into a typed object.
func decode(where string, doc []byte) (object, bool, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, false, fmt.Errorf("%s: %w", where, err)
	}
	if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
		return object{}, false, nil
	}
	obj, gvk, err := strict.Decode(js, nil, nil)
	if err != nil {
		return object{}, false, fmt.Errorf("%s: %w", where, err)
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return object{}, false, fmt.Errorf("%s: %w", where, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(js, &raw); err != nil {
		return object{}, false, err
	}
	id := fmt.Sprintf("%s %s/%s", gvk.GroupKind(), m.GetNamespace(), m.GetName())
	return object{id: id, obj: obj, raw: raw}, true, nil
}

func splitDocs(where, manifest string) ([]object, error) {
	var out []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		o, ok, err := decode(where, doc)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, o)
		}
	}
}

// values parses a YAML values override.
func values(t *testing.T, y string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatalf("values %q: %v", y, err)
	}
	return v
}

// render is helm template: the chart rendered client-side, as Helm's install action does for
// helm template (ClientOnly, DryRun), for a cluster of kubeVersion.
func render(release, namespace string, vals map[string]any) ([]object, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	in := action.NewInstall(&action.Configuration{})
	in.DryRun, in.ClientOnly, in.Replace = true, true, true
	in.ReleaseName, in.Namespace, in.KubeVersion = release, namespace, kv
	rel, err := in.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	return splitDocs("helm template", rel.Manifest)
}

func mustRender(t *testing.T, vals map[string]any) []object {
	t.Helper()
	objs, err := render("paddock", "paddock", vals)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return objs
}

// build is kubectl apply -k's kustomize build of dir.
func build(t *testing.T, dir string) []object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := splitDocs("kustomize build "+dir, string(y))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func byID(t *testing.T, objs []object) map[string]object {
	t.Helper()
	m := map[string]object{}
	for _, o := range objs {
		if _, dup := m[o.id]; dup {
			t.Errorf("%s twice", o.id)
		}
		m[o.id] = o
	}
	return m
}

// withoutHelmLabels is o with the chart's own labels removed wherever the base's labels are (object
// labels, selectors, pod templates, affinity terms), decoded again into a typed object.
func withoutHelmLabels(t *testing.T, o object) runtime.Object {
	t.Helper()
	var strip func(v any)
	strip = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["app.kubernetes.io/name"]; ok {
				for _, l := range helmLabels {
					delete(x, l)
				}
			}
			for _, c := range x {
				strip(c)
			}
		case []any:
			for _, c := range x {
				strip(c)
			}
		}
	}
	js, err := json.Marshal(o.raw)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_ = json.Unmarshal(js, &raw)
	strip(raw)
	js, _ = json.Marshal(raw)
	obj, _, err := strict.Decode(js, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", o.id, err)
	}
	return obj
}

// notInChart are the objects kustomize makes that the chart leaves out, and why.
var notInChart = map[string]string{
	// Helm installs into a namespace that exists or that --create-namespace makes; a Namespace in the
	// chart would clash with it ("cannot be imported into the current release"). docs/install.md says
	// how to give it the base's pod-security labels.
	"Namespace /paddock": "the release's namespace is Helm's (--create-namespace), not the chart's",
}

// sameAsKustomize: the chart rendered with vals (release paddock in namespace paddock) makes the
// objects kustomize builds from dir, each equal to kustomize's once the chart's own labels (instance,
// managed-by, version, helm.sh/chart) are taken out, but for notInChart.
func sameAsKustomize(t *testing.T, vals, dir string) {
	t.Helper()
	chart := byID(t, mustRender(t, values(t, vals)))
	built := byID(t, build(t, dir))
	for id, b := range built {
		c, ok := chart[id]
		if !ok {
			if notInChart[id] == "" {
				t.Errorf("%s makes %s, the chart with %s does not", dir, id, vals)
			}
			continue
		}
		if notInChart[id] != "" {
			t.Errorf("%s is listed as left out of the chart (%s), but the chart makes it", id, notInChart[id])
		}
		l, _ := meta.NewAccessor().Labels(c.obj)
		for _, k := range helmLabels {
			if l[k] == "" {
				t.Errorf("%s: no label %s", id, k)
			}
		}
		got, want := withoutHelmLabels(t, c), b.obj.DeepCopyObject()
		sortContainers(got)
		sortContainers(want)
		if !equality.Semantic.DeepEqual(want, got) {
			t.Errorf("%s: the chart's (%s) differs from %s's beyond the chart's labels:\n%s", id, vals, dir, diff.Diff(b.obj, got))
		}
	}
	for id := range chart {
		if _, ok := built[id]; !ok {
			t.Errorf("the chart with %s makes %s, which %s does not", vals, id, dir)
		}
	}
	for id := range notInChart {
		if _, ok := built[id]; !ok {
			t.Errorf("notInChart lists %s, which %s does not make", id, dir)
		}
	}
}

// sortContainers puts a workload's containers in name order. A listed difference: the chart keeps
// paddock first (kubectl logs and exec default to it), where kustomize's strategic merge patch puts a
// sidecar it adds before it; the order means nothing else.
func sortContainers(obj runtime.Object) {
	var spec *corev1.PodSpec
	switch x := obj.(type) {
	case *appsv1.Deployment:
		spec = &x.Spec.Template.Spec
	case *appsv1.DaemonSet:
		spec = &x.Spec.Template.Spec
	default:
		return
	}
	slices.SortFunc(spec.Containers, func(a, b corev1.Container) int { return strings.Compare(a.Name, b.Name) })
}

// TestDefaultRenderIsTheBase: helm template with the default values makes deploy/kubernetes.
func TestDefaultRenderIsTheBase(t *testing.T) {
	sameAsKustomize(t, `{}`, baseDir)
}

// fullValues sets every value the chart has to something other than its default.
const fullValues = `
image: {repository: registry.example.com/mirror/paddock, tag: v9.9.9, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
driverName: nfs.example.com
kubeletDir: /var/lib/k0s/kubelet
logLevel: 5
controller:
  replicas: 3
  nodeSelector: {role: storage}
  tolerations: [{key: dedicated, operator: Equal, value: storage, effect: NoSchedule}]
  priorityClassName: high
  resources: {requests: {cpu: 50m, memory: 100Mi}, limits: {memory: 1Gi}}
  metrics: {port: 19809, bindAddress: "0.0.0.0"}
  extraArgs: [--trash-grace=24h]
node:
  nodeSelector: {nfs: "yes"}
  tolerations: [{key: gpu, operator: Exists}]
  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: nfs, operator: In, values: ["yes"]}]}]}}}
  priorityClassName: low
  resources: {requests: {cpu: 1m, memory: 1Mi}}
  metrics: {port: 19810, bindAddress: "$(NODE_IP)"}
  extraArgs: [--max-volumes-per-node=10]
registrar:
  mode: sidecar
  image: {repository: registry.example.com/registrar, tag: v2.99.0}
  metrics: {port: 19811}
  privileged: false
snapshotter:
  enabled: true
  image: {tag: v8.99.0}
  timeout: 20m
  metrics: {port: 19812, bindAddress: 127.0.0.1}
  extraArgs: [--extra-create-metadata]
  volumeSnapshotClass: {name: copies, deletionPolicy: Retain, isDefault: true}
resizer: {enabled: true, timeout: 1m, metrics: {port: 19813}, extraArgs: [--handle-volume-inuse-error=false]}
quota: {enabled: true, clientSecret: quota-client-tls}
storageClasses:
  - name: fast
    server: nfs1.example.com
    share: /srv/fast
    subDir: ${pvc.metadata.namespace}/${pvc.metadata.name}
    onDelete: archive
    mountOptions: [nfsvers=4.1, hard]
    isDefault: true
    parameters: {archiveRetention: 720h, mode: "0770", gid: 2000}
  - name: keep
    server: "[fd00::1]"
    share: /
    reclaimPolicy: Retain
    volumeBindingMode: WaitForFirstConsumer
    allowVolumeExpansion: false
    labels: {tier: cold}
    annotations: {note: kept}
  - name: capped
    server: nfs1.example.com
    share: /srv/nfs
    parameters: {quota: enforce, quotaAgent: "nfs1.example.com:9820", quotaInodes: 1000000}
`

// TestLint: helm lint --strict (warnings fail too) of the chart with its defaults and with every
// value set.
func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "every value": values(t, fullValues)} {
		l := action.NewLint()
		l.Strict, l.Namespace = true, "paddock"
		res := l.Run([]string{chartDir}, vals)
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint (%s): %s", name, m)
			}
		}
		for _, err := range res.Errors {
			t.Errorf("helm lint (%s): %v", name, err)
		}
		if res.TotalChartsLinted != 1 {
			t.Errorf("helm lint (%s) linted %d charts", name, res.TotalChartsLinted)
		}
	}
}

func workload(t *testing.T, objs []object, kind string) (*corev1.PodSpec, object) {
	t.Helper()
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			if kind == "Deployment" {
				return &x.Spec.Template.Spec, o
			}
		case *appsv1.DaemonSet:
			if kind == "DaemonSet" {
				return &x.Spec.Template.Spec, o
			}
		}
	}
	t.Fatalf("no %s", kind)
	return nil, object{}
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestEveryValue: with every value set, each one reaches the objects it is for.
func TestEveryValue(t *testing.T) {
	objs := mustRender(t, values(t, fullValues))
	ctrl, _ := workload(t, objs, "Deployment")
	node, _ := workload(t, objs, "DaemonSet")
	for _, o := range objs {
		if d, ok := o.obj.(*appsv1.Deployment); ok && (d.Spec.Replicas == nil || *d.Spec.Replicas != 3) {
			t.Errorf("controller replicas %v, want 3", d.Spec.Replicas)
		}
	}
	p, np := container(ctrl, "paddock"), container(node, "paddock")
	if p == nil || np == nil {
		t.Fatal("no paddock containers")
	}
	for _, c := range []*corev1.Container{p, np} {
		if c.Image != "registry.example.com/mirror/paddock:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("paddock image %s, pull policy %s", c.Image, c.ImagePullPolicy)
		}
		if v, _ := flagValue(c.Args, "-v"); v != "5" {
			t.Errorf("paddock -v=%q, want 5", v)
		}
		if v, _ := flagValue(c.Args, "--driver-name"); v != "nfs.example.com" {
			t.Errorf("paddock --driver-name=%q", v)
		}
	}
	for _, s := range []*corev1.PodSpec{ctrl, node} {
		if !slices.Equal(s.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
			t.Errorf("imagePullSecrets %v", s.ImagePullSecrets)
		}
	}
	if ctrl.NodeSelector["role"] != "storage" || len(ctrl.Tolerations) != 1 || ctrl.Tolerations[0].Key != "dedicated" || ctrl.PriorityClassName != "high" {
		t.Errorf("controller nodeSelector %v, tolerations %v, priority %q", ctrl.NodeSelector, ctrl.Tolerations, ctrl.PriorityClassName)
	}
	if node.NodeSelector["nfs"] != "yes" || len(node.Tolerations) != 1 || node.Tolerations[0].Key != "gpu" || node.PriorityClassName != "low" ||
		node.Affinity == nil || node.Affinity.NodeAffinity == nil {
		t.Errorf("node nodeSelector %v, tolerations %v, priority %q, affinity %v", node.NodeSelector, node.Tolerations, node.PriorityClassName, node.Affinity)
	}
	if p.Resources.Limits.Memory().String() != "1Gi" || np.Resources.Requests.Cpu().String() != "1m" {
		t.Errorf("resources: controller %v, node %v", p.Resources, np.Resources)
	}
	if v, _ := flagValue(p.Args, "--http-endpoint"); v != "0.0.0.0:19809" || p.Ports[0].ContainerPort != 19809 {
		t.Errorf("controller --http-endpoint=%s, port %v", v, p.Ports)
	}
	if v, _ := flagValue(np.Args, "--http-endpoint"); v != "$(NODE_IP):19810" || np.Ports[0].ContainerPort != 19810 ||
		!slices.ContainsFunc(np.Env, func(e corev1.EnvVar) bool {
			return e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
		}) {
		t.Errorf("node --http-endpoint=%s, port %v, env %v", v, np.Ports, np.Env)
	}
	if np.LivenessProbe.HTTPGet.Host != "" {
		t.Errorf("node probe host %q: with the node's address the probe goes to the pod IP (the node's)", np.LivenessProbe.HTTPGet.Host)
	}
	if !slices.Contains(p.Args, "--trash-grace=24h") || !slices.Contains(np.Args, "--max-volumes-per-node=10") {
		t.Errorf("extraArgs: controller %v, node %v", p.Args, np.Args)
	}

	// No path of kubelet's default root is left with another kubeletDir.
	js, _ := json.Marshal(node)
	if strings.Contains(string(js), "/var/lib/kubelet") {
		t.Errorf("kubeletDir /var/lib/k0s/kubelet, but the DaemonSet still names /var/lib/kubelet:\n%s", js)
	}
	if node.Volumes[0].HostPath.Path != "/var/lib/k0s/kubelet/plugins/nfs.example.com" {
		t.Errorf("plugin dir %s", node.Volumes[0].HostPath.Path)
	}

	// The registrar sidecar, not self-registration.
	r := container(node, "node-driver-registrar")
	if r == nil || r.Image != "registry.example.com/registrar:v2.99.0" {
		t.Fatalf("no registrar sidecar with the image asked for: %v", r)
	}
	if _, ok := flagValue(np.Args, "--registration-dir"); ok {
		t.Errorf("paddock registers itself beside the registrar: %v", np.Args)
	}
	if v, _ := flagValue(r.Args, "--kubelet-registration-path"); v != "/var/lib/k0s/kubelet/plugins/nfs.example.com/csi.sock" {
		t.Errorf("registrar --kubelet-registration-path=%s", v)
	}
	if v, _ := flagValue(r.Args, "--http-endpoint"); v != "127.0.0.1:19811" || r.LivenessProbe.HTTPGet.Host != "127.0.0.1" {
		t.Errorf("registrar --http-endpoint=%s, probe host %q", v, r.LivenessProbe.HTTPGet.Host)
	}

	// Sidecars and their RBAC.
	s, z := container(ctrl, "csi-snapshotter"), container(ctrl, "csi-resizer")
	if s == nil || z == nil {
		t.Fatalf("controller containers %v: no csi-snapshotter or csi-resizer", ctrl.Containers)
	}
	if s.Image != "registry.k8s.io/sig-storage/csi-snapshotter:v8.99.0" || !slices.Contains(s.Args, "--timeout=20m") || !slices.Contains(s.Args, "--http-endpoint=127.0.0.1:19812") ||
		s.LivenessProbe.HTTPGet.Host != "127.0.0.1" || s.Ports[0].ContainerPort != 19812 || !slices.Contains(s.Args, "--extra-create-metadata") {
		t.Errorf("csi-snapshotter %s %v", s.Image, s.Args)
	}
	if z.Image != "registry.k8s.io/sig-storage/csi-resizer:v2.3.0" || !slices.Contains(z.Args, "--handle-volume-inuse-error=false") ||
		!slices.Contains(z.Args, "--timeout=1m") || !slices.Contains(z.Args, "--http-endpoint=:19813") || z.Ports[0].ContainerPort != 19813 {
		t.Errorf("csi-resizer %s %v", z.Image, z.Args)
	}
	roles := map[string]*rbacv1.ClusterRole{}
	bound := map[string]bool{}
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *rbacv1.ClusterRole:
			roles[x.Name] = x
		case *rbacv1.ClusterRoleBinding:
			if len(x.Subjects) == 1 && x.Subjects[0].Name == ctrl.ServiceAccountName && x.Subjects[0].Namespace == "paddock" {
				bound[x.RoleRef.Name] = true
			}
		}
	}
	for role, want := range map[string]string{"paddock-csi-snapshotter": "volumesnapshotcontents/status", "paddock-csi-resizer": "persistentvolumeclaims/status"} {
		if !bound[role] || !slices.ContainsFunc(roles[role].Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, want) }) {
			t.Errorf("ClusterRole %s with %s, bound to the controller's ServiceAccount: %v", role, want, roles[role])
		}
	}

	var vsc *snapshotv1.VolumeSnapshotClass
	for _, o := range objs {
		if c, ok := o.obj.(*snapshotv1.VolumeSnapshotClass); ok {
			vsc = c
		}
	}
	if vsc == nil || vsc.Name != "copies" || vsc.Driver != "nfs.example.com" || vsc.DeletionPolicy != snapshotv1.VolumeSnapshotContentRetain ||
		vsc.Annotations["snapshot.storage.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("VolumeSnapshotClass %+v", vsc)
	}

	// StorageClasses, whose parameters the driver accepts.
	classes := map[string]*storagev1.StorageClass{}
	for _, o := range objs {
		if sc, ok := o.obj.(*storagev1.StorageClass); ok {
			classes[sc.Name] = sc
			if sc.Provisioner != "nfs.example.com" {
				t.Errorf("StorageClass %s: provisioner %s", sc.Name, sc.Provisioner)
			}
			params, err := volume.ParseParams(sc.Parameters)
			if err != nil {
				t.Errorf("StorageClass %s: the driver refuses its parameters %v: %v", sc.Name, sc.Parameters, err)
				continue
			}
			if _, err := params.Volume("pvc-0b5e4a0c-1d2e-4f60-8a9b-123456789abc", volume.TemplateVars{PVCName: "data", PVCNamespace: "shop"}); err != nil {
				t.Errorf("StorageClass %s: no volume for claim shop/data: %v", sc.Name, err)
			}
		}
	}
	fast, keep, capped := classes["fast"], classes["keep"], classes["capped"]
	if fast == nil || keep == nil || capped == nil {
		t.Fatalf("StorageClasses %v, want fast, keep and capped", classes)
	}
	if p, err := volume.ParseParams(capped.Parameters); err != nil || p.Quota.Agent != "nfs1.example.com:9820" || p.Quota.Inodes != 1000000 {
		t.Errorf("StorageClass capped: parameters %v: quota %+v (%v); want enforced by nfs1.example.com:9820, 1000000 inodes", capped.Parameters, p.Quota, err)
	}

	// The controller's client identity for the quota agents, from the Secret asked for.
	checkQuota(t, ctrl, "quota-client-tls")
	if fast.Parameters["gid"] != "2000" || fast.Parameters["onDelete"] != "archive" || !slices.Equal(fast.MountOptions, []string{"nfsvers=4.1", "hard"}) ||
		fast.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" || fast.AllowVolumeExpansion == nil || !*fast.AllowVolumeExpansion {
		t.Errorf("StorageClass fast: %+v", fast)
	}
	if *keep.ReclaimPolicy != corev1.PersistentVolumeReclaimRetain || *keep.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		keep.AllowVolumeExpansion == nil || *keep.AllowVolumeExpansion || keep.Labels["tier"] != "cold" || keep.Annotations["note"] != "kept" {
		t.Errorf("StorageClass keep: %+v", keep)
	}
	checkHardening(t, objs)
}

// TestDigestAndDefaults: an image digest replaces the tag; without the resizer a class does not
// allow expansion (it would never happen); the sidecars and their RBAC, and the quota credentials,
// are absent unless asked for.
func TestDigestAndDefaults(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	objs := mustRender(t, values(t, `{image: {digest: "`+digest+`"}, storageClasses: [{name: a, server: nfs, share: /x}]}`))
	ctrl, _ := workload(t, objs, "Deployment")
	if got := container(ctrl, "paddock").Image; got != "ghcr.io/paddock-csi/paddock@"+digest {
		t.Errorf("image %s, want the digest", got)
	}
	if len(ctrl.Containers) != 1 {
		t.Errorf("controller containers %d, want paddock alone", len(ctrl.Containers))
	}
	checkQuota(t, ctrl, "")
	for _, o := range objs {
		if sc, ok := o.obj.(*storagev1.StorageClass); ok {
			if sc.AllowVolumeExpansion == nil || *sc.AllowVolumeExpansion || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
				t.Errorf("StorageClass %s: allowVolumeExpansion %v, reclaimPolicy %v; want false, Delete", sc.Name, sc.AllowVolumeExpansion, *sc.ReclaimPolicy)
			}
		}
		if strings.Contains(o.id, "snapshotter") || strings.Contains(o.id, "resizer") {
			t.Errorf("%s rendered without its sidecar", o.id)
		}
	}
}

// TestBadValues: values that cannot work are refused at render time, naming the value.
func TestBadValues(t *testing.T) {
	for _, c := range []struct{ vals, want string }{
		{`{registrar: {mode: kubelet}}`, "registrar"},
		{`{storageClasses: [{name: a, share: /x}]}`, "storageClasses"},
		{`{controller: {replicas: many}}`, "replicas"},
		{`{logLevel: -1}`, "logLevel"},
		{`{driverName: "Not A Name"}`, "driverName"},
		{`{storageClasses: [{name: a, server: s, share: /x, onDelete: shred}]}`, "onDelete"},
		{`{quota: {enabled: true, clientSecret: "Not_A_Name"}}`, "clientSecret"},
		{`{quota: {enabled: yes-please}}`, "enabled"},
		{`{storageClasses: [{name: a, server: s, share: /x, parameters: {quota: enforce, quotaAgent: "s:9820"}}]}`, "quota.enabled"},
	} {
		_, err := render("paddock", "paddock", values(t, c.vals))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s: error %v, want one naming %s", c.vals, err, c.want)
		}
	}
}

// TestTwoReleases: a second release with its own name, namespace and driver name shares no object
// name with the default one, and no host path or host port (both node plugins run on every node).
func TestTwoReleases(t *testing.T) {
	a := mustRender(t, nil)
	b, err := render("paddock-e2e", "paddock-helm", values(t, `{driverName: helm.paddock.dev, node: {metrics: {port: 9820}}}`))
	if err != nil {
		t.Fatal(err)
	}
	ids := byID(t, a)
	for _, o := range b {
		if _, clash := ids[o.id]; clash {
			t.Errorf("both releases make %s", o.id)
		}
	}
	hostPaths := func(objs []object) []string {
		spec, _ := workload(t, objs, "DaemonSet")
		var out []string
		for _, v := range spec.Volumes {
			if v.HostPath != nil && v.Name == "plugin-dir" {
				out = append(out, v.HostPath.Path)
			}
		}
		for _, c := range spec.Containers {
			for _, p := range c.Ports {
				out = append(out, fmt.Sprint("port ", p.ContainerPort))
			}
		}
		return out
	}
	if pa, pb := hostPaths(a), hostPaths(b); len(pa) == 0 || slices.ContainsFunc(pa, func(p string) bool { return slices.Contains(pb, p) }) {
		t.Errorf("the node plugins of both releases share a plugin dir or host port: %v and %v", pa, pb)
	}
}

// checkHardening: every image is pinned (a tag other than latest, or a digest), and no container has
// a privilege its work does not need (as deploy/deploy_test.go
// checks the base): privileged only for Bidirectional propagation (or the registrar when asked);
// otherwise drop ALL, add only the controller's listed capabilities, seccomp RuntimeDefault, read-only
// root, no privilege escalation unless SYS_ADMIN; on the host network, loopback listeners probed there
// or the probe at the pod IP.
func checkHardening(t *testing.T, objs []object) {
	t.Helper()
	allowed := []corev1.Capability{"SYS_ADMIN", "NET_BIND_SERVICE", "CHOWN", "FOWNER", "FSETID", "DAC_OVERRIDE", "MKNOD"}
	for _, o := range objs {
		var spec *corev1.PodSpec
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			spec = &x.Spec.Template.Spec
		case *appsv1.DaemonSet:
			spec = &x.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			if i := strings.LastIndex(c.Image, ":"); !strings.Contains(c.Image, "@sha256:") &&
				(i < strings.LastIndex(c.Image, "/") || c.Image[i+1:] == "latest") {
				t.Errorf("%s: container %s: image %q is not pinned to a tag other than latest", o.id, c.Name, c.Image)
			}
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: container %s has no securityContext", o.id, c.Name)
				continue
			}
			if sc.Privileged != nil && *sc.Privileged {
				if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional
				}) && c.Name != "node-driver-registrar" {
					t.Errorf("%s: container %s is privileged", o.id, c.Name)
				}
			} else {
				if spec.SecurityContext == nil || spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: no RuntimeDefault seccomp profile", o.id)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: container %s: root filesystem writable", o.id, c.Name)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("%s: container %s does not drop ALL", o.id, c.Name)
				} else {
					for _, cp := range sc.Capabilities.Add {
						if c.Name != "paddock" || !slices.Contains(allowed, cp) {
							t.Errorf("%s: container %s adds %s", o.id, c.Name, cp)
						}
					}
				}
				sysAdmin := sc.Capabilities != nil && slices.Contains(sc.Capabilities.Add, "SYS_ADMIN")
				if (sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation) && !sysAdmin {
					t.Errorf("%s: container %s may escalate privileges", o.id, c.Name)
				}
			}
			if !spec.HostNetwork {
				continue
			}
			ep, _ := flagValue(c.Args, "--http-endpoint")
			host, _, err := net.SplitHostPort(ep)
			if err != nil {
				t.Errorf("%s: container %s: --http-endpoint=%q: %v", o.id, c.Name, ep, err)
				continue
			}
			loopback := host == "127.0.0.1" || host == "::1"
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					continue
				}
				if loopback && p.HTTPGet.Host != host || !loopback && p.HTTPGet.Host != "" {
					t.Errorf("%s: container %s listens on %q, probed at host %q", o.id, c.Name, ep, p.HTTPGet.Host)
				}
			}
		}
	}
}

// TestDefaultsHardened: the default render and the registrar variants pass checkHardening.
func TestDefaultsHardened(t *testing.T) {
	for _, v := range []string{`{}`, `{registrar: {mode: sidecar}}`, `{registrar: {mode: sidecar, privileged: false}}`,
		`{snapshotter: {enabled: true}, resizer: {enabled: true}}`, `{quota: {enabled: true}}`} {
		checkHardening(t, mustRender(t, values(t, v)))
	}
	// Asked for, the controller runs privileged (SELinux hosts) and checkHardening says so.
	ctrl, _ := workload(t, mustRender(t, values(t, `{controller: {privileged: true}}`)), "Deployment")
	if sc := container(ctrl, "paddock").SecurityContext; sc.Privileged == nil || !*sc.Privileged || sc.AppArmorProfile != nil {
		t.Errorf("controller.privileged: securityContext %+v", sc)
	}
}

// checkQuota: with secret (quota.enabled, quota.clientSecret), the controller's paddock container
// and it alone has --quota-credentials naming the directory where that Secret is mounted, read-only,
// whole and required; with secret "", neither the flag nor the volume.
func checkQuota(t *testing.T, ctrl *corev1.PodSpec, secret string) {
	t.Helper()
	p := container(ctrl, "paddock")
	dir, ok := flagValue(p.Args, "--quota-credentials")
	var vol *corev1.Volume
	for i, v := range ctrl.Volumes {
		if v.Secret != nil {
			if vol != nil {
				t.Errorf("controller Secret volumes %s and %s, want one at most", vol.Name, v.Name)
			}
			vol = &ctrl.Volumes[i]
		}
	}
	if secret == "" {
		if ok || vol != nil {
			t.Errorf("quota disabled, but --quota-credentials=%q and Secret volume %+v", dir, vol)
		}
		return
	}
	if !ok || vol == nil || vol.Secret.SecretName != secret || vol.Secret.Optional == nil || *vol.Secret.Optional {
		t.Fatalf("quota enabled: --quota-credentials=%q (%v), Secret volume %+v; want the flag and required Secret %s", dir, ok, vol, secret)
	}
	for _, c := range ctrl.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name != vol.Name {
				continue
			}
			if c.Name != "paddock" || m.MountPath != dir || !m.ReadOnly || m.SubPath != "" {
				t.Errorf("container %s mounts %s at %s (read-only %v, subPath %q); want paddock alone, at --quota-credentials=%s, read-only, whole",
					c.Name, vol.Name, m.MountPath, m.ReadOnly, m.SubPath, dir)
			}
		}
		if _, has := flagValue(c.Args, "--quota-credentials"); has && c.Name != "paddock" {
			t.Errorf("container %s has --quota-credentials", c.Name)
		}
	}
}

// TestValuesDocumented: every leaf value in values.yaml has a row in the chart's README values table,
// and every row names a value that exists.
func TestValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(data, &vals); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 || prefix == "controller.affinity" || strings.HasSuffix(prefix, ".resources") || strings.HasSuffix(prefix, "nodeSelector") {
			leaves = append(leaves, prefix)
			return
		}
		for k, c := range m {
			walk(strings.TrimPrefix(prefix+"."+k, "."), c)
		}
	}
	walk("", vals)
	sort.Strings(leaves)
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if f := strings.Split(line, "|"); len(f) > 3 && strings.HasPrefix(strings.TrimSpace(f[1]), "`") {
			rows[strings.Trim(strings.TrimSpace(f[1]), "`")] = true
		}
	}
	for _, l := range leaves {
		if !rows[l] {
			t.Errorf("value %s has no row in %s/README.md", l, chartDir)
		}
	}
	for r := range rows {
		if !slices.Contains(leaves, r) {
			t.Errorf("%s/README.md documents %s, which values.yaml does not have", chartDir, r)
		}
	}
}
