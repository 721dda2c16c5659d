package provisioner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

const driverName = "nfs.paddock.dev"

// recordingCore passes calls to the real driver and remembers the requests.
type recordingCore struct {
	d       *driver.Driver
	mu      sync.Mutex
	creates []driver.CreateRequest
	deletes []string
}

func (c *recordingCore) Create(ctx context.Context, r driver.CreateRequest) (*csi.Volume, error) {
	c.mu.Lock()
	c.creates = append(c.creates, r)
	c.mu.Unlock()
	return c.d.Create(ctx, r)
}

func (c *recordingCore) Delete(ctx context.Context, r driver.DeleteRequest) error {
	c.mu.Lock()
	c.deletes = append(c.deletes, r.ID)
	c.mu.Unlock()
	return c.d.Delete(ctx, r)
}

func newCore(t *testing.T) (*recordingCore, string) {
	t.Helper()
	core, _, export := newCoreAndWorkspace(t)
	return core, export
}

// newCoreAndWorkspace also returns the driver's workspace, for tests that make snapshots on it.
func newCoreAndWorkspace(t *testing.T) (*recordingCore, *share.Workspace, string) {
	t.Helper()
	ws, export := newWorkspace(t)
	d, err := driver.New(driver.Options{Name: driverName, Version: "test", Mode: driver.ModeController,
		Endpoint: "unix:///unused", FSTimeout: 5 * time.Second}, ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &recordingCore{d: d}, ws, export
}

func policy(p v1.PersistentVolumeReclaimPolicy) *v1.PersistentVolumeReclaimPolicy { return &p }

func class(params map[string]string, mutate ...func(*storagev1.StorageClass)) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{
		ObjectMeta:    metav1.ObjectMeta{Name: "paddock", UID: "class-uid"},
		Provisioner:   driverName,
		Parameters:    map[string]string{"server": testServer, "share": testShare},
		ReclaimPolicy: policy(v1.PersistentVolumeReclaimDelete),
		MountOptions:  []string{"nfsvers=4.1", "hard"},
	}
	for k, v := range params {
		if v == "" {
			delete(sc.Parameters, k)
		} else {
			sc.Parameters[k] = v
		}
	}
	for _, m := range mutate {
		m(sc)
	}
	return sc
}

func claim(mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "team-a", UID: "0000-1111",
			Labels: map[string]string{"team": "blue"}, Annotations: map[string]string{"paddock.dev/owner": "alice"}},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func TestProvision(t *testing.T) {
	fs := v1.PersistentVolumeFilesystem
	block := v1.PersistentVolumeBlock
	tests := []struct {
		name     string
		class    *storagev1.StorageClass
		claim    *v1.PersistentVolumeClaim
		selected string
		// On success:
		policy v1.PersistentVolumeReclaimPolicy
		subDir string
		modes  []csi.VolumeCapability_AccessMode_Mode
		limit  int64
		// On failure: the state and the words the message must contain.
		wantErr []string
		state   controller.ProvisioningState
	}{
		{
			name: "RWX with class defaults", class: class(nil), claim: claim(),
			policy: v1.PersistentVolumeReclaimDelete, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "every access mode maps", class: class(nil),
			claim: claim(func(c *v1.PersistentVolumeClaim) {
				c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteOncePod, v1.ReadOnlyMany, v1.ReadWriteMany}
			}),
			policy: v1.PersistentVolumeReclaimDelete, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{
				csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
				csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "class reclaimPolicy Retain", class: class(nil, func(sc *storagev1.StorageClass) { sc.ReclaimPolicy = policy(v1.PersistentVolumeReclaimRetain) }),
			claim: claim(), policy: v1.PersistentVolumeReclaimRetain, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "no class reclaimPolicy means Delete", class: class(nil, func(sc *storagev1.StorageClass) { sc.ReclaimPolicy = nil }),
			claim: claim(), policy: v1.PersistentVolumeReclaimDelete, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "reclaimPolicy parameter Recycle overrides the class's Retain",
			class: class(map[string]string{"reclaimPolicy": "Recycle"}, func(sc *storagev1.StorageClass) {
				sc.ReclaimPolicy = policy(v1.PersistentVolumeReclaimRetain)
			}),
			claim: claim(), policy: v1.PersistentVolumeReclaimRecycle, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name:  "template uses namespace, name, labels and annotations",
			class: class(map[string]string{"subDir": "${pvc.metadata.namespace}/${pvc.metadata.labels['team']}-${pvc.metadata.annotations['paddock.dev/owner']}-${pvc.metadata.name}-${pv.metadata.name}"}),
			claim: claim(), policy: v1.PersistentVolumeReclaimDelete, subDir: "team-a/blue-alice-data-pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "WaitForFirstConsumer claim with a selected node", class: class(nil), selected: "node-1",
			claim: claim(func(c *v1.PersistentVolumeClaim) {
				c.Annotations["volume.kubernetes.io/selected-node"] = "node-1"
				c.Spec.VolumeMode = &fs
			}),
			policy: v1.PersistentVolumeReclaimDelete, subDir: "pvc-1",
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "claim limit is passed on", class: class(nil),
			claim: claim(func(c *v1.PersistentVolumeClaim) {
				c.Spec.Resources.Limits = v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}
			}),
			policy: v1.PersistentVolumeReclaimDelete, subDir: "pvc-1", limit: 2 << 30,
			modes: []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		{
			name: "unknown parameter is named", class: class(map[string]string{"sever": "x"}), claim: claim(),
			wantErr: []string{`"sever"`, "unknown parameter", "team-a/data"}, state: controller.ProvisioningFinished,
		},
		{
			name: "missing server is named", class: class(map[string]string{"server": ""}), claim: claim(),
			wantErr: []string{`"server"`, "required"}, state: controller.ProvisioningFinished,
		},
		{
			name: "bad reclaimPolicy parameter is named", class: class(map[string]string{"reclaimPolicy": "Scrub"}), claim: claim(),
			wantErr: []string{`"reclaimPolicy"`, "Scrub"}, state: controller.ProvisioningFinished,
		},
		{
			name: "template label the claim lacks", class: class(map[string]string{"subDir": "${pvc.metadata.labels['cost-center']}"}), claim: claim(),
			wantErr: []string{`"subDir"`, "cost-center"}, state: controller.ProvisioningFinished,
		},
		{
			name: "block claim refused", class: class(nil),
			claim:   claim(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block }),
			wantErr: []string{"block"}, state: controller.ProvisioningFinished,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, export := newCore(t)
			p := New(driverName, core)
			pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
				StorageClass: tc.class, PVName: "pvc-1", PVC: tc.claim, SelectedNodeName: tc.selected})
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Provision succeeded with PV %+v; want an error", pv)
				}
				if state != tc.state {
					t.Errorf("state = %q, want %q", state, tc.state)
				}
				// InvalidArgument is what the library treats as infeasible: event, slow retries.
				if code := status.Code(err); code != codes.InvalidArgument {
					t.Errorf("code = %v, want InvalidArgument (%v)", code, err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				entries, _ := os.ReadDir(export)
				for _, e := range entries {
					if e.Name() != volume.MetaDir {
						t.Errorf("export has %q after a failed Provision", e.Name())
					}
				}
				return
			}
			if err != nil || state != controller.ProvisioningFinished {
				t.Fatalf("Provision: state %q, err %v", state, err)
			}
			if fi, err := os.Stat(filepath.Join(export, tc.subDir)); err != nil || !fi.IsDir() {
				t.Fatalf("volume directory %s: %v", tc.subDir, err)
			}
			checkPV(t, pv, tc.class, tc.claim, tc.policy, tc.subDir)

			req := core.creates[0]
			if req.Name != "pvc-1" || req.Required != 1<<30 || req.Limit != tc.limit {
				t.Errorf("CreateRequest name %q required %d limit %d", req.Name, req.Required, req.Limit)
			}
			if req.Vars.PVCName != "data" || req.Vars.PVCNamespace != "team-a" || req.Vars.PVName != "pvc-1" ||
				req.Vars.Labels["team"] != "blue" || req.Vars.Annotations["paddock.dev/owner"] != "alice" {
				t.Errorf("template vars %+v", req.Vars)
			}
			if len(req.Capabilities) != len(tc.modes) {
				t.Fatalf("%d capabilities, want %d", len(req.Capabilities), len(tc.modes))
			}
			for i, c := range req.Capabilities {
				if c.GetAccessMode().GetMode() != tc.modes[i] {
					t.Errorf("capability %d mode %v, want %v", i, c.GetAccessMode().GetMode(), tc.modes[i])
				}
				if got := strings.Join(c.GetMount().GetMountFlags(), ","); got != "nfsvers=4.1,hard" {
					t.Errorf("capability %d mount flags %q", i, got)
				}
			}
		})
	}
}

func checkPV(t *testing.T, pv *v1.PersistentVolume, sc *storagev1.StorageClass, c *v1.PersistentVolumeClaim, pol v1.PersistentVolumeReclaimPolicy, subDir string) {
	t.Helper()
	if pv.Name != "pvc-1" {
		t.Errorf("PV name %q", pv.Name)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != pol {
		t.Errorf("reclaim policy %q, want %q", pv.Spec.PersistentVolumeReclaimPolicy, pol)
	}
	if q := pv.Spec.Capacity[v1.ResourceStorage]; q.Cmp(c.Spec.Resources.Requests[v1.ResourceStorage]) != 0 {
		t.Errorf("capacity %s", q.String())
	}
	if strings.Join(accessModeStrings(pv.Spec.AccessModes), ",") != strings.Join(accessModeStrings(c.Spec.AccessModes), ",") {
		t.Errorf("access modes %v, want %v", pv.Spec.AccessModes, c.Spec.AccessModes)
	}
	if strings.Join(pv.Spec.MountOptions, ",") != strings.Join(sc.MountOptions, ",") {
		t.Errorf("mount options %v", pv.Spec.MountOptions)
	}
	if pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != v1.PersistentVolumeFilesystem {
		t.Errorf("volume mode %v", pv.Spec.VolumeMode)
	}
	if pv.Spec.StorageClassName != sc.Name {
		t.Errorf("storage class %q", pv.Spec.StorageClassName)
	}
	src := pv.Spec.CSI
	if src == nil || src.Driver != driverName {
		t.Fatalf("CSI source %+v", src)
	}
	v, err := volume.ParseID(src.VolumeHandle)
	if err != nil || v.SubDir != subDir || v.Name != "pvc-1" || v.Server != testServer || v.Share != testShare {
		t.Errorf("volume handle %q decodes to %+v, %v", src.VolumeHandle, v, err)
	}
	// The class's mountOptions pin nfsvers=4.1, which the ID and the attributes then carry.
	want := map[string]string{"server": testServer, "share": testShare, "subDir": subDir, "nfsvers": "4.1"}
	if len(src.VolumeAttributes) != len(want) {
		t.Errorf("volume attributes %v, want %v", src.VolumeAttributes, want)
	}
	for k, val := range want {
		if src.VolumeAttributes[k] != val {
			t.Errorf("volume attribute %s = %q, want %q", k, src.VolumeAttributes[k], val)
		}
	}
}

func accessModeStrings(ms []v1.PersistentVolumeAccessMode) []string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m))
	}
	return s
}

func TestProvisionIsIdempotent(t *testing.T) {
	core, _ := newCore(t)
	p := New(driverName, core)
	opts := controller.ProvisionOptions{StorageClass: class(nil), PVName: "pvc-1", PVC: claim()}
	pv1, _, err := p.Provision(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	pv2, _, err := p.Provision(context.Background(), opts)
	if err != nil {
		t.Fatalf("second Provision (library retry after a lost PV save): %v", err)
	}
	if pv1.Spec.CSI.VolumeHandle != pv2.Spec.CSI.VolumeHandle {
		t.Errorf("handles differ: %q, %q", pv1.Spec.CSI.VolumeHandle, pv2.Spec.CSI.VolumeHandle)
	}
}

func TestProvisionExistingDirectoryIsFinal(t *testing.T) {
	core, export := newCore(t)
	if err := os.Mkdir(filepath.Join(export, "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := New(driverName, core)
	_, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: class(map[string]string{"subDir": "taken"}), PVName: "pvc-1", PVC: claim()})
	if err == nil || !strings.Contains(err.Error(), "reuseExisting") {
		t.Fatalf("err = %v, want a refusal that mentions reuseExisting", err)
	}
	if state != controller.ProvisioningFinished {
		t.Errorf("state %q", state)
	}
}

func TestStateOf(t *testing.T) {
	for code, want := range map[codes.Code]controller.ProvisioningState{
		codes.InvalidArgument:    controller.ProvisioningFinished,
		codes.AlreadyExists:      controller.ProvisioningFinished,
		codes.Internal:           controller.ProvisioningFinished,
		codes.DeadlineExceeded:   controller.ProvisioningInBackground,
		codes.Canceled:           controller.ProvisioningInBackground,
		codes.Unavailable:        controller.ProvisioningInBackground,
		codes.ResourceExhausted:  controller.ProvisioningInBackground,
		codes.FailedPrecondition: controller.ProvisioningFinished,
	} {
		if got := stateOf(status.Error(code, "x")); got != want {
			t.Errorf("%v: %q, want %q", code, got, want)
		}
	}
}

func TestDelete(t *testing.T) {
	core, export := newCore(t)
	p := New(driverName, core)
	pv, _, err := p.Provision(context.Background(), controller.ProvisionOptions{StorageClass: class(nil), PVName: "pvc-1", PVC: claim()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(export, "pvc-1", "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(export, "static-dir")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	static := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "static"}, Spec: v1.PersistentVolumeSpec{
		PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: driverName,
			VolumeHandle: "static-dir", VolumeAttributes: map[string]string{"server": testServer, "share": testShare, "subDir": "static-dir"}}}}}
	other := static.DeepCopy()
	other.Spec.CSI.Driver = "other.csi.example.com"
	other.Spec.CSI.VolumeHandle = pv.Spec.CSI.VolumeHandle
	hostPath := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "hp"}}

	for _, pv := range []*v1.PersistentVolume{other, hostPath} {
		var ignored *controller.IgnoredError
		if err := p.Delete(context.Background(), pv); !errors.As(err, &ignored) {
			t.Errorf("Delete(%s) = %v, want IgnoredError", pv.Name, err)
		}
	}
	if err := p.Delete(context.Background(), static); err != nil {
		t.Errorf("Delete(static PV) = %v, want nil (nothing to delete)", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("static PV's directory touched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(export, "pvc-1")); err != nil {
		t.Fatalf("volume directory gone before its Delete: %v", err)
	}
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(export, "pvc-1")); !os.IsNotExist(err) {
		t.Errorf("volume directory still there after Delete: %v", err)
	}
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if n := len(core.deletes); n != 3 {
		t.Errorf("core saw %d deletes, want 3 (static, pvc-1 twice): %v", n, core.deletes)
	}
}

func TestLeaseName(t *testing.T) {
	for in, want := range map[string]string{
		"nfs.paddock.dev":  "nfs-paddock-dev-controller",
		"Example.com/NFS":  "example-com-nfs-controller",
		"nfs2.paddock.dev": "nfs2-paddock-dev-controller",
		".odd-name.":       "odd-name-controller",
	} {
		if got := LeaseName(in); got != want {
			t.Errorf("LeaseName(%q) = %q, want %q", in, got, want)
		}
	}
}
