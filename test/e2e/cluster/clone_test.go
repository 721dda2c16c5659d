//go:build e2e

package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/pkg/provisioner"
	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// snapName is the csi-snapshotter sidecar's process in the guest, next to the controller.
const snapName = "csi-snapshotter"

func snapshotClient(t *testing.T) snapclient.Interface {
	t.Helper()
	c, err := snapclient.NewForConfig(env.Cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startSnapshotter (re)starts the csi-snapshotter sidecar against the controller's socket: it exits
// when the controller it talks to is restarted (as in a pod, where the kubelet restarts it).
func startSnapshotter(t *testing.T) {
	t.Helper()
	if err := env.StartCSISnapshotter(kubeenv.Context(t, 2*time.Minute), snapName, ctrlSock, snapKubeconfig); err != nil {
		t.Fatal(err)
	}
}

// takeSnapshot makes the VolumeSnapshot "snap" of claim in ns with class and waits until it is
// ReadyToUse; it returns its content and the directory of Paddock's copy on ExportA. sidecar is the
// csi-snapshotter whose log a failure shows.
func takeSnapshot(t *testing.T, ctx context.Context, snaps snapclient.Interface, ns, claim, class, sidecar string) (*snapv1.VolumeSnapshotContent, string) {
	t.Helper()
	vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: ns},
		Spec: snapv1.VolumeSnapshotSpec{VolumeSnapshotClassName: &class,
			Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)}}}
	if _, err := snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var content *snapv1.VolumeSnapshotContent
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "VolumeSnapshot snap ReadyToUse", func(ctx context.Context) (bool, string, error) {
		s, err := snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, "snap", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		if s.Status == nil || !ptr.Deref(s.Status.ReadyToUse, false) || s.Status.BoundVolumeSnapshotContentName == nil {
			return false, "status " + snapshotStatus(s.Status) + "; sidecar log: " + env.Log(ctx, sidecar, 5), nil
		}
		content, err = snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, *s.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		return err == nil && content.Status != nil && content.Status.SnapshotHandle != nil, "content not ready", nil
	})
	sid, err := volume.ParseSnapshotID(*content.Status.SnapshotHandle)
	if err != nil {
		t.Fatalf("snapshot handle %q: %v", *content.Status.SnapshotHandle, err)
	}
	return content, kubeenv.ExportA + "/.paddock/snapshots/" + sid.Dir
}

// deleteSnapshot deletes the VolumeSnapshot "snap" in ns and waits until its content is gone.
func deleteSnapshot(t *testing.T, ctx context.Context, snaps snapclient.Interface, ns string, content *snapv1.VolumeSnapshotContent) {
	t.Helper()
	if err := snaps.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, "snap", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeenv.WaitGone(t, kubeenv.PhaseTimeout, "VolumeSnapshotContent "+content.Name, func(ctx context.Context) (string, error) {
		c, err := snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, content.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return "finalizers " + strings.Join(c.Finalizers, ","), nil
	})
}

// sourceFiles writes into dir, on the NFS server itself, what a pod would have left in its volume:
// a file, a file with an owner and mode in a subdirectory, and a symlink.
func sourceFiles(t *testing.T, dir string) {
	t.Helper()
	d := kubeenv.Quote(dir)
	env.ShT(t, "cd "+d+" && printf alpha > a.txt && mkdir sub && printf beta > sub/b.txt && chown 1234:5678 sub/b.txt && chmod 640 sub/b.txt && ln -s a.txt link")
}

// checkCopy checks on the NFS server that dir holds what sourceFiles wrote, and nothing that was
// written after the copy was taken (absent).
func checkCopy(t *testing.T, dir string, absent ...string) {
	t.Helper()
	if got := ls(t, dir); !slices.Equal(got, []string{"a.txt", "link", "sub"}) {
		t.Errorf("%s holds %v, want [a.txt link sub]", dir, got)
	}
	if got := readFile(t, dir+"/a.txt"); got != "alpha" {
		t.Errorf("%s/a.txt = %q, want the source's %q", dir, got, "alpha")
	}
	if got := readFile(t, dir+"/sub/b.txt"); got != "beta" {
		t.Errorf("%s/sub/b.txt = %q, want %q", dir, got, "beta")
	}
	if got := statOf(t, dir+"/sub/b.txt"); got != "1234:5678:640" {
		t.Errorf("owner:group:mode of %s/sub/b.txt = %s, want the source's 1234:5678:640", dir, got)
	}
	if got := strings.TrimSpace(env.ShT(t, "readlink "+kubeenv.Quote(dir+"/link"))); got != "a.txt" {
		t.Errorf("%s/link points at %q, want the source's symlink to a.txt", dir, got)
	}
	for _, a := range absent {
		if exists(t, dir+"/"+a) {
			t.Errorf("%s/%s exists: it was written to the source after the copy was taken", dir, a)
		}
	}
}

// A claim cloned from a claim and one restored from a VolumeSnapshot, both through the embedded
// provisioner, hold the source's content as the NFS server sees it; the snapshot is taken by the real
// csi-snapshotter and snapshot-controller; the source claim carries the cloning-protection finalizer
// only while it is copied; deleting the VolumeSnapshot removes its copy from the export.
func TestCloneAndRestoreThroughTheEmbeddedProvisioner(t *testing.T) {
	ns := env.NewNamespace(t, "clone")
	sc := storageClass(t, "clone", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}})
	createClaim(t, ns, "src", claimOpts{class: &sc.Name})
	env.WaitBound(t, ns, "src")
	srcDir := kubeenv.ExportA + "/" + ns + "/src"
	sourceFiles(t, srcDir)
	claims := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns)

	t.Run("clone", func(t *testing.T) {
		c := newClaim(ns, "clone", claimOpts{class: &sc.Name, size: "2Gi"})
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
		env.CreateClaim(t, c)
		_, pv := env.WaitBound(t, ns, "clone")
		if v, err := volume.ParseID(pv.Spec.CSI.VolumeHandle); err != nil || v.SubDir != ns+"/clone" {
			t.Errorf("clone's volume handle %q: %+v, %v", pv.Spec.CSI.VolumeHandle, v, err)
		}
		checkCopy(t, kubeenv.ExportA+"/"+ns+"/clone")
		// The source is untouched, and free to be deleted again once the copy is done.
		checkCopy(t, srcDir)
		kubeenv.WaitT(t, kubeenv.PhaseTimeout, "the cloning-protection finalizer to leave the source", func(ctx context.Context) (bool, string, error) {
			src, err := claims.Get(ctx, "src", metav1.GetOptions{})
			if err != nil {
				return false, "", err
			}
			return !slices.Contains(src.Finalizers, provisioner.CloneFinalizer), "finalizers " + strings.Join(src.Finalizers, ","), nil
		})
	})

	t.Run("restore", func(t *testing.T) {
		startSnapshotter(t)
		snaps := snapshotClient(t)
		ctx := kubeenv.Context(t, 5*time.Minute)
		vsc := &snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "paddock-" + ns},
			Driver: kubeenv.Driver, DeletionPolicy: snapv1.VolumeSnapshotContentDelete}
		if _, err := snaps.SnapshotV1().VolumeSnapshotClasses().Create(ctx, vsc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = snaps.SnapshotV1().VolumeSnapshotClasses().Delete(context.Background(), vsc.Name, metav1.DeleteOptions{})
		})
		content, snapDir := takeSnapshot(t, ctx, snaps, ns, "src", vsc.Name, snapName)
		checkCopy(t, snapDir+"/data")

		// Written after the snapshot: the restore must not see it.
		env.ShT(t, "cd "+kubeenv.Quote(srcDir)+" && printf changed > a.txt && printf late > after.txt")
		c := newClaim(ns, "restored", claimOpts{class: &sc.Name})
		c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap"}
		env.CreateClaim(t, c)
		env.WaitBound(t, ns, "restored")
		checkCopy(t, kubeenv.ExportA+"/"+ns+"/restored", "after.txt")

		// Deleting the VolumeSnapshot (deletionPolicy Delete) has the sidecar delete its copy.
		deleteSnapshot(t, ctx, snaps, ns, content)
		if exists(t, snapDir) {
			t.Errorf("snapshot copy %s still on the export after the VolumeSnapshot was deleted", snapDir)
		}
		checkCopy(t, kubeenv.ExportA+"/"+ns+"/restored", "after.txt")
	})
}

func snapshotStatus(s *snapv1.VolumeSnapshotStatus) string {
	if s == nil {
		return "none"
	}
	var b []string
	if s.BoundVolumeSnapshotContentName != nil {
		b = append(b, "content "+*s.BoundVolumeSnapshotContentName)
	}
	if s.ReadyToUse != nil {
		b = append(b, "readyToUse "+map[bool]string{true: "true", false: "false"}[*s.ReadyToUse])
	}
	if s.Error != nil && s.Error.Message != nil {
		b = append(b, "error "+*s.Error.Message)
	}
	return strings.Join(b, ", ")
}

// volumeAttributesClass creates a VolumeAttributesClass (storage.k8s.io/v1) deleted at the end of
// the test.
func volumeAttributesClass(t *testing.T, name, driver string, params map[string]string) string {
	t.Helper()
	vacs := env.Cluster.Client.StorageV1().VolumeAttributesClasses()
	vac := &storagev1.VolumeAttributesClass{ObjectMeta: metav1.ObjectMeta{Name: name}, DriverName: driver, Parameters: params}
	if _, err := vacs.Create(kubeenv.Context(t, time.Minute), vac, metav1.CreateOptions{}); err != nil {
		t.Fatalf("VolumeAttributesClass %s: %v", name, err)
	}
	t.Cleanup(func() { _ = vacs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// A claim's VolumeAttributesClass decides the mode and owner of its new directory, over its
// StorageClass's, and the PV (and so the claim's status) carries the class.
func TestVolumeAttributesClassAtCreation(t *testing.T) {
	ns := env.NewNamespace(t, "vac")
	sc := storageClass(t, "vac", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}",
		"mode": "0777", "uid": "10", "gid": "20"}})
	vac := volumeAttributesClass(t, "gold-"+ns, kubeenv.Driver, map[string]string{"mode": "0750", "uid": "1001", "gid": "2002"})
	c := newClaim(ns, "data", claimOpts{class: &sc.Name})
	c.Spec.VolumeAttributesClassName = &vac
	env.CreateClaim(t, c)
	_, pv := env.WaitBound(t, ns, "data")
	if got := statOf(t, kubeenv.ExportA+"/"+ns+"/data"); got != "1001:2002:750" {
		t.Errorf("owner:group:mode of the volume = %s, want the VolumeAttributesClass's 1001:2002:750", got)
	}
	if got := ptr.Deref(pv.Spec.VolumeAttributesClassName, ""); got != vac {
		t.Errorf("PV volumeAttributesClassName %q, want %q", got, vac)
	}
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "the claim's currentVolumeAttributesClassName", func(ctx context.Context) (bool, string, error) {
		c, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		got := ptr.Deref(c.Status.CurrentVolumeAttributesClassName, "")
		return got == vac, "status.currentVolumeAttributesClassName " + got, nil
	})
}

// Refused claims stay Pending with an event that names the claim, the field and the reason; a claim
// for a volume populator is left to it, with the Normal event csi-provisioner records.
func TestSourceRefusalEvents(t *testing.T) {
	ns := env.NewNamespace(t, "refused")
	sc := storageClass(t, "refused", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}})
	createClaim(t, ns, "src", claimOpts{class: &sc.Name, size: "2Gi"})
	env.WaitBound(t, ns, "src")
	foreign := volumeAttributesClass(t, "foreign-"+ns, "ebs.csi.aws.com", map[string]string{"type": "gp3"})

	cases := []struct {
		name   string
		mutate func(*v1.PersistentVolumeClaim)
		size   string
		typ    string // event type
		reason string
		want   []string // all in the event's message; the first identifies the event
	}{
		{
			name: "smaller-than-source",
			size: "1Gi",
			mutate: func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
			},
			typ: v1.EventTypeWarning, reason: "ProvisioningFailed",
			want: []string{ns + "/smaller-than-source", "spec.dataSource", "PersistentVolumeClaim " + ns + "/src", "1Gi", "2Gi", "at least as large"},
		},
		{
			name:   "foreign-attributes-class",
			mutate: func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeAttributesClassName = &foreign },
			typ:    v1.EventTypeWarning, reason: "ProvisioningFailed",
			want: []string{ns + "/foreign-attributes-class", "spec.volumeAttributesClassName", foreign, "ebs.csi.aws.com"},
		},
		{
			name: "missing-snapshot",
			mutate: func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "nothing"}
			},
			typ: v1.EventTypeWarning, reason: "ProvisioningFailed",
			want: []string{ns + "/missing-snapshot", "spec.dataSource", "VolumeSnapshot " + ns + "/nothing", "not found", "will retry"},
		},
		{
			name: "populator",
			mutate: func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: ptr.To("hello.example.com"), Kind: "Hello", Name: "greeting"}
			},
			typ: v1.EventTypeNormal, reason: "Provisioning",
			want: []string{"Assuming an external populator will provision the volume"},
		},
	}
	for _, c := range cases {
		pvc := newClaim(ns, c.name, claimOpts{class: &sc.Name, size: c.size})
		c.mutate(pvc)
		env.CreateClaim(t, pvc)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var msg string
			kubeenv.WaitT(t, kubeenv.PhaseTimeout, "a "+c.reason+" event on claim "+c.name, func(ctx context.Context) (bool, string, error) {
				for _, e := range env.Events(ctx, ns, "PersistentVolumeClaim", c.name) {
					if e.Type == c.typ && e.Reason == c.reason && strings.Contains(e.Message, c.want[0]) {
						msg = e.Message
						return true, "", nil
					}
				}
				return false, "events: " + env.ClaimEvents(ctx, ns, c.name), nil
			})
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("event message does not name %q: %s", w, msg)
				}
			}
			ctx := kubeenv.Context(t, time.Minute)
			pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, c.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" {
				t.Errorf("claim is %s (volume %q), want Pending", pvc.Status.Phase, pvc.Spec.VolumeName)
			}
			if exists(t, kubeenv.ExportA+"/"+ns+"/"+c.name) {
				t.Errorf("the refused claim's directory is on the export")
			}
			src, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "src", metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			if err == nil && slices.Contains(src.Finalizers, provisioner.CloneFinalizer) {
				t.Errorf("a refused clone left %s on its source", provisioner.CloneFinalizer)
			}
		})
	}
}
