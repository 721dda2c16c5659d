package provisioner

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	dto "github.com/prometheus/client_model/go"

	"github.com/paddock-csi/paddock/pkg/metrics"
)

// TestRunWithLibrary drives the real library controller against a fake API server: a claim of a good
// class gets a PV; a claim of a class with a bad parameter gets a ProvisioningFailed event that names
// the parameter, and no PV.
func TestRunWithLibrary(t *testing.T) {
	core, _ := newCore(t)
	good := class(map[string]string{"reclaimPolicy": "Recycle"})
	bad := class(map[string]string{"sever": "typo"})
	bad.Name, bad.UID = "paddock-bad", "bad-uid"
	annotate := func(c *v1.PersistentVolumeClaim, name, uid, className string) *v1.PersistentVolumeClaim {
		c.Name, c.UID = name, types.UID("uid-"+uid)
		c.Spec.StorageClassName = &className
		c.Annotations["volume.kubernetes.io/storage-provisioner"] = driverName
		return c
	}
	cs := fake.NewClientset(good, bad,
		annotate(claim(), "good", "1", good.Name),
		annotate(claim(), "bad", "2", bad.Name))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Client: cs, DriverName: driverName, Core: core, RetryStart: 10 * time.Millisecond})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()

	var pv *v1.PersistentVolume
	waitFor(t, "PV for claim team-a/good", func() bool {
		var err error
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-1", metav1.GetOptions{})
		return err == nil
	})
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRecycle {
		t.Errorf("reclaim policy %q, want Recycle", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Name != "good" || pv.Spec.ClaimRef.Namespace != "team-a" {
		t.Errorf("claimRef %+v", pv.Spec.ClaimRef)
	}
	if pv.Annotations["pv.kubernetes.io/provisioned-by"] != driverName {
		t.Errorf("annotations %v", pv.Annotations)
	}

	var msg string
	waitFor(t, "ProvisioningFailed event on claim team-a/bad", func() bool {
		evs, err := cs.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "bad" && e.Reason == "ProvisioningFailed" && e.Type == v1.EventTypeWarning {
				msg = e.Message
				return true
			}
		}
		return false
	})
	if !strings.Contains(msg, `"sever"`) {
		t.Errorf("event message %q does not name the parameter", msg)
	}
	if _, err := cs.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-2", metav1.GetOptions{}); err == nil {
		t.Error("a PV was created for the claim of the bad class")
	}

	// The library's own metrics are on Paddock's registry (the one /metrics serves), with latency.
	waitFor(t, "the library's provisioning metrics on Paddock's registry", func() bool {
		ok, failed, seconds := libraryMetrics(t, good.Name, bad.Name)
		return ok >= 1 && failed >= 1 && seconds >= 1
	})
}

// libraryMetrics gathers Paddock's registry: provisioned claims of class good, failed attempts of class
// bad, and latency samples of class good, as the library's metrics count them.
func libraryMetrics(t *testing.T, good, bad string) (ok, failed float64, seconds uint64) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case f.GetName() == "controller_persistentvolumeclaim_provision_total" && label(m, "class") == good:
				ok += m.GetCounter().GetValue()
			case f.GetName() == "controller_persistentvolumeclaim_provision_failed_total" && label(m, "class") == bad:
				failed += m.GetCounter().GetValue()
			case f.GetName() == "controller_persistentvolumeclaim_provision_duration_seconds" && label(m, "class") == good:
				seconds += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return ok, failed, seconds
}

// TestRunWithSharedInformers runs the library on the caller's informers, as cmd/paddock does: they
// come from a factory that strips managedFields and is started after Run has registered its handlers.
// The claim is provisioned, the cache holds it without managedFields and with its annotations (a
// template reads them), and the class informer is the caller's.
func TestRunWithSharedInformers(t *testing.T) {
	core, _ := newCore(t)
	sc := class(map[string]string{"subDir": "${pvc.metadata.annotations['team']}"})
	c := claim()
	c.Name, c.UID = "shared", "uid-3"
	c.Spec.StorageClassName = &sc.Name
	c.Annotations["volume.kubernetes.io/storage-provisioner"] = driverName
	c.Annotations["team"] = "blue"
	c.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	cs := fake.NewClientset(sc, c)

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(StripManagedFields))
	pvs := factory.Core().V1().PersistentVolumes().Informer()
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	classes := factory.Storage().V1().StorageClasses().Informer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Client: cs, DriverName: driverName, Core: core, RetryStart: 10 * time.Millisecond,
			VolumesInformer: pvs, ClaimsInformer: claims, ClassesInformer: classes})
	}()
	factory.Start(ctx.Done())
	defer func() {
		cancel()
		<-done
		factory.Shutdown()
	}()

	var pv *v1.PersistentVolume
	waitFor(t, "PV for claim team-a/shared", func() bool {
		var err error
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-3", metav1.GetOptions{})
		return err == nil
	})
	if got := pv.Spec.CSI.VolumeAttributes["subDir"]; got != "blue" {
		t.Errorf("PV subDir attribute %q, want the annotation's value %q", got, "blue")
	}
	obj, ok, err := claims.GetStore().GetByKey("team-a/shared")
	if err != nil || !ok {
		t.Fatalf("claim not in the shared cache: %v", err)
	}
	cached := obj.(*v1.PersistentVolumeClaim)
	if len(cached.ManagedFields) != 0 {
		t.Errorf("cached claim keeps managedFields %v", cached.ManagedFields)
	}
	if cached.Annotations["team"] != "blue" {
		t.Errorf("cached claim lost its annotations: %v", cached.Annotations)
	}
	if len(classes.GetStore().List()) != 1 {
		t.Errorf("class informer holds %d classes, want 1", len(classes.GetStore().List()))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
