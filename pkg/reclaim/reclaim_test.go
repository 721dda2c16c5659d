package reclaim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/paddock-csi/paddock/pkg/share"
	"github.com/paddock-csi/paddock/pkg/volume"
)

const driverName = "nfs.paddock.dev"

var pvResource = v1.SchemeGroupVersion.WithResource("persistentvolumes")

// newClient is a fake API server that, like the real one, rejects PV updates carrying a stale
// resourceVersion and keeps status out of spec updates (the fake tracker does neither by itself).
func newClient(objs ...runtime.Object) *fake.Clientset {
	for _, o := range objs {
		if pv, ok := o.(*v1.PersistentVolume); ok && pv.ResourceVersion == "" {
			pv.ResourceVersion = "1"
		}
	}
	cs := fake.NewClientset(objs...)
	var rv atomic.Int64
	rv.Store(100)
	cs.PrependReactor("update", "persistentvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ua := a.(k8stesting.UpdateAction)
		pv := ua.GetObject().(*v1.PersistentVolume).DeepCopy()
		cur, err := cs.Tracker().Get(pvResource, "", pv.Name)
		if err != nil {
			return true, nil, err
		}
		curPV := cur.(*v1.PersistentVolume)
		if pv.ResourceVersion != curPV.ResourceVersion {
			return true, nil, apierrors.NewConflict(pvResource.GroupResource(), pv.Name,
				fmt.Errorf("resourceVersion %s is stale, object is at %s", pv.ResourceVersion, curPV.ResourceVersion))
		}
		if ua.GetSubresource() == "status" {
			st := pv.Status
			pv = curPV.DeepCopy()
			pv.Status = st
		} else {
			pv.Status = curPV.Status
		}
		pv.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		if err := cs.Tracker().Update(pvResource, pv, ""); err != nil {
			return true, nil, err
		}
		return true, pv.DeepCopy(), nil
	})
	return cs
}

// countingScrubber counts scrubs per volume directory and passes them to the real workspace.
type countingScrubber struct {
	ws    *share.Workspace
	mu    sync.Mutex
	calls map[string]int
	gate  chan struct{} // if set, each scrub waits for it
}

func (s *countingScrubber) Scrub(ctx context.Context, v volume.Volume) error {
	s.mu.Lock()
	s.calls[v.SubDir]++
	s.mu.Unlock()
	if s.gate != nil {
		<-s.gate
	}
	return s.ws.Scrub(ctx, v)
}

func (s *countingScrubber) count(subDir string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[subDir]
}

// provisioned creates a volume directory through the workspace, as CreateVolume would, with a file.
func provisioned(t *testing.T, ws *share.Workspace, export, name string) volume.Volume {
	t.Helper()
	v := volume.Volume{Server: testServer, Share: testShare, SubDir: name, Name: name, OnDelete: volume.OnDeleteDelete}
	if _, err := ws.Create(context.Background(), v, share.CreateOptions{Mode: 0o777, UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	fill(t, filepath.Join(export, name))
	return v
}

func fill(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a.txt", "sub/b.txt", "sub/deeper/c.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

type pvOpt func(*v1.PersistentVolume)

func makePV(name, handle string, opts ...pvOpt) *v1.PersistentVolume {
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{annBoundByController: "yes"}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRecycle,
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: driverName, VolumeHandle: handle}},
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "team-a", Name: "data-" + name, UID: types.UID("uid-" + name)},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeReleased},
	}
	for _, o := range opts {
		o(pv)
	}
	return pv
}

func failed(pv *v1.PersistentVolume) {
	pv.Status = v1.PersistentVolumeStatus{Phase: v1.VolumeFailed, Message: "No recycler plugin found for the volume!"}
}

func newReconciler(t *testing.T, cs *fake.Clientset, s Scrubber, id string) (*Reconciler, *record.FakeRecorder) {
	t.Helper()
	rec := record.NewFakeRecorder(100)
	r, err := New(Config{Client: cs, DriverName: driverName, Scrubber: s, Recorder: rec, Identity: id,
		RetryStart: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Read PVs straight from the fake API server: the tests call sync themselves.
	r.get = func(name string) (*v1.PersistentVolume, bool, error) {
		pv, err := cs.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return pv, err == nil, err
	}
	return r, rec
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func getPV(t *testing.T, cs *fake.Clientset, name string) *v1.PersistentVolume {
	t.Helper()
	pv, err := cs.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func TestRecycle(t *testing.T) {
	type want struct {
		dir       string   // the volume's directory (default "pv", a provisioned volume)
		scrubbed  bool     // directory emptied, kept
		unbound   string   // "all": claimRef cleared; "uid": only UID cleared; "": untouched
		held      bool     // our recycling annotation stays (a failed scrub is retried by us)
		event     []string // substrings of the one expected event ("" reason: none)
		retry     bool     // sync asks for a retry
		wantAfter bool     // sync asks to look again later
	}
	static := func(subDir string) pvOpt {
		return func(pv *v1.PersistentVolume) {
			pv.Spec.CSI.VolumeAttributes = map[string]string{"server": testServer, "share": testShare, "subDir": subDir}
		}
	}
	tests := []struct {
		name  string
		pv    func(id string) *v1.PersistentVolume
		extra []runtime.Object
		want  want
	}{
		{"Released Recycle PV of our driver", func(id string) *v1.PersistentVolume { return makePV("pv", id) },
			nil, want{scrubbed: true, unbound: "all", event: []string{"Normal", ReasonRecycled, "team-a/data-pv"}}},
		{"Failed: no recycler plugin", func(id string) *v1.PersistentVolume { return makePV("pv", id, failed) },
			nil, want{scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"pre-bound by the user: keeps the claim name", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) { pv.Annotations = nil })
		}, nil, want{scrubbed: true, unbound: "uid", event: []string{ReasonRecycled}}},
		{"provisioned by us (bound by the provisioner, no bound-by-controller): claimRef cleared", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Annotations = map[string]string{annProvisionedBy: driverName}
			})
		}, nil, want{scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"provisioned by another provisioner, no bound-by-controller: keeps the claim name", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Annotations = map[string]string{annProvisionedBy: "other.example.com"}
			})
		}, nil, want{scrubbed: true, unbound: "uid", event: []string{ReasonRecycled}}},
		{"static PV by volumeAttributes", func(string) *v1.PersistentVolume { return makePV("pv", "static-scratch", static("plain")) },
			nil, want{dir: "plain", scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"static PV with nfsvers in mountOptions", func(string) *v1.PersistentVolume {
			return makePV("pv", "static-scratch", static("plain"), func(pv *v1.PersistentVolume) { pv.Spec.MountOptions = []string{"nfsvers=4.1"} })
		}, nil, want{dir: "plain", scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"static PV with a bad nfsvers in mountOptions is refused", func(string) *v1.PersistentVolume {
			return makePV("pv", "static-scratch", static("plain"), func(pv *v1.PersistentVolume) { pv.Spec.MountOptions = []string{"nfsvers=9"} })
		}, nil, want{dir: "plain", event: []string{"Warning", ReasonRecycleFailed, "nfsvers"}}},
		{"a PV whose mountOptions no mount can honour is refused, naming the option", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) { pv.Spec.MountOptions = []string{"hard,bg"} })
		}, nil, want{event: []string{"Warning", ReasonRecycleFailed, `mountOptions: option "bg" is refused`}}},
		{"hostile static subDir is refused", func(string) *v1.PersistentVolume { return makePV("pv", "static-x", static("../x")) },
			nil, want{event: []string{"Warning", ReasonRecycleFailed, "subDir"}}},
		{"absolute static subDir is refused", func(string) *v1.PersistentVolume { return makePV("pv", "static-x", static("/etc")) },
			nil, want{event: []string{"Warning", ReasonRecycleFailed, "subDir"}}},
		{"static subDir naming a provisioned volume's directory is refused", func(string) *v1.PersistentVolume {
			return makePV("pv", "static-x", static("pv"))
		}, nil, want{retry: true, held: true, event: []string{"Warning", ReasonRecycleFailed, "is volume pv, not volume static"}}},
		{"malformed Paddock ID is refused", func(string) *v1.PersistentVolume { return makePV("pv", "1#d##nfs.example.com#/srv/nfs#..#") },
			nil, want{event: []string{"Warning", ReasonRecycleFailed, "malformed"}}},
		{"other driver untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) { pv.Spec.CSI.Driver = "other.csi.example.com" })
		}, nil, want{}},
		{"Retain untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimRetain
			})
		}, nil, want{}},
		{"Delete untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimDelete
			})
		}, nil, want{}},
		{"Bound untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeBound })
		}, nil, want{}},
		{"Available untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeAvailable; pv.Spec.ClaimRef = nil })
		}, nil, want{}},
		{"being deleted untouched", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				now := metav1.Now()
				pv.DeletionTimestamp = &now
				pv.Finalizers = []string{"kubernetes.io/pv-protection"}
			})
		}, nil, want{}},
		{"claim still exists: not released after all", func(id string) *v1.PersistentVolume { return makePV("pv", id) },
			[]runtime.Object{&v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "data-pv", UID: "uid-pv"}}},
			want{}},
		{"claim name reused by a new claim", func(id string) *v1.PersistentVolume { return makePV("pv", id) },
			[]runtime.Object{&v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "data-pv", UID: "uid-new"}},
				podUsing("p1", "data-pv", v1.PodRunning)},
			want{scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"a running pod still mounts the claim", func(id string) *v1.PersistentVolume { return makePV("pv", id) },
			[]runtime.Object{podUsing("p1", "data-pv", v1.PodRunning), podUsing("p2", "data-pv", v1.PodSucceeded)},
			want{retry: true, event: []string{"Normal", ReasonRecyclePending, "p1"}}},
		{"finished pods do not hold it", func(id string) *v1.PersistentVolume { return makePV("pv", id) },
			[]runtime.Object{podUsing("p2", "data-pv", v1.PodSucceeded), podUsing("p3", "other", v1.PodRunning)},
			want{scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
		{"held by another live reconciler", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Annotations[AnnRecycling] = "other@" + time.Now().UTC().Format(time.RFC3339)
			})
		}, nil, want{wantAfter: true}},
		{"stale hold is taken over", func(id string) *v1.PersistentVolume {
			return makePV("pv", id, func(pv *v1.PersistentVolume) {
				pv.Annotations[AnnRecycling] = "other@" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
			})
		}, nil, want{scrubbed: true, unbound: "all", event: []string{ReasonRecycled}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, export := newWorkspace(t)
			v := provisioned(t, ws, export, "pv")
			fill(t, filepath.Join(export, "plain")) // a hand-made directory no volume claims
			before := makePVCopy(tc.pv(v.ID()))
			cs := newClient(append([]runtime.Object{before.DeepCopy()}, tc.extra...)...)
			s := &countingScrubber{ws: ws, calls: map[string]int{}}
			r, rec := newReconciler(t, cs, s, "me")

			after, err := r.sync(context.Background(), "pv")
			if tc.want.retry != (err != nil) {
				t.Fatalf("sync error = %v, want retry %v", err, tc.want.retry)
			}
			if tc.want.wantAfter != (after > 0) {
				t.Errorf("sync asked to look again after %v", after)
			}

			got := getPV(t, cs, "pv")
			if tc.want.dir == "" {
				tc.want.dir = "pv"
			}
			for _, d := range []string{"pv", "plain"} {
				left := entries(t, filepath.Join(export, d)) // directories themselves are always kept
				if d == tc.want.dir && tc.want.scrubbed {
					if len(left) != 0 {
						t.Errorf("%s not emptied: %v", d, left)
					}
				} else if len(left) != 2 { // a.txt, sub
					t.Errorf("%s changed: %v", d, left)
				}
			}
			switch tc.want.unbound {
			case "all":
				if got.Spec.ClaimRef != nil {
					t.Errorf("claimRef not cleared: %+v", got.Spec.ClaimRef)
				}
				if _, ok := got.Annotations[annBoundByController]; ok {
					t.Error("bound-by-controller annotation kept")
				}
			case "uid":
				if got.Spec.ClaimRef == nil || got.Spec.ClaimRef.UID != "" || got.Spec.ClaimRef.Name != "data-pv" {
					t.Errorf("claimRef %+v, want the claim name without UID", got.Spec.ClaimRef)
				}
			default:
				if tc.want.held {
					if !strings.HasPrefix(got.Annotations[AnnRecycling], "me@") || got.Spec.ClaimRef == nil {
						t.Errorf("want the PV held by us and still bound: %+v", got)
					}
				} else if got.ResourceVersion != before.ResourceVersion {
					t.Errorf("PV was updated: %+v", got)
				}
			}
			if tc.want.unbound != "" {
				if _, ok := got.Annotations[AnnRecycling]; ok {
					t.Error("recycling annotation left behind")
				}
				// Everything else stays as it was.
				got.Spec.ClaimRef, before.Spec.ClaimRef = nil, nil
				if got.Spec.CSI.VolumeHandle != before.Spec.CSI.VolumeHandle || got.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRecycle ||
					len(got.Spec.AccessModes) != 1 || got.Status.Phase != before.Status.Phase {
					t.Errorf("PV changed beyond the claimRef: %+v", got)
				}
			}
			evs := events(rec)
			if len(tc.want.event) == 0 {
				if len(evs) != 0 {
					t.Errorf("unexpected events %q", evs)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("events %q, want one", evs)
			}
			for _, w := range tc.want.event {
				if !strings.Contains(evs[0], w) {
					t.Errorf("event %q does not contain %q", evs[0], w)
				}
			}
		})
	}
}

func makePVCopy(pv *v1.PersistentVolume) *v1.PersistentVolume {
	pv = pv.DeepCopy()
	if pv.ResourceVersion == "" {
		pv.ResourceVersion = "1"
	}
	return pv
}

func podUsing(name, claim string, phase v1.PodPhase) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
		Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: "v", VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}},
		Status: v1.PodStatus{Phase: phase}}
}

// TestRecycleRace runs two reconcilers on the same version of a PV at once: the annotation written with
// optimistic concurrency lets exactly one of them scrub.
func TestRecycleRace(t *testing.T) {
	for i := range 20 {
		ws, export := newWorkspace(t)
		v := provisioned(t, ws, export, "pv")
		cs := newClient(makePV("pv", v.ID()))
		s := &countingScrubber{ws: ws, calls: map[string]int{}}
		snapshot := getPV(t, cs, "pv")
		var rs []*Reconciler
		for _, id := range []string{"a", "b"} {
			r, _ := newReconciler(t, cs, s, id)
			// Both start from the same cached version, as two informers would.
			r.get = func(string) (*v1.PersistentVolume, bool, error) { return snapshot.DeepCopy(), true, nil }
			rs = append(rs, r)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, r := range rs {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[j] = r.sync(context.Background(), "pv") }()
		}
		wg.Wait()
		if n := s.count("pv"); n != 1 {
			t.Fatalf("round %d: %d scrubs, want exactly 1 (errors %v)", i, n, errs)
		}
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: errors %v, want exactly one loser", i, errs)
		}
		if got := getPV(t, cs, "pv"); got.Spec.ClaimRef != nil {
			t.Fatalf("round %d: claimRef not cleared", i)
		}
		// The loser looks again at the current PV: nothing left to do.
		for _, r := range rs {
			r.get = func(name string) (*v1.PersistentVolume, bool, error) { return getPV(t, cs, name), true, nil }
			if _, err := r.sync(context.Background(), "pv"); err != nil {
				t.Fatalf("round %d: second pass: %v", i, err)
			}
		}
		if n := s.count("pv"); n != 1 {
			t.Fatalf("round %d: %d scrubs after second passes", i, n)
		}
	}
}

// TestRecycleHeldWhileScrubbing: a reconciler that sees the PV while another is mid-scrub backs off.
func TestRecycleHeldWhileScrubbing(t *testing.T) {
	ws, export := newWorkspace(t)
	v := provisioned(t, ws, export, "pv")
	cs := newClient(makePV("pv", v.ID()))
	s := &countingScrubber{ws: ws, calls: map[string]int{}, gate: make(chan struct{})}
	a, _ := newReconciler(t, cs, s, "a")
	b, _ := newReconciler(t, cs, s, "b")
	done := make(chan error, 1)
	go func() { _, err := a.sync(context.Background(), "pv"); done <- err }()
	waitFor(t, "a's scrub to start", func() bool { return s.count("pv") == 1 })
	if ann := getPV(t, cs, "pv").Annotations[AnnRecycling]; !strings.HasPrefix(ann, "a@") {
		t.Fatalf("annotation %q, want a's", ann)
	}
	after, err := b.sync(context.Background(), "pv")
	if err != nil || after <= 0 {
		t.Fatalf("b: after %v err %v, want a delay", after, err)
	}
	close(s.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.count("pv"); n != 1 {
		t.Errorf("%d scrubs", n)
	}
	if getPV(t, cs, "pv").Spec.ClaimRef != nil {
		t.Error("claimRef not cleared")
	}
}

// TestRecycleRetriesUnbind: a PV changed between the scrub and the unbind (the PV controller marking
// it Failed) is unbound on the next pass, without a second reconciler stepping in.
func TestRecycleRetriesUnbind(t *testing.T) {
	ws, export := newWorkspace(t)
	v := provisioned(t, ws, export, "pv")
	cs := newClient(makePV("pv", v.ID()))
	hook := &hookScrubber{countingScrubber: countingScrubber{ws: ws, calls: map[string]int{}}}
	hook.after = func() {
		pv := getPV(t, cs, "pv")
		failed(pv)
		if _, err := cs.CoreV1().PersistentVolumes().UpdateStatus(context.Background(), pv, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}
	r, _ := newReconciler(t, cs, hook, "me")
	if _, err := r.sync(context.Background(), "pv"); err == nil {
		t.Fatal("first pass: want a conflict on unbind")
	}
	got := getPV(t, cs, "pv")
	if got.Spec.ClaimRef == nil || !strings.HasPrefix(got.Annotations[AnnRecycling], "me@") {
		t.Fatalf("after the conflict: claimRef %v, annotation %q", got.Spec.ClaimRef, got.Annotations[AnnRecycling])
	}
	hook.after = nil
	if _, err := r.sync(context.Background(), "pv"); err != nil {
		t.Fatal(err)
	}
	if got := getPV(t, cs, "pv"); got.Spec.ClaimRef != nil || got.Annotations[AnnRecycling] != "" {
		t.Errorf("not unbound: %+v", got)
	}
	if len(entries(t, filepath.Join(export, "pv"))) != 0 {
		t.Error("directory not empty")
	}
}

type hookScrubber struct {
	countingScrubber
	after func()
}

func (h *hookScrubber) Scrub(ctx context.Context, v volume.Volume) error {
	err := h.countingScrubber.Scrub(ctx, v)
	if h.after != nil {
		h.after()
	}
	return err
}

// TestRun drives the reconciler through its informer and work queue.
func TestRun(t *testing.T) {
	ws, export := newWorkspace(t)
	v := provisioned(t, ws, export, "pv")
	fill(t, filepath.Join(export, "keep"))
	cs := newClient(
		makePV("pv", v.ID()),
		makePV("bound", v.ID(), func(pv *v1.PersistentVolume) { pv.Status.Phase = v1.VolumeBound }),
		makePV("static", "static-keep", func(pv *v1.PersistentVolume) {
			pv.Spec.CSI.VolumeAttributes = map[string]string{"server": testServer, "share": testShare, "subDir": "keep"}
			pv.Status.Phase = v1.VolumeBound
		}),
	)
	s := &countingScrubber{ws: ws, calls: map[string]int{}}
	rec := record.NewFakeRecorder(100)
	r, err := New(Config{Client: cs, DriverName: driverName, Scrubber: s, Recorder: rec, Identity: "me"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "pv to be unbound", func() bool { return getPV(t, cs, "pv").Spec.ClaimRef == nil })
	if len(entries(t, filepath.Join(export, "pv"))) != 0 {
		t.Error("pv's directory not emptied")
	}

	// The static PV's claim goes: it is recycled too.
	pv := getPV(t, cs, "static")
	pv.Status.Phase = v1.VolumeReleased
	if _, err := cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "static to be unbound", func() bool { return getPV(t, cs, "static").Spec.ClaimRef == nil })
	if len(entries(t, filepath.Join(export, "keep"))) != 0 {
		t.Error("static PV's directory not emptied")
	}
	if getPV(t, cs, "bound").Spec.ClaimRef == nil {
		t.Error("bound PV was unbound")
	}
	if s.count("pv") != 1 || s.count("keep") != 1 {
		t.Errorf("scrubs %v", s.calls)
	}
}

func TestParseHold(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]struct {
		holder string
		since  time.Time
		ok     bool
	}{
		"":                             {},
		"a@2030-01-02T03:04:05Z":       {"a", now, true},
		"pod_1@x@2030-01-02T03:04:05Z": {"pod_1@x", now, true},
		"a@garbage":                    {"a", time.Time{}, true},
		"no-time":                      {"no-time", time.Time{}, true},
	} {
		h, s, ok := parseHold(in)
		if h != want.holder || !s.Equal(want.since) || ok != want.ok {
			t.Errorf("parseHold(%q) = %q %v %v", in, h, s, ok)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
