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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// Reclaim policy Delete with each onDelete: the PV goes, and the directory is deleted (through the
// trash and the reaper), archived with its content, or kept as it is.
func TestDeleteClassOnDelete(t *testing.T) {
	ns := env.NewNamespace(t, "ondelete")
	for _, mode := range []string{"delete", "archive", "retain"} {
		t.Run(mode, func(t *testing.T) {
			sc := storageClass(t, "ondelete-"+mode, classOpts{params: map[string]string{
				"server": kubeenv.Server, "share": kubeenv.ExportB, "onDelete": mode,
				"subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}"}})
			name := "vol-" + mode
			createClaim(t, ns, name, claimOpts{class: &sc.Name})
			_, pv := env.WaitBound(t, ns, name)
			if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
				t.Fatalf("PV reclaim policy %s, want Delete", pv.Spec.PersistentVolumeReclaimPolicy)
			}
			subDir := ns + "/" + name
			dir := kubeenv.ExportB + "/" + subDir
			writeFile(t, dir+"/data/file.txt", "payload-"+mode)

			env.DeleteClaim(t, ns, name)
			env.WaitPVGone(t, pv.Name)
			switch mode {
			case "delete":
				waitGuest(t, dir+" gone from the export", func() (bool, string) { return !exists(t, dir), "still there" })
				// The reaper empties the trash in the background.
				waitGuest(t, "the trash emptied of "+pv.Name, func() (bool, string) {
					trash := ls(t, kubeenv.ExportB+"/.paddock/trash")
					for _, e := range trash {
						if strings.Contains(e, pv.Name) {
							return false, fmt.Sprintf("trash holds %v", trash)
						}
					}
					return true, ""
				})
			case "archive":
				waitGuest(t, dir+" gone from its place", func() (bool, string) { return !exists(t, dir), "still there" })
				prefix := strings.ReplaceAll(subDir, "/", "%2F") + "@"
				var archived string
				for _, e := range ls(t, kubeenv.ExportB+"/.paddock/archive") {
					if strings.HasPrefix(e, prefix) {
						archived = e
					}
				}
				if archived == "" {
					t.Fatalf("no archive %s* in %s/.paddock/archive: %v", prefix, kubeenv.ExportB, ls(t, kubeenv.ExportB+"/.paddock/archive"))
				}
				if got := readFile(t, kubeenv.ExportB+"/.paddock/archive/"+archived+"/data/file.txt"); got != "payload-archive" {
					t.Errorf("archived file content %q, want payload-archive", got)
				}
			case "retain":
				// The PV is gone; the directory stays as it was.
				if got := readFile(t, dir+"/data/file.txt"); got != "payload-retain" {
					t.Errorf("kept file content %q, want payload-retain", got)
				}
				env.ShT(t, "rm -rf "+kubeenv.Quote(dir))
			}
		})
	}
}

// Reclaim policy Retain: the PV stays Released with the data; deleting that PV by hand keeps the data.
func TestRetainClass(t *testing.T) {
	ns := env.NewNamespace(t, "retain")
	sc := storageClass(t, "retain", classOpts{reclaim: v1.PersistentVolumeReclaimRetain, params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}-${pvc.metadata.name}"}})
	createClaim(t, ns, "keep", claimOpts{class: &sc.Name})
	_, pv := env.WaitBound(t, ns, "keep")
	dir := kubeenv.ExportA + "/" + ns + "-keep"
	writeFile(t, dir+"/file.txt", "kept")
	env.DeleteClaim(t, ns, "keep")
	pv = env.WaitPV(t, pv.Name, v1.VolumeReleased)
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Errorf("PV reclaim policy %s, want Retain", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if got := readFile(t, dir+"/file.txt"); got != "kept" {
		t.Fatalf("data of the Released PV: %q, want kept", got)
	}
	deletePV(t, pv.Name)
	// Let the controller see the deletion (it would have acted by now, had it meant to).
	time.Sleep(5 * time.Second)
	if got := readFile(t, dir+"/file.txt"); got != "kept" {
		t.Fatalf("data after the PV was deleted by hand: %q, want kept", got)
	}
	for _, e := range ls(t, kubeenv.ExportA+"/.paddock/trash") {
		if strings.Contains(e, pv.Name) {
			t.Errorf("the hand-deleted Retain PV's directory went to the trash: %s", e)
		}
	}
	env.ShT(t, "rm -rf "+kubeenv.Quote(dir))
}

// The class parameter reclaimPolicy: Recycle: the PV is Recycle; after the claim goes the directory is
// emptied (kept, with its owner and mode), the PV is Available and a new claim binds to it; another
// volume's data is untouched.
func TestRecycleClass(t *testing.T) {
	ns := env.NewNamespace(t, "recycle")
	sc := storageClass(t, "recycle", classOpts{reclaim: v1.PersistentVolumeReclaimRetain, params: map[string]string{
		"server": kubeenv.Server, "share": kubeenv.ExportA, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}",
		"reclaimPolicy": "Recycle", "uid": "1000", "gid": "1000", "mode": "0750"}})
	createClaim(t, ns, "first", claimOpts{class: &sc.Name, size: "2Gi"})
	createClaim(t, ns, "other", claimOpts{class: &sc.Name, size: "5Gi"})
	_, pv := env.WaitBound(t, ns, "first")
	_, otherPV := env.WaitBound(t, ns, "other")
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRecycle {
		t.Fatalf("PV reclaim policy %s, want Recycle (from the class parameter)", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	dir := kubeenv.ExportA + "/" + ns + "/first"
	otherDir := kubeenv.ExportA + "/" + ns + "/other"
	writeFile(t, dir+"/a.txt", "old")
	writeFile(t, dir+"/sub/deep/b.txt", "old")
	env.ShT(t, "ln -s /etc/passwd "+kubeenv.Quote(dir+"/link")+" && touch "+kubeenv.Quote(dir+"/.hidden"))
	writeFile(t, otherDir+"/keep.txt", "other volume")

	env.DeleteClaim(t, ns, "first")
	pv = waitAvailable(t, pv.Name)
	if got := ls(t, dir); len(got) != 0 {
		t.Errorf("recycled directory still holds %v", got)
	}
	if got := statOf(t, dir); got != "1000:1000:750" {
		t.Errorf("recycled directory owner:group:mode %s, want 1000:1000:750 kept", got)
	}
	if got := readFile(t, otherDir+"/keep.txt"); got != "other volume" {
		t.Errorf("other volume's file: %q", got)
	}
	if !exists(t, "/etc/passwd") {
		t.Errorf("the symlink's target went too")
	}
	if _, ok := pv.Annotations["paddock.dev/recycling"]; ok {
		t.Errorf("recycled PV keeps the recycling hold annotation: %v", pv.Annotations)
	}
	kubeenv.WaitT(t, kubeenv.PhaseTimeout, "a Recycled event on the PV", func(ctx context.Context) (bool, string, error) {
		for _, e := range env.Events(ctx, metav1.NamespaceDefault, "PersistentVolume", pv.Name) {
			if e.Reason == "Recycled" {
				return true, "", nil
			}
		}
		return false, "events: " + env.PVEvents(ctx, pv.Name), nil
	})

	// The provisioner bound the PV, so recycling clears the whole claimRef (not only its UID): a new
	// claim of the class, with another name, binds to it.
	if pv.Spec.ClaimRef != nil {
		t.Fatalf("recycled provisioned PV keeps claimRef %+v: it stays reserved for the deleted claim", pv.Spec.ClaimRef)
	}
	createClaim(t, ns, "second", claimOpts{class: &sc.Name, size: "2Gi"})
	_, again := env.WaitBound(t, ns, "second")
	if again.Name != pv.Name {
		t.Errorf("new claim bound to %s, want the recycled %s", again.Name, pv.Name)
	}
	writeFile(t, dir+"/new.txt", "new")
	if got := readFile(t, otherDir+"/keep.txt"); got != "other volume" {
		t.Errorf("other volume's file: %q", got)
	}
	if otherPV.Status.Phase != v1.VolumeBound {
		if p := getPV(t, otherPV.Name); p == nil || p.Status.Phase != v1.VolumeBound {
			t.Errorf("other PV is not Bound any more: %+v", p)
		}
	}
	// Recycle again, then retire the PVs (Recycle PVs are never deleted by Paddock).
	env.DeleteClaim(t, ns, "second")
	waitAvailable(t, pv.Name)
	if got := ls(t, dir); len(got) != 0 {
		t.Errorf("directory after the second recycle holds %v", got)
	}
	env.DeleteClaim(t, ns, "other")
	waitAvailable(t, otherPV.Name)
	deletePV(t, pv.Name)
	deletePV(t, otherPV.Name)
	env.ShT(t, "rm -rf "+kubeenv.Quote(kubeenv.ExportA+"/"+ns))
}

// An administrator's static PV with reclaim policy Recycle over an existing directory of the export
// (volumeAttributes as in deploy/examples/static-pv-recycle.yaml): recycled like a provisioned one.
func TestStaticRecyclePV(t *testing.T) {
	ns := env.NewNamespace(t, "static")
	subDir := ns + "-scratch"
	dir := kubeenv.ExportB + "/" + subDir
	neighbour := kubeenv.ExportB + "/" + ns + "-neighbour"
	env.ShT(t, "mkdir -p "+kubeenv.Quote(dir)+" && chown 1000:1000 "+kubeenv.Quote(dir)+" && chmod 0775 "+kubeenv.Quote(dir))
	writeFile(t, dir+"/results/run1.csv", "1,2,3")
	writeFile(t, neighbour+"/keep.txt", "neighbour")

	pvName := ns + "-scratch"
	staticRecyclePV(t, pvName, kubeenv.ExportB, subDir, "10Gi")
	createClaim(t, ns, "scratch", claimOpts{volumeName: pvName, size: "10Gi"})
	env.WaitBound(t, ns, "scratch")
	env.DeleteClaim(t, ns, "scratch")
	got := waitAvailable(t, pvName)
	if names := ls(t, dir); len(names) != 0 {
		t.Errorf("recycled static directory holds %v", names)
	}
	if st := statOf(t, dir); st != "1000:1000:775" {
		t.Errorf("recycled static directory owner:group:mode %s, want 1000:1000:775 kept", st)
	}
	if c := readFile(t, neighbour+"/keep.txt"); c != "neighbour" {
		t.Errorf("neighbouring directory's file: %q", c)
	}
	if got.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRecycle {
		t.Errorf("PV reclaim policy changed to %s", got.Spec.PersistentVolumeReclaimPolicy)
	}
	// Bound again by a new claim.
	createClaim(t, ns, "scratch2", claimOpts{volumeName: pvName, size: "10Gi"})
	env.WaitBound(t, ns, "scratch2")
	writeFile(t, dir+"/new.txt", "new")
	env.DeleteClaim(t, ns, "scratch2")
	waitAvailable(t, pvName)
	if names := ls(t, dir); len(names) != 0 {
		t.Errorf("directory after the second recycle holds %v", names)
	}
	if !slices.Equal(ls(t, neighbour), []string{"keep.txt"}) {
		t.Errorf("neighbouring directory changed: %v", ls(t, neighbour))
	}
	deletePV(t, pvName)
	env.ShT(t, "rm -rf "+kubeenv.Quote(dir)+" "+kubeenv.Quote(neighbour))
}

// waitAvailable waits until a recycled PV is Available with no claim UID.
func waitAvailable(t *testing.T, name string) *v1.PersistentVolume {
	t.Helper()
	pv := env.WaitPV(t, name, v1.VolumeAvailable)
	if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID != "" {
		t.Errorf("Available PV %s still names claim %s/%s (uid %s)", name, pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID)
	}
	return pv
}
