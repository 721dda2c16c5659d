package provisioner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/volume"
)

// sourceFixture is an export with a source volume (holding one file) and a snapshot of it, and the API
// objects that name them, as a cluster with the snapshot CRDs has them.
type sourceFixture struct {
	core     *recordingCore
	export   string
	srcDir   string // the source volume's directory on the export
	srcID    string // its volume handle
	snapID   string // the snapshot's handle
	srcClaim *v1.PersistentVolumeClaim
	srcPV    *v1.PersistentVolume
	snap     *snapv1.VolumeSnapshot
	content  *snapv1.VolumeSnapshotContent
	vacs     []*storagev1.VolumeAttributesClass
}

func newSourceFixture(t *testing.T) *sourceFixture {
	t.Helper()
	core, ws, export := newCoreAndWorkspace(t)
	ctx := context.Background()
	vol, err := core.d.Create(ctx, driver.CreateRequest{Name: "pvc-src", Parameters: class(nil).Parameters,
		Capabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}},
		Required: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	srcDir := filepath.Join(export, "pvc-src")
	if err := os.WriteFile(filepath.Join(srcDir, "hello.txt"), []byte("from the source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := volume.ParseID(vol.GetVolumeId())
	if err != nil {
		t.Fatal(err)
	}
	info, err := ws.CreateSnapshot(ctx, v, "snapshot-1")
	if err != nil {
		t.Fatal(err)
	}
	// Later writes must not reach the snapshot.
	if err := os.WriteFile(filepath.Join(srcDir, "after-snapshot.txt"), []byte("later\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &sourceFixture{core: core, export: export, srcDir: srcDir, srcID: vol.GetVolumeId(), snapID: info.ID}
	className := "paddock"
	f.srcClaim = &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "src", Namespace: "team-a", UID: "src-uid"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			StorageClassName: &className,
			VolumeName:       "pvc-src",
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound},
	}
	fs := v1.PersistentVolumeFilesystem
	f.srcPV = &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-src"},
		Spec: v1.PersistentVolumeSpec{
			StorageClassName: className,
			VolumeMode:       &fs,
			ClaimRef:         &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "team-a", Name: "src", UID: "src-uid"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: driverName, VolumeHandle: vol.GetVolumeId(), VolumeAttributes: vol.GetVolumeContext()}},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	ready := true
	content := "snapcontent-1"
	size := resource.MustParse("1Gi")
	f.snap = &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: "team-a", UID: "snap-uid"},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &f.srcClaim.Name}},
		Status:     &snapv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: &content, ReadyToUse: &ready, RestoreSize: &size},
	}
	handle := info.ID
	f.content = &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: content},
		Spec: snapv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: v1.ObjectReference{Kind: "VolumeSnapshot", Namespace: "team-a", Name: "snap", UID: "snap-uid"},
			Driver:            driverName, DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
		},
		Status: &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: &handle, ReadyToUse: &ready},
	}
	f.vacs = []*storagev1.VolumeAttributesClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "gold"}, DriverName: driverName, Parameters: map[string]string{"mode": "0750"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}, DriverName: "ebs.csi.aws.com", Parameters: map[string]string{"type": "gp3"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "typo"}, DriverName: driverName, Parameters: map[string]string{"mdoe": "0750"}},
	}
	return f
}

func claimFrom(kind, group, name string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		var g *string
		if group != "" {
			g = &group
		}
		c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: g, Kind: kind, Name: name}
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: g, Kind: kind, Name: name}
	}
}

func withVAC(name string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeAttributesClassName = &name }
}

// TestProvisionSources covers every accepted and refused data source and VolumeAttributesClass, with
// the API objects in fake clientsets and the volumes on a local export.
func TestProvisionSources(t *testing.T) {
	now := metav1.Now()
	const claimName = "team-a/data"
	tests := []struct {
		name    string
		claim   []func(*v1.PersistentVolumeClaim)
		fixture func(*sourceFixture)
		class   *storagev1.StorageClass
		noSnaps bool // the provisioner has no VolumeSnapshot client

		// Accepted:
		wantFile   string // a file the new volume must hold (its content is the source's)
		noFile     string // a file it must not hold
		wantSource string // "volume" or "snapshot"
		wantMode   os.FileMode
		wantVAC    string
		// Refused: the state, whether the refusal is final (InvalidArgument), and the words of the message.
		state   controller.ProvisioningState
		final   bool
		wantErr []string
		ignored bool
	}{
		{
			name: "clone through dataSource", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			wantFile: "hello.txt", wantSource: "volume",
		},
		{
			name: "clone through dataSourceRef alone",
			claim: []func(*v1.PersistentVolumeClaim){func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: kindClaim, Name: "src"}
			}},
			wantFile: "hello.txt", wantSource: "volume",
		},
		{
			name:     "clone larger than its source",
			claim:    []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src"), requesting("2Gi")},
			wantFile: "hello.txt", wantSource: "volume",
		},
		{
			// csi-provisioner v6 allows it (since v3.2); the core copies within the export.
			name:     "clone from a claim of another class of the driver on the same export",
			claim:    []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture:  func(f *sourceFixture) { other := "paddock-other"; f.srcClaim.Spec.StorageClassName = &other },
			wantFile: "hello.txt", wantSource: "volume",
		},
		{
			name:  "clone of a source being deleted whose copy had started",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) {
				f.srcClaim.DeletionTimestamp = &now
				f.srcClaim.Finalizers = []string{"kubernetes.io/pvc-protection", CloneFinalizer}
			},
			wantFile: "hello.txt", wantSource: "volume",
		},
		{
			name:     "restore from a VolumeSnapshot",
			claim:    []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			wantFile: "hello.txt", noFile: "after-snapshot.txt", wantSource: "snapshot",
		},
		{
			name:     "restore of a snapshot without restoreSize",
			claim:    []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture:  func(f *sourceFixture) { f.snap.Status.RestoreSize = nil },
			wantFile: "hello.txt", wantSource: "snapshot",
		},
		{
			name: "VolumeAttributesClass sets the mode", claim: []func(*v1.PersistentVolumeClaim){withVAC("gold")},
			wantMode: 0o750, wantVAC: "gold",
		},
		{
			name:     "clone with a VolumeAttributesClass",
			claim:    []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src"), withVAC("gold")},
			wantFile: "hello.txt", wantSource: "volume", wantMode: 0o750, wantVAC: "gold",
		},

		// Final refusals.
		{
			name: "cross-namespace dataSourceRef",
			claim: []func(*v1.PersistentVolumeClaim){func(c *v1.PersistentVolumeClaim) {
				ns := "team-b"
				c.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: kindClaim, Name: "src", Namespace: &ns}
			}},
			final: true, wantErr: []string{"spec.dataSourceRef", "team-b/src", "another namespace", "ReferenceGrant"},
		},
		{
			name: "snapshot source of the wrong API group", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, "example.com", "snap")},
			final: true, wantErr: []string{"spec.dataSource", "apiGroup", snapshotGroup, "example.com"},
		},
		{
			name: "claim source with an API group", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "example.com", "src")},
			final: true, wantErr: []string{"spec.dataSource", "example.com", "cannot be cloned"},
		},
		{
			name:  "clone smaller than its source",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src"), requesting("512Mi")},
			final: true, wantErr: []string{"spec.dataSource", "512Mi", "1Gi", "at least as large"},
		},
		{
			name:    "clone of another driver's volume",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) { f.srcPV.Spec.CSI.Driver = "ebs.csi.aws.com" },
			final:   true, wantErr: []string{"spec.dataSource", "PersistentVolumeClaim team-a/src", "ebs.csi.aws.com", driverName},
		},
		{
			name:  "clone of a volume that is not CSI",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) {
				f.srcPV.Spec.PersistentVolumeSource = v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/data"}}
			},
			final: true, wantErr: []string{"spec.dataSource", "not a CSI volume"},
		},
		{
			name:    "restore of another driver's snapshot",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { f.content.Spec.Driver = "ebs.csi.aws.com" },
			final:   true, wantErr: []string{"spec.dataSource", "VolumeSnapshot team-a/snap", "ebs.csi.aws.com"},
		},
		{
			name:  "restore smaller than restoreSize",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap"), requesting("100Mi")},
			final: true, wantErr: []string{"spec.dataSource", "restoreSize", "100Mi", "1Gi"},
		},
		{
			name: "restore without a snapshot client", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			noSnaps: true, final: true, wantErr: []string{"spec.dataSource", "VolumeSnapshot client"},
		},
		{
			name: "VolumeAttributesClass of another driver", claim: []func(*v1.PersistentVolumeClaim){withVAC("foreign")},
			final: true, wantErr: []string{"spec.volumeAttributesClassName", "foreign", "ebs.csi.aws.com"},
		},
		{
			name: "VolumeAttributesClass with an unknown parameter", claim: []func(*v1.PersistentVolumeClaim){withVAC("typo")},
			final: true, wantErr: []string{"spec.volumeAttributesClassName", "VolumeAttributesClass typo", "mutable_parameters", `"mdoe"`},
		},
		{
			name:  "clone from another export",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			class: class(map[string]string{"share": testShare + "/inner"}),
			final: true, wantErr: []string{"spec.dataSource", "PersistentVolumeClaim team-a/src", "copies between exports are not supported"},
		},

		// Not yet: retried with backoff, no slow-retry, no volume.
		{
			name: "source claim missing", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "nothing")},
			state: controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/nothing", "not found", "will retry"},
		},
		{
			name:    "source claim not bound",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) { f.srcClaim.Status.Phase = v1.ClaimPending },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/src", "Pending, not Bound"},
		},
		{
			name:  "source claim being deleted",
			claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) {
				f.srcClaim.DeletionTimestamp = &now
				f.srcClaim.Finalizers = []string{"kubernetes.io/pvc-protection"}
			},
			state: controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/src", "being deleted"},
		},
		{
			name:    "source PV bound to another claim",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindClaim, "", "src")},
			fixture: func(f *sourceFixture) { f.srcPV.Spec.ClaimRef.UID = "old-uid" },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "pvc-src", "not bound to it"},
		},
		{
			name: "snapshot missing", claim: []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "nothing")},
			state: controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "VolumeSnapshot team-a/nothing", "not found"},
		},
		{
			name:    "snapshot not bound to a content",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { f.snap.Status = nil },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/snap", "not bound to a VolumeSnapshotContent"},
		},
		{
			name:    "snapshot not ready",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { no := false; f.snap.Status.ReadyToUse = &no },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/snap", "not ReadyToUse"},
		},
		{
			name:    "snapshot content without a handle",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { f.content.Status = nil },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "snapcontent-1", "no snapshotHandle"},
		},
		{
			name:    "snapshot content bound to another snapshot",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { f.content.Spec.VolumeSnapshotRef.UID = "old-uid" },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "snapcontent-1", "another snapshot"},
		},
		{
			name:    "snapshot being deleted",
			claim:   []func(*v1.PersistentVolumeClaim){claimFrom(kindSnapshot, snapshotGroup, "snap")},
			fixture: func(f *sourceFixture) { f.snap.DeletionTimestamp = &now; f.snap.Finalizers = []string{"x"} },
			state:   controller.ProvisioningNoChange, wantErr: []string{"spec.dataSource", "team-a/snap", "being deleted"},
		},
		{
			name: "VolumeAttributesClass missing", claim: []func(*v1.PersistentVolumeClaim){withVAC("platinum")},
			state: controller.ProvisioningNoChange, wantErr: []string{"spec.volumeAttributesClassName", "platinum", "not found"},
		},

		// A populator's claim.
		{
			name: "dataSourceRef to a populator",
			claim: []func(*v1.PersistentVolumeClaim){func(c *v1.PersistentVolumeClaim) {
				g := "hello.example.com"
				c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &g, Kind: "Hello", Name: "greeting"}
			}},
			ignored: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newSourceFixture(t)
			if tc.fixture != nil {
				tc.fixture(f)
			}
			kube := fake.NewClientset(f.srcClaim, f.srcPV, f.vacs[0], f.vacs[1], f.vacs[2])
			snaps := snapfake.NewSimpleClientset(f.snap, f.content)
			// The finalizer on the source claim, as the core's Create sees it.
			var atCreate []string
			core := &hookedCore{Core: f.core, before: func() {
				if c, err := kube.CoreV1().PersistentVolumeClaims("team-a").Get(context.Background(), "src", metav1.GetOptions{}); err == nil {
					atCreate = c.Finalizers
				}
			}}
			recorder := record.NewFakeRecorder(10)
			opts := []Option{WithKubeClient(kube), WithEventRecorder(recorder)}
			if !tc.noSnaps {
				opts = append(opts, WithSnapshotClient(snaps))
			}
			p := New(driverName, core, opts...)
			sc := tc.class
			if sc == nil {
				sc = class(nil)
			}
			c := claim(tc.claim...)
			before := listExport(t, f.export)
			pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-1", PVC: c})

			if tc.ignored {
				var ignored *controller.IgnoredError
				if !errors.As(err, &ignored) || state != controller.ProvisioningFinished {
					t.Fatalf("Provision = %v, %q; want an IgnoredError, Finished", err, state)
				}
				if ev := <-recorder.Events; !strings.Contains(ev, "Normal Provisioning") || !strings.Contains(ev, "external populator") {
					t.Errorf("event %q", ev)
				}
				if len(f.core.creates) != 0 {
					t.Errorf("core saw %d creates", len(f.core.creates))
				}
				return
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Provision succeeded with PV %+v; want an error", pv)
				}
				wantState := tc.state
				if tc.final {
					wantState = controller.ProvisioningFinished
				}
				if state != wantState {
					t.Errorf("state = %q, want %q", state, wantState)
				}
				if code := status.Code(err); (code == codes.InvalidArgument) != tc.final {
					t.Errorf("code = %v; final refusals (and only they) must be InvalidArgument: %v", code, err)
				}
				for _, w := range append([]string{claimName}, tc.wantErr...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if after := listExport(t, f.export); !slices.Equal(before, after) {
					t.Errorf("export changed by a refused Provision:\nbefore %v\nafter  %v", before, after)
				}
				if got := finalizers(t, kube); slices.Contains(got, CloneFinalizer) && !slices.Contains(f.srcClaim.Finalizers, CloneFinalizer) {
					t.Errorf("source keeps the cloning finalizer after a refusal: %v", got)
				}
				return
			}
			if err != nil || state != controller.ProvisioningFinished {
				t.Fatalf("Provision: state %q, err %v", state, err)
			}
			req := f.core.creates[len(f.core.creates)-1]
			switch tc.wantSource {
			case "volume":
				if req.Source.GetVolume().GetVolumeId() != f.srcID {
					t.Errorf("content source %v, want volume %s", req.Source, f.srcID)
				}
				if !slices.Contains(atCreate, CloneFinalizer) {
					t.Errorf("source claim's finalizers during the copy %v; want %s", atCreate, CloneFinalizer)
				}
				if slices.Contains(finalizers(t, kube), CloneFinalizer) {
					t.Errorf("source claim keeps %s after the clone", CloneFinalizer)
				}
			case "snapshot":
				if req.Source.GetSnapshot().GetSnapshotId() != f.snapID {
					t.Errorf("content source %v, want snapshot %s", req.Source, f.snapID)
				}
			default:
				if req.Source != nil {
					t.Errorf("content source %v, want none", req.Source)
				}
			}
			dir := filepath.Join(f.export, "pvc-1")
			if tc.wantFile != "" {
				b, err := os.ReadFile(filepath.Join(dir, tc.wantFile))
				if err != nil || string(b) != "from the source\n" {
					t.Errorf("%s in the new volume: %q, %v", tc.wantFile, b, err)
				}
			}
			if tc.noFile != "" {
				if _, err := os.Lstat(filepath.Join(dir, tc.noFile)); !os.IsNotExist(err) {
					t.Errorf("%s is in the restored volume (written after the snapshot): %v", tc.noFile, err)
				}
			}
			if tc.wantMode != 0 {
				fi, err := os.Stat(dir)
				if err != nil || fi.Mode().Perm() != tc.wantMode {
					t.Errorf("volume directory mode %v, %v; want %v", fi.Mode().Perm(), err, tc.wantMode)
				}
			}
			gotVAC := deref(pv.Spec.VolumeAttributesClassName)
			if gotVAC != tc.wantVAC {
				t.Errorf("PV volumeAttributesClassName %q, want %q", gotVAC, tc.wantVAC)
			}
			if tc.wantVAC != "" && req.MutableParameters["mode"] != "0750" {
				t.Errorf("mutable parameters %v", req.MutableParameters)
			}
			if tc.wantVAC == "" && req.MutableParameters != nil {
				t.Errorf("mutable parameters %v without a class", req.MutableParameters)
			}
		})
	}
}

func requesting(q string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests = v1.ResourceList{v1.ResourceStorage: resource.MustParse(q)}
	}
}

func finalizers(t *testing.T, kube *fake.Clientset) []string {
	t.Helper()
	c, err := kube.CoreV1().PersistentVolumeClaims("team-a").Get(context.Background(), "src", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Finalizers
}

// listExport lists every path under the export, metadata area included.
func listExport(t *testing.T, export string) []string {
	t.Helper()
	var paths []string
	err := filepath.Walk(export, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, strings.TrimPrefix(p, export))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// hookedCore runs before ahead of every Create.
type hookedCore struct {
	Core
	before func()
}

func (c *hookedCore) Create(ctx context.Context, r driver.CreateRequest) (*csi.Volume, error) {
	c.before()
	return c.Core.Create(ctx, r)
}
