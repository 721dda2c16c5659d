//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/pkg/volume"
	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// A claim is provisioned into the directory its class's template names (namespace, a label and an
// annotation of the claim), with the class's owner and mode, and its PV carries what Kubernetes needs.
func TestProvisionTemplateOwnershipAndPV(t *testing.T) {
	ns := env.NewNamespace(t, "prov")
	sc := storageClass(t, "prov", classOpts{
		params: map[string]string{
			"server": kubeenv.Server, "share": kubeenv.ExportA,
			"subDir": "${pvc.metadata.namespace}/${pvc.metadata.labels['team']}-${pvc.metadata.annotations['paddock.example/purpose']}",
			"uid":    "1000", "gid": "2000", "mode": "2770",
		},
		reclaim:      v1.PersistentVolumeReclaimRetain,
		mountOptions: []string{"nfsvers=4.1", "hard"},
	})
	createClaim(t, ns, "data", claimOpts{
		class:       &sc.Name,
		labels:      map[string]string{"team": "shop"},
		annotations: map[string]string{"paddock.example/purpose": "orders"},
		modes:       []v1.PersistentVolumeAccessMode{v1.ReadWriteMany, v1.ReadOnlyMany},
		size:        "3Gi",
	})
	pvc, pv := env.WaitBound(t, ns, "data")
	subDir := ns + "/shop-orders"
	dir := kubeenv.ExportA + "/" + subDir

	// The export.
	if !exists(t, dir) {
		t.Fatalf("directory %s not on the export; %s holds %v", dir, kubeenv.ExportA+"/"+ns, ls(t, kubeenv.ExportA+"/"+ns))
	}
	if got := ls(t, kubeenv.ExportA+"/"+ns); !slices.Equal(got, []string{"shop-orders"}) {
		t.Errorf("%s/%s holds %v, want only shop-orders", kubeenv.ExportA, ns, got)
	}
	if got := statOf(t, dir); got != "1000:2000:2770" {
		t.Errorf("owner:group:mode of %s = %s, want 1000:2000:2770 (class uid, gid, mode)", dir, got)
	}
	if c := claimFile(t, kubeenv.ExportA, subDir); !strings.Contains(c, pv.Name) {
		t.Errorf("claim record of %s does not name PV %s: %s", subDir, pv.Name, c)
	}

	// The PV.
	if pv.Spec.CSI == nil {
		t.Fatalf("PV %s is not a CSI volume: %+v", pv.Name, pv.Spec.PersistentVolumeSource)
	}
	if pv.Spec.CSI.Driver != kubeenv.Driver {
		t.Errorf("PV driver %q, want %q", pv.Spec.CSI.Driver, kubeenv.Driver)
	}
	vol, err := volume.ParseID(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		t.Fatalf("volume handle %q: %v", pv.Spec.CSI.VolumeHandle, err)
	}
	if vol.Server != kubeenv.Server || vol.Share != kubeenv.ExportA || vol.SubDir != subDir || vol.Name != pv.Name {
		t.Errorf("volume handle %q decodes to %+v, want server %s share %s subDir %s name %s", pv.Spec.CSI.VolumeHandle, vol, kubeenv.Server, kubeenv.ExportA, subDir, pv.Name)
	}
	if a := pv.Spec.CSI.VolumeAttributes; a["server"] != kubeenv.Server || a["share"] != kubeenv.ExportA || a["subDir"] != subDir {
		t.Errorf("volumeAttributes %v, want server/share/subDir of the volume", a)
	}
	if !slices.Equal(pv.Spec.MountOptions, []string{"nfsvers=4.1", "hard"}) {
		t.Errorf("PV mountOptions %v, want the class's [nfsvers=4.1 hard]", pv.Spec.MountOptions)
	}
	if !slices.Equal(pv.Spec.AccessModes, []v1.PersistentVolumeAccessMode{v1.ReadWriteMany, v1.ReadOnlyMany}) {
		t.Errorf("PV access modes %v, want the claim's [RWX ROX]", pv.Spec.AccessModes)
	}
	if got := pv.Spec.Capacity[v1.ResourceStorage]; got.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Errorf("PV capacity %s, want the claim's 3Gi", got.String())
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Errorf("PV reclaim policy %s, want the class's Retain", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if pv.Spec.StorageClassName != sc.Name {
		t.Errorf("PV class %q, want %q", pv.Spec.StorageClassName, sc.Name)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID {
		t.Errorf("PV claimRef %v, want claim %s/data (uid %s)", pv.Spec.ClaimRef, ns, pvc.UID)
	}
	if pv.Annotations["pv.kubernetes.io/provisioned-by"] != kubeenv.Driver {
		t.Errorf("PV annotation pv.kubernetes.io/provisioned-by = %q, want %q", pv.Annotations["pv.kubernetes.io/provisioned-by"], kubeenv.Driver)
	}

	// Retain: deleting the claim and then the PV leaves the directory (and avoids leaking into other
	// tests' listings, the directory is removed by hand).
	env.DeleteClaim(t, ns, "data")
	env.WaitPV(t, pv.Name, v1.VolumeReleased)
	deletePV(t, pv.Name)
	env.ShT(t, "rm -rf "+kubeenv.Quote(kubeenv.ExportA+"/"+ns))
}

// Two classes on two exports of the same server: each claim's directory is on its own export only.
func TestTwoClassesTwoExports(t *testing.T) {
	ns := env.NewNamespace(t, "exports")
	tmpl := "${pvc.metadata.namespace}-${pvc.metadata.name}"
	a := storageClass(t, "export-a", classOpts{params: map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": tmpl}})
	b := storageClass(t, "export-b", classOpts{params: map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportB, "subDir": tmpl}})
	createClaim(t, ns, "on-a", claimOpts{class: &a.Name})
	createClaim(t, ns, "on-b", claimOpts{class: &b.Name})
	_, pvA := env.WaitBound(t, ns, "on-a")
	_, pvB := env.WaitBound(t, ns, "on-b")
	for _, c := range []struct {
		pv           *v1.PersistentVolume
		dir, on, off string
	}{
		{pvA, ns + "-on-a", kubeenv.ExportA, kubeenv.ExportB},
		{pvB, ns + "-on-b", kubeenv.ExportB, kubeenv.ExportA},
	} {
		if !exists(t, c.on+"/"+c.dir) {
			t.Errorf("%s not on %s (it holds %v)", c.dir, c.on, ls(t, c.on))
		}
		if exists(t, c.off+"/"+c.dir) {
			t.Errorf("%s is also on the other export %s", c.dir, c.off)
		}
		if got := c.pv.Spec.CSI.VolumeAttributes["share"]; got != c.on {
			t.Errorf("PV %s share %q, want %q", c.pv.Name, got, c.on)
		}
	}
	// A file written on one export is not visible on the other.
	writeFile(t, kubeenv.ExportA+"/"+ns+"-on-a/f", "a")
	if exists(t, kubeenv.ExportB+"/"+ns+"-on-a/f") {
		t.Errorf("file written on %s shows on %s", kubeenv.ExportA, kubeenv.ExportB)
	}
	env.DeleteClaim(t, ns, "on-a")
	env.DeleteClaim(t, ns, "on-b")
	env.WaitPVGone(t, pvA.Name)
	env.WaitPVGone(t, pvB.Name)
}

// WaitForFirstConsumer: the claim waits, unprovisioned, until a pod that uses it is scheduled; the
// scheduler's selected-node annotation then triggers provisioning and the claim binds.
func TestWaitForFirstConsumer(t *testing.T) {
	ns := env.NewNamespace(t, "wffc")
	sc := storageClass(t, "wffc", classOpts{wffc: true, params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}})
	createClaim(t, ns, "late", claimOpts{class: &sc.Name})
	dir := kubeenv.ExportA + "/" + ns + "-late"

	// Pending and waiting for a consumer: the PV controller says so in an event.
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "WaitForFirstConsumer event on the claim", func(ctx context.Context) (bool, string, error) {
		for _, e := range env.Events(ctx, ns, "PersistentVolumeClaim", "late") {
			if e.Reason == "WaitForFirstConsumer" {
				return true, "", nil
			}
		}
		return false, "events: " + env.ClaimEvents(ctx, ns, "late"), nil
	})
	time.Sleep(3 * time.Second) // give a wrong provisioner time to act
	ctx := kubeenv.Context(t, 5*time.Minute)
	pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "late", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" {
		t.Fatalf("claim without a consumer is %s (volume %q), want Pending and unbound", pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	if exists(t, dir) {
		t.Fatalf("%s was created before any pod used the claim", dir)
	}

	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "consumer", Namespace: ns},
		Spec: v1.PodSpec{
			Containers: []v1.Container{{Name: "c", Image: "busybox:1.37", Command: []string{"sleep", "3600"},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "late"}}}},
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
		},
	}
	if _, err := env.Cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No kubelet: a graceful delete would wait for ever.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = env.Cluster.Client.CoreV1().Pods(ns).Delete(ctx, "consumer", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	})
	pvc, pv := env.WaitBound(t, ns, "late")
	if got := pvc.Annotations["volume.kubernetes.io/selected-node"]; got != nodeName {
		t.Errorf("claim's selected-node annotation %q, want the scheduler's choice %q", got, nodeName)
	}
	if !exists(t, dir) {
		t.Errorf("%s not on the export after the claim bound to %s", dir, pv.Name)
	}
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "pod scheduled", func(ctx context.Context) (bool, string, error) {
		p, err := env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, "consumer", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return p.Spec.NodeName == nodeName, fmt.Sprintf("nodeName %q, conditions %v", p.Spec.NodeName, p.Status.Conditions), nil
	})
	if err := env.Cluster.Client.CoreV1().Pods(ns).Delete(ctx, "consumer", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	env.DeleteClaim(t, ns, "late")
	env.WaitPVGone(t, pv.Name)
	waitGuest(t, dir+" removed", func() (bool, string) { return !exists(t, dir), "still there" })
}

// A class with a bad parameter: the claim stays Pending with a Warning event naming the parameter, no
// PV is made and nothing is created on the export.
func TestBadParameterEvent(t *testing.T) {
	ns := env.NewNamespace(t, "badparam")
	tmpl := "${pvc.metadata.namespace}/${pvc.metadata.name}"
	cases := []struct {
		name   string
		params map[string]string
		labels map[string]string
		want   []string // all must be in the event's message
	}{
		{"bogus-ondelete", map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": tmpl, "onDelete": "bogus"}, nil, []string{"onDelete", "bogus"}},
		{"unknown-key", map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": tmpl, "colour": "blue"}, nil, []string{"colour"}},
		{"bad-mode", map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": tmpl, "mode": "999"}, nil, []string{"mode"}},
		{"missing-label", map[string]string{"server": kubeenv.Server, "share": kubeenv.ExportA,
			"subDir": "${pvc.metadata.namespace}/${pvc.metadata.labels['team']}"}, map[string]string{"other": "x"}, []string{"team"}},
	}
	classes := map[string]*storagev1.StorageClass{}
	for _, c := range cases {
		classes[c.name] = storageClass(t, "bad", classOpts{params: c.params})
		createClaim(t, ns, c.name, claimOpts{class: &classes[c.name].Name, labels: c.labels})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var msg string
			kubeenv.WaitT(t, kubeenv.PhaseTimeout, "a ProvisioningFailed warning on claim "+c.name, func(ctx context.Context) (bool, string, error) {
				for _, e := range env.Events(ctx, ns, "PersistentVolumeClaim", c.name) {
					if e.Type == v1.EventTypeWarning && e.Reason == "ProvisioningFailed" {
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
			pvs, err := env.Cluster.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, pv := range pvs.Items {
				if pv.Spec.StorageClassName == classes[c.name].Name {
					t.Errorf("PV %s was made for the bad class %s", pv.Name, classes[c.name].Name)
				}
			}
		})
	}
	if exists(t, kubeenv.ExportA+"/"+ns) {
		t.Errorf("bad classes created %s/%s: %v", kubeenv.ExportA, ns, ls(t, kubeenv.ExportA+"/"+ns))
	}
}

func deletePV(t *testing.T, name string) {
	t.Helper()
	ctx := kubeenv.Context(t, time.Minute)
	if err := env.Cluster.Client.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete PV %s: %v", name, err)
	}
	env.WaitPVGone(t, name)
}
