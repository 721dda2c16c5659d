//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// Enforced capacity through the cluster: the embedded provisioner, the controller with its client
// identity (main_test.go) and the quota agent on the guest's XFS export, judged on the server by
// xfs_io and xfs_quota.

const mib = 1 << 20

func quotaClass(t *testing.T, expandable bool) *storagev1.StorageClass {
	t.Helper()
	return env.NewStorageClass(t, "quota", &storagev1.StorageClass{AllowVolumeExpansion: ptr.To(expandable), Parameters: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportQ, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}",
		"quota": "enforce", "quotaAgent": kubeenv.QuotaAgentAddr}})
}

// waitLimit waits until dir's project is limited to want bytes and returns the project.
func waitLimit(t *testing.T, dir string, want int64) int64 {
	t.Helper()
	var project int64
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, fmt.Sprintf("%s limited to %d bytes", dir, want), func(ctx context.Context) (bool, string, error) {
		p, err := env.ProjectOf(ctx, dir)
		if err != nil {
			return false, err.Error(), nil
		}
		l, err := env.ProjectLimit(ctx, p)
		if err != nil {
			return false, "", err
		}
		project = p
		return p != 0 && l == want, fmt.Sprintf("project %d, limit %d", p, l), nil
	})
	return project
}

// An enforcing class while its agent is down: the claim gets a ProvisioningFailed event saying so
// and no PV; once the agent is back, the provisioner's retry binds it with its limit.
func TestQuotaAgentDownEvent(t *testing.T) {
	ns := env.NewNamespace(t, "quota")
	sc := quotaClass(t, false)
	ctx := kubeenv.Context(t, 5*time.Minute)
	if err := env.StopPaddock(ctx, kubeenv.QuotaAgentName, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.StartQuotaAgent(context.Background())
		}
	})
	createClaim(t, ns, "late", claimOpts{class: &sc.Name, size: "10Mi"})
	var msg string
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "a ProvisioningFailed warning on claim late", func(ctx context.Context) (bool, string, error) {
		for _, e := range env.Events(ctx, ns, "PersistentVolumeClaim", "late") {
			if e.Type == v1.EventTypeWarning && e.Reason == "ProvisioningFailed" {
				msg = e.Message
				return true, "", nil
			}
		}
		return false, "events: " + env.ClaimEvents(ctx, ns, "late"), nil
	})
	t.Logf("event with the agent down: %s", msg)
	if !strings.Contains(msg, "quota agent unavailable") {
		t.Errorf("the event does not say the quota agent is unavailable: %s", msg)
	}
	pvc, err := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "late", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" {
		t.Fatalf("claim with the agent down: %+v, %v; want Pending without a volume", pvc.Status, err)
	}
	if err := env.StartQuotaAgent(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	env.WaitBound(t, ns, "late")
	waitLimit(t, kubeenv.ExportQ+"/"+ns+"-late", 10*mib)
}

// quotaExpansion runs inside TestResizerComponentForReal, with its csi-resizer: a 10Mi claim of an
// enforcing class is limited to 10 MiB on the server, expanded to 30Mi through the CSI expansion
// flow (claim, PV and the project's limit), and its deletion releases the project.
func quotaExpansion(t *testing.T, resizer string) {
	ns := env.NewNamespace(t, "quota")
	sc := quotaClass(t, true)
	ctx := kubeenv.Context(t, 5*time.Minute)
	createClaim(t, ns, "data", claimOpts{class: &sc.Name, size: "10Mi"})
	_, pv := env.WaitBound(t, ns, "data")
	dir := kubeenv.ExportQ + "/" + ns + "-data"
	project := waitLimit(t, dir, 10*mib)
	if !strings.HasSuffix(pv.Spec.CSI.VolumeHandle, "#"+kubeenv.QuotaAgentAddr) {
		t.Errorf("volume handle %q does not name the agent", pv.Spec.CSI.VolumeHandle)
	}

	claims := env.Cluster.Client.CoreV1().PersistentVolumeClaims(ns)
	if _, err := claims.Patch(ctx, "data", types.MergePatchType, []byte(`{"spec":{"resources":{"requests":{"storage":"30Mi"}}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitExpanded(t, ns, "data", pv.Name, resource.MustParse("30Mi"), resizer)
	if got := waitLimit(t, dir, 30*mib); got != project {
		t.Errorf("expansion moved %s from project %d to %d", dir, project, got)
	}

	env.DeleteClaim(t, ns, "data")
	env.WaitPVGone(t, pv.Name)
	if l, err := env.ProjectLimit(ctx, project); err != nil || l != 0 {
		t.Errorf("project %d after the claim was deleted: limit %d, %v; want released", project, l, err)
	}
}
