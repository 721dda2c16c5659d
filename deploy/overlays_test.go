package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/diff"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	// kubeletOverlay is the kubelet e2e tier's overlay of the base: its own image, never pulled.
	kubeletOverlay = "../test/e2e/kubelet/overlay"
	e2eImage       = "registry.paddock.test/paddock:e2e" // hack/image.sh, imported by the kubelet tier
)

// build runs kustomize (the library behind kubectl apply -k, with its default options: no plugins,
// files only from inside the kustomization's directory) on the kustomization in dir, and decodes
// every object it makes, strictly, into a typed object.
func build(t *testing.T, dir string) []document {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
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

// TestOverlays builds each overlay in overlays/: it builds on the base alone, every file in it is
// used, and what it makes is a whole installation (checkObjects) with the base's objects and their
// containers, the node-driver-registrar sidecar aside. A patch that names a container the base does
// not have adds a second, broken container instead of patching one.
func TestOverlays(t *testing.T) {
	entries, err := os.ReadDir(overlaysDir)
	if err != nil {
		t.Fatal(err)
	}
	base := build(t, baseDir)
	baseObjects := byID(t, base)
	seen := false
	for _, e := range entries {
		if !e.IsDir() {
			t.Errorf("%s/%s: overlays/ holds only overlay directories", overlaysDir, e.Name())
			continue
		}
		dir := filepath.Join(overlaysDir, e.Name())
		seen = seen || dir == filepath.Clean(registrarOverlay)
		t.Run(e.Name(), func(t *testing.T) {
			k := readKustomization(t, dir)
			if !slices.Equal(k.Resources, []string{"../../" + baseDir}) {
				t.Errorf("%s: resources %v, want just the base ../../%s", dir, k.Resources, baseDir)
			}
			// kustomize reads what the kustomization names and ignores the rest.
			used := map[string]bool{filepath.Join(dir, kustomization): true}
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

			docs := build(t, dir)
			checkObjects(t, docs)
			sameObjects(t, docs, base, "kustomize build "+dir, "the base's objects")
			for _, d := range docs {
				spec, baseDoc := podSpec(d.obj), baseObjects[objectID(d)]
				if spec == nil || baseDoc.obj == nil {
					continue
				}
				baseSpec := podSpec(baseDoc.obj)
				for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
					if c.Name != registrarName &&
						!slices.ContainsFunc(slices.Concat(baseSpec.InitContainers, baseSpec.Containers),
							func(b corev1.Container) bool { return b.Name == c.Name }) {
						t.Errorf("%s: container %q is not in the base (a patch with a misspelt name?)", d.where, c.Name)
					}
				}
			}
		})
	}
	if !seen {
		t.Errorf("no %s overlay", registrarOverlay)
	}
}

// TestRegistrarOverlay: the overlay puts node-driver-registrar back beside paddock, which then no
// longer registers itself, and changes nothing else of paddock's.
func TestRegistrarOverlay(t *testing.T) {
	baseDS := nodeDaemonSet(t, build(t, baseDir))
	ds := nodeDaemonSet(t, build(t, registrarOverlay))
	spec := &ds.Spec.Template.Spec

	var registrars []corev1.Container
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if isRegistrar(c) {
			registrars = append(registrars, c)
		}
	}
	if len(registrars) != 1 {
		t.Fatalf("%d %s containers, want 1", len(registrars), registrarName)
	}
	r := registrars[0]
	if r.Name != registrarName || !strings.HasPrefix(r.Image, registrarImage+":") {
		t.Errorf("registrar container %q image %q, want %q with %s", r.Name, r.Image, registrarName, registrarImage)
	}
	k := readKustomization(t, registrarOverlay)
	if !slices.ContainsFunc(k.Images, func(im types.Image) bool {
		return im.Name == registrarImage && (im.NewTag != "" || im.Digest != "")
	}) {
		t.Errorf("%s: no images: entry pins %s", registrarOverlay, registrarImage)
	}
	if v, _ := flagValue(r.Args, "--http-endpoint"); v != ":9811" {
		t.Errorf("registrar --http-endpoint=%q, want :9811 (its own healthz port)", v)
	}
	for _, m := range r.VolumeMounts {
		if podVolume(spec, m.Name) == nil {
			t.Errorf("registrar mounts volume %q, which the DaemonSet does not have", m.Name)
		}
	}
	p := container(spec, "paddock")
	if p == nil {
		t.Fatal("overlay DaemonSet has no paddock container")
	}
	// Both register the same socket, seen from their own mounts.
	csiAddr, _ := flagValue(r.Args, "--csi-address")
	endpoint, _ := flagValue(p.Args, "--endpoint")
	if hostPathOf(spec, &r, csiAddr) != hostPathOf(spec, p, strings.TrimPrefix(endpoint, "unix://")) {
		t.Errorf("registrar --csi-address=%s and paddock --endpoint=%s are not the same host socket", csiAddr, endpoint)
	}
	if rp, _ := flagValue(r.Args, "--kubelet-registration-path"); rp != hostPathOf(spec, &r, csiAddr) {
		t.Errorf("registrar --kubelet-registration-path=%q, but --csi-address is host path %q", rp, hostPathOf(spec, &r, csiAddr))
	}
	if dir := hostPathOf(spec, &r, "/registration"); dir != pluginsRegistry {
		t.Errorf("registrar's /registration is host path %q, want %s", dir, pluginsRegistry)
	}

	// paddock: the base's arguments without the registration flags, and nothing mounted for them.
	var want []string
	for _, a := range container(&baseDS.Spec.Template.Spec, "paddock").Args {
		if !slices.ContainsFunc(registrationFlags, func(f string) bool { return a == f || strings.HasPrefix(a, f+"=") }) {
			want = append(want, a)
		}
	}
	if !slices.Equal(p.Args, want) {
		t.Errorf("overlay paddock args\n  %v\nwant the base's without %v\n  %v", p.Args, registrationFlags, want)
	}
	for _, m := range p.VolumeMounts {
		if hostPathOf(spec, p, m.MountPath) == pluginsRegistry {
			t.Errorf("overlay paddock still mounts plugins_registry at %s", m.MountPath)
		}
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
