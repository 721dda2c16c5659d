//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// The controller is killed (SIGKILL) while it provisions a burst of claims and started again: every
// claim ends Bound to its own PV, no PV is left over, and the export holds exactly one directory per
// claim, each with a ready claim record.
func TestControllerRestartMidProvisioning(t *testing.T) {
	const n = 20
	ns := env.NewNamespace(t, "restart")
	sc := storageClass(t, "restart", classOpts{params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportB, "subDir": "${pvc.metadata.namespace}/${pv.metadata.name}"}})
	ctx := kubeenv.Context(t, 15*time.Minute)
	cs := env.Cluster.Client
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c-%02d", i)
	}
	errs := make(chan error, n)
	for _, name := range names {
		go func() {
			_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, newClaim(ns, name, claimOpts{class: &sc.Name}), metav1.CreateOptions{})
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Kill as soon as the first PV of the burst exists: the rest are in flight or queued.
	classPVs := func(ctx context.Context) ([]v1.PersistentVolume, error) {
		l, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []v1.PersistentVolume
		for _, pv := range l.Items {
			if pv.Spec.StorageClassName == sc.Name {
				out = append(out, pv)
			}
		}
		return out, nil
	}
	kubeenv.WaitT(t, kubeenv.BindTimeout, "the first PV of the burst", func(ctx context.Context) (bool, string, error) {
		pvs, err := classPVs(ctx)
		return err == nil && len(pvs) > 0, fmt.Sprintf("%d PVs (%v)", len(pvs), err), nil
	})
	if err := env.StopPaddock(ctx, ctrlName, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pvs, _ := classPVs(ctx)
	dirs := env.ShT(t, "ls -A1 "+kubeenv.Quote(kubeenv.ExportB+"/"+ns)+" 2>/dev/null || true")
	t.Logf("controller killed with %d of %d PVs made and %d directories on the export", len(pvs), n, len(strings.Fields(dirs)))
	if err := startController(ctx); err != nil {
		t.Fatalf("restarting the controller: %v", err)
	}

	// Every claim Bound (the restarted controller first waits for the killed one's Lease to expire).
	kubeenv.WaitT(t, 2*kubeenv.BindTimeout, "all claims Bound", func(ctx context.Context) (bool, string, error) {
		l, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var pending []string
		for _, c := range l.Items {
			if c.Status.Phase != v1.ClaimBound {
				pending = append(pending, c.Name+"="+string(c.Status.Phase))
			}
		}
		return len(l.Items) == n && len(pending) == 0, fmt.Sprintf("%d claims, not Bound: %v", len(l.Items), pending), nil
	})
	claims, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byClaim := map[string]string{}
	var volNames []string
	for _, c := range claims.Items {
		byClaim[c.Name] = c.Spec.VolumeName
		volNames = append(volNames, c.Spec.VolumeName)
	}
	sort.Strings(volNames)
	if len(slices.Compact(slices.Clone(volNames))) != n {
		t.Errorf("claims share PVs: %v", byClaim)
	}
	// Exactly one PV per claim: no orphan (a PV with no claim of ours) and no second PV for a claim.
	pvs, err = classPVs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pvNames []string
	for _, pv := range pvs {
		pvNames = append(pvNames, pv.Name)
		if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ns || byClaim[pv.Spec.ClaimRef.Name] != pv.Name {
			t.Errorf("orphan PV %s (claimRef %v, phase %s)", pv.Name, pv.Spec.ClaimRef, pv.Status.Phase)
		}
	}
	sort.Strings(pvNames)
	if !slices.Equal(pvNames, volNames) {
		t.Errorf("PVs of the class %v, want exactly the claims' volumes %v", pvNames, volNames)
	}
	// Exactly one directory per claim, named by its PV, each with a ready claim record.
	if got := ls(t, kubeenv.ExportB+"/"+ns); !slices.Equal(got, volNames) {
		t.Errorf("export directories %v, want exactly %v", got, volNames)
	}
	for _, pv := range volNames {
		c := claimFile(t, kubeenv.ExportB, ns+"/"+pv)
		if !strings.Contains(c, pv) || !strings.Contains(c, "ready") {
			t.Errorf("claim record of %s/%s is not ready for %s: %s", ns, pv, pv, c)
		}
	}

	// Clean up through the controller: every directory is deleted.
	if err := cs.CoreV1().PersistentVolumeClaims(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeenv.WaitT(t, 2*kubeenv.PhaseTimeout, "the class's PVs deleted", func(ctx context.Context) (bool, string, error) {
		pvs, err := classPVs(ctx)
		return err == nil && len(pvs) == 0, fmt.Sprintf("%d PVs left (%v)", len(pvs), err), nil
	})
	waitGuest(t, "the directories deleted", func() (bool, string) {
		left := ls(t, kubeenv.ExportB+"/"+ns)
		return len(left) == 0, fmt.Sprintf("left: %v", left)
	})
}
