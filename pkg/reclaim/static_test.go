package reclaim

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/paddock-csi/paddock/pkg/volume"
)

// staticPV is a hand-made Recycle PV over subDir of the test export, Released.
func staticPV(name, subDir string) *v1.PersistentVolume {
	return makePV(name, "static-handle-"+name, func(pv *v1.PersistentVolume) {
		pv.Spec.CSI.VolumeAttributes = map[string]string{"server": testServer, "share": testShare, "subDir": subDir}
	})
}

// rebind binds a recycled PV to a new claim, then lets that claim go: the PV is Released again.
func rebind(t *testing.T, cs *fake.Clientset, name string, round int) {
	t.Helper()
	ctx := context.Background()
	pv := getPV(t, cs, name)
	pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "team-a", Name: fmt.Sprintf("data-%s-%d", name, round),
		UID: types.UID(fmt.Sprintf("uid-%s-%d", name, round))}
	pv.Annotations = map[string]string{annBoundByController: "yes"}
	pv, err := cs.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv.Status.Phase = v1.VolumeReleased
	if _, err := cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Several static Recycle PVs on one export each recycle, every time their claim goes. Release 0.1.0
// named every static volume "static" and recorded that name for the first static directory it
// recycled on an export; every other static PV there then failed, on every retry, with
// "volume static exists with different arguments". The upgrade cases start from what 0.1.0 left.
func TestRecycleStaticPVsOnOneExport(t *testing.T) {
	tests := []struct {
		name string
		dirs []string // one static PV per directory, named pv-0, pv-1, ...
		// release010 are directories 0.1.0 recycled (claimed under the name "static") before the upgrade.
		release010 []string
	}{
		{name: "two static PVs", dirs: []string{"scratch-a", "scratch-b"}},
		{name: "three, nested and side by side", dirs: []string{"scratch", "team/x", "team/y"}},
		{name: "upgrade: 0.1.0 recycled the first", dirs: []string{"scratch-a", "scratch-b"}, release010: []string{"scratch-a"}},
		{name: "upgrade: 0.1.0 recycled the second", dirs: []string{"scratch-a", "scratch-b"}, release010: []string{"scratch-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, export := newWorkspace(t)
			v := provisioned(t, ws, export, "pv") // a provisioned volume next to them, left alone
			var objs []runtime.Object
			var names []string
			for i, d := range tc.dirs {
				fill(t, filepath.Join(export, d))
				names = append(names, fmt.Sprintf("pv-%d", i))
				objs = append(objs, staticPV(names[i], d))
			}
			for _, d := range tc.release010 {
				old := volume.Volume{Server: testServer, Share: testShare, SubDir: d, Name: volume.LegacyStaticName, OnDelete: volume.OnDeleteRetain}
				if err := ws.Scrub(context.Background(), old); err != nil {
					t.Fatalf("0.1.0's recycle of %q: %v", d, err)
				}
				fill(t, filepath.Join(export, d))
			}
			cs := newClient(objs...)
			s := &countingScrubber{ws: ws, calls: map[string]int{}}
			r, rec := newReconciler(t, cs, s, "me")
			for round := range 3 {
				for i, name := range names {
					if round > 0 {
						fill(t, filepath.Join(export, tc.dirs[i]))
						rebind(t, cs, name, round)
					}
					if _, err := r.sync(context.Background(), name); err != nil {
						t.Fatalf("round %d: recycling %s (%s) = %v; events %q", round, name, tc.dirs[i], err, events(rec))
					}
					if got := getPV(t, cs, name); got.Spec.ClaimRef != nil {
						t.Fatalf("round %d: %s not unbound: %+v", round, name, got.Spec.ClaimRef)
					}
					if left := entries(t, filepath.Join(export, tc.dirs[i])); len(left) != 0 {
						t.Fatalf("round %d: %s's directory %s not emptied: %v", round, name, tc.dirs[i], left)
					}
				}
			}
			for i, d := range tc.dirs {
				if n := s.count(d); n != 3 {
					t.Errorf("%s scrubbed %d times, want 3", d, n)
				}
				// The recycler asks for the same volume for the same PV on every pass (a retry after a
				// crash must find its own claim), and for different ones for different directories.
				a, err := decode(getPV(t, cs, names[i]))
				if err != nil || a.Name != volume.StaticName(d) {
					t.Errorf("decode(%s) = %+v, %v; want the name %s", names[i], a, err, volume.StaticName(d))
				}
			}
			for _, e := range events(rec) {
				if !strings.Contains(e, ReasonRecycled) || strings.Contains(e, ReasonRecycleFailed) {
					t.Errorf("event %q, want only Recycled", e)
				}
			}
			if len(entries(t, filepath.Join(export, v.SubDir))) != 2 {
				t.Error("the provisioned volume next to the static ones changed")
			}
		})
	}
}
