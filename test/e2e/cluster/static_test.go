//go:build e2e

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// Several administrators' static Recycle PVs on one export (ExportB, where TestStaticRecyclePV and the
// migration's static PV are recycled too), each recycled every time its claim goes, one of them over a
// directory that release 0.1.0 recycled before the upgrade. 0.1.0 named every static volume "static"
// and recorded that name in the export's name index for the first static directory it recycled there;
// every other static PV of the export then failed, on every retry, with RecycleFailed "volume static
// exists with different arguments".
func TestStaticRecyclePVsOnOneExport(t *testing.T) {
	ns := env.NewNamespace(t, "statics")
	labels := []string{"old", "a", "b"}
	dirOf := func(l string) string { return kubeenv.ExportB + "/" + ns + "-" + l }
	for _, l := range labels {
		env.ShT(t, "mkdir -p "+kubeenv.Quote(dirOf(l))+" && chmod 0777 "+kubeenv.Quote(dirOf(l)))
		writeFile(t, dirOf(l)+"/before.txt", l)
		staticRecyclePV(t, ns+"-"+l, kubeenv.ExportB, ns+"-"+l, "1Gi")
	}
	release010Static(t, kubeenv.ExportB, ns+"-old")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The 0.1.0 name entry, if it is still the one made above (Paddock leaves it where it is).
		names := kubeenv.ExportB + "/.paddock/names/static"
		_, _ = env.Sh(ctx, "[ \"$(readlink "+kubeenv.Quote(names)+")\" = "+kubeenv.Quote("subdir="+ns+"-old")+" ] && rm -f "+kubeenv.Quote(names))
	})

	for round := range 2 {
		for _, l := range labels {
			createClaim(t, ns, fmt.Sprintf("%s-%d", l, round), claimOpts{volumeName: ns + "-" + l, size: "1Gi"})
		}
		for _, l := range labels {
			env.WaitBound(t, ns, fmt.Sprintf("%s-%d", l, round))
			writeFile(t, dirOf(l)+fmt.Sprintf("/round-%d/data.txt", round), l)
		}
		for _, l := range labels {
			env.DeleteClaim(t, ns, fmt.Sprintf("%s-%d", l, round))
		}
		for _, l := range labels {
			waitAvailable(t, ns+"-"+l)
			if names := ls(t, dirOf(l)); len(names) != 0 {
				t.Errorf("round %d: recycled %s holds %v", round, dirOf(l), names)
			}
		}
	}
	ctx := kubeenv.Context(t, time.Minute)
	for _, l := range labels {
		for _, e := range env.Events(ctx, metav1.NamespaceDefault, "PersistentVolume", ns+"-"+l) {
			if e.Reason == "RecycleFailed" { // (the PV controller's own VolumeFailedRecycle may come first)
				t.Errorf("PV %s: event %s %q", ns+"-"+l, e.Reason, e.Message)
			}
		}
	}
	for _, l := range labels {
		deletePV(t, ns+"-"+l)
	}
	var dirs []string
	for _, l := range labels {
		dirs = append(dirs, kubeenv.Quote(dirOf(l)))
	}
	env.ShT(t, "rm -rf "+strings.Join(dirs, " "))
}

// staticRecyclePV is an administrator's PV of size with reclaim policy Recycle over export/subDir, as
// in deploy/examples/static-pv-recycle.yaml; it is deleted when the test ends.
func staticRecyclePV(t *testing.T, name, export, subDir, size string) {
	t.Helper()
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRecycle,
			StorageClassName:              "",
			MountOptions:                  []string{"nfsvers=4.1"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:           kubeenv.Driver,
				VolumeHandle:     "static-" + name,
				VolumeAttributes: map[string]string{"server": kubeenv.Server, "share": export, "subDir": subDir},
			}},
		},
	}
	pvs := env.Cluster.Client.CoreV1().PersistentVolumes()
	if _, err := pvs.Create(kubeenv.Context(t, time.Minute), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pvs.Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// release010Static writes on the server what Paddock 0.1.0 left after recycling the static PV of
// export/subDir: its claim, under the one name 0.1.0 gave every static volume, and the export's name
// entry "static" recording subDir (subDir lies at the top of the export: no pins).
func release010Static(t *testing.T, export, subDir string) {
	t.Helper()
	sum := sha256.Sum256([]byte(subDir))
	record := fmt.Sprintf("paddock-claim v1\nname=static\nsubdir=%s\nstate=ready\nadopted=true\ncapacity=0\n"+
		"ondelete=retain\nretention=0\nnfsvers=4.1\nsource=\ntoken=0a1b2c3d4e5f\n", subDir)
	meta := export + "/.paddock"
	env.ShT(t, "install -d -m 0700 "+kubeenv.Quote(meta)+" "+kubeenv.Quote(meta+"/claims")+" "+kubeenv.Quote(meta+"/names")+
		" && ln -s "+kubeenv.Quote(record)+" "+kubeenv.Quote(meta+"/claims/"+hex.EncodeToString(sum[:]))+
		" && ln -sfn "+kubeenv.Quote("subdir="+subDir)+" "+kubeenv.Quote(meta+"/names/static"))
}
