package provisioner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func sourceClaim(name string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: types.UID(name + "-uid"),
		Finalizers: []string{"kubernetes.io/pvc-protection"}}}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func finalizersOf(t *testing.T, kube *fake.Clientset, name string) []string {
	t.Helper()
	c, err := kube.CoreV1().PersistentVolumeClaims("team-a").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Finalizers
}

// TestCloneGuardHoldsWhileAnyCloneRuns: two clones of one source; the finalizer is added once, stays
// until the last clone is done, stays for a clone whose copy may still run (in background), and the
// source's other finalizers are never touched.
func TestCloneGuardHoldsWhileAnyCloneRuns(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset(sourceClaim("src"))
	g := newCloneGuard(kube)
	src := types.NamespacedName{Namespace: "team-a", Name: "src"}
	want := []string{"kubernetes.io/pvc-protection", CloneFinalizer}
	for _, clone := range []types.UID{"a", "b", "a"} {
		if err := g.acquire(ctx, src, clone); err != nil {
			t.Fatal(err)
		}
	}
	if got := finalizersOf(t, kube, "src"); !slices.Equal(got, want) {
		t.Fatalf("finalizers %v, want %v", got, want)
	}
	g.release(ctx, src, "a", false)
	if got := finalizersOf(t, kube, "src"); !slices.Equal(got, want) {
		t.Fatalf("after clone a: finalizers %v, want %v (clone b still copies)", got, want)
	}
	g.release(ctx, src, "b", true)
	if got := finalizersOf(t, kube, "src"); !slices.Equal(got, want) {
		t.Fatalf("after clone b went to the background: finalizers %v, want %v", got, want)
	}
	// A cancelled context (the clone's deadline) does not stop the release.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	g.release(cancelled, src, "b", false)
	if got := finalizersOf(t, kube, "src"); !slices.Equal(got, []string{"kubernetes.io/pvc-protection"}) {
		t.Fatalf("after the last clone: finalizers %v", got)
	}
	if g.busy(src) || len(g.inflight) != 0 {
		t.Errorf("in-flight set not empty: %v", g.inflight)
	}
}

// TestCloneGuardRefusesADeletingSource: no new finalizer on a claim being deleted, and a refused
// acquire leaves nothing in flight.
func TestCloneGuardRefusesADeletingSource(t *testing.T) {
	now := metav1.Now()
	kube := fake.NewClientset(sourceClaim("src", func(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &now }))
	g := newCloneGuard(kube)
	src := types.NamespacedName{Namespace: "team-a", Name: "src"}
	err := g.acquire(context.Background(), src, "a")
	if err == nil || !strings.Contains(err.Error(), "being deleted") {
		t.Fatalf("acquire = %v, want a refusal", err)
	}
	if g.busy(src) {
		t.Error("a refused clone stays in flight")
	}
	if got := finalizersOf(t, kube, "src"); slices.Contains(got, CloneFinalizer) {
		t.Errorf("finalizers %v", got)
	}
}

func TestCloneGuardReleaseIdle(t *testing.T) {
	ctx := context.Background()
	withFinalizer := func(c *v1.PersistentVolumeClaim) { c.Finalizers = append(c.Finalizers, CloneFinalizer) }
	kube := fake.NewClientset(sourceClaim("busy", withFinalizer), sourceClaim("waited", withFinalizer), sourceClaim("idle", withFinalizer))
	g := newCloneGuard(kube)
	name := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "team-a", Name: n} }
	if err := g.acquire(ctx, name("busy"), "a"); err != nil {
		t.Fatal(err)
	}
	no := func() bool { return false }
	if err := g.releaseIdle(ctx, name("busy"), no); err != nil || !slices.Contains(finalizersOf(t, kube, "busy"), CloneFinalizer) {
		t.Errorf("busy source: %v, finalizers %v; want it kept", err, finalizersOf(t, kube, "busy"))
	}
	if err := g.releaseIdle(ctx, name("waited"), func() bool { return true }); !errors.Is(err, errWaiting) || !slices.Contains(finalizersOf(t, kube, "waited"), CloneFinalizer) {
		t.Errorf("source a Pending claim waits for: %v, finalizers %v; want errWaiting and kept", err, finalizersOf(t, kube, "waited"))
	}
	if err := g.releaseIdle(ctx, name("idle"), no); err != nil || slices.Contains(finalizersOf(t, kube, "idle"), CloneFinalizer) {
		t.Errorf("idle source: %v, finalizers %v; want it removed", err, finalizersOf(t, kube, "idle"))
	}
	if err := g.releaseIdle(ctx, name("gone"), no); err != nil {
		t.Errorf("source already gone: %v", err)
	}
}

func TestClonesPending(t *testing.T) {
	src := types.NamespacedName{Namespace: "team-a", Name: "src"}
	pending := func(mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
		c := claim(mutate...)
		c.Status.Phase = v1.ClaimPending
		return c
	}
	boundClone := claim(claimFrom(kindClaim, "", "src"))
	boundClone.Status.Phase = v1.ClaimBound
	for _, tc := range []struct {
		name  string
		claim *v1.PersistentVolumeClaim
		want  bool
	}{
		{"pending clone", pending(claimFrom(kindClaim, "", "src")), true},
		{"pending clone through dataSourceRef", pending(func(c *v1.PersistentVolumeClaim) {
			c.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: kindClaim, Name: "src"}
		}), true},
		{"bound clone", boundClone, false},
		{"clone of another claim", pending(claimFrom(kindClaim, "", "other")), false},
		{"restore of a snapshot of that name", pending(claimFrom(kindSnapshot, snapshotGroup, "src")), false},
		{"no source", pending(), false},
	} {
		if got := clonesPending([]*v1.PersistentVolumeClaim{tc.claim}, src); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRunClonesRestoresAndReleases drives the library with the sources: a clone and a restore get PVs
// with the source's content and the clone's source loses its finalizer; a restore from a snapshot not
// ready yet gets a ProvisioningFailed event naming the field; a populator's claim gets the Normal event
// and no PV; a finalizer a crashed controller left on a source being deleted is removed once no
// Pending claim clones it any more.
func TestRunClonesRestoresAndReleases(t *testing.T) {
	f := newSourceFixture(t)
	sc := class(nil)
	now := metav1.Now()
	annotate := func(c *v1.PersistentVolumeClaim, name string) *v1.PersistentVolumeClaim {
		c.Name, c.UID = name, types.UID("uid-"+name)
		c.Spec.StorageClassName = &sc.Name
		c.Annotations["volume.kubernetes.io/storage-provisioner"] = driverName
		c.Status.Phase = v1.ClaimPending
		return c
	}
	notReady := f.snap.DeepCopy()
	notReady.Name, notReady.UID = "unready", "unready-uid"
	notReady.Status.ReadyToUse = new(bool)
	notReadyContent := f.content.DeepCopy()
	notReadyContent.Name = "snapcontent-2"
	notReadyContent.Spec.VolumeSnapshotRef.Name, notReadyContent.Spec.VolumeSnapshotRef.UID = notReady.Name, notReady.UID
	notReady.Status.BoundVolumeSnapshotContentName = &notReadyContent.Name
	// A source a crashed controller left its finalizer on, being deleted, and a claim (of another
	// provisioner, so it stays Pending) that still clones it.
	stale := sourceClaim("stale", func(c *v1.PersistentVolumeClaim) {
		c.DeletionTimestamp = &now
		c.Finalizers = append(c.Finalizers, CloneFinalizer)
	})
	waiting := claim(claimFrom(kindClaim, "", "stale"))
	waiting.Name, waiting.UID = "waiting", "uid-waiting"
	waiting.Status.Phase = v1.ClaimPending
	waiting.Annotations["volume.kubernetes.io/storage-provisioner"] = "other.example.com"

	kube := fake.NewClientset(sc, f.srcClaim, f.srcPV, stale, waiting,
		annotate(claim(claimFrom(kindClaim, "", "src")), "clone"),
		annotate(claim(claimFrom(kindSnapshot, snapshotGroup, "snap")), "restore"),
		annotate(claim(claimFrom(kindSnapshot, snapshotGroup, "unready")), "early"),
		annotate(claim(func(c *v1.PersistentVolumeClaim) {
			g := "hello.example.com"
			c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &g, Kind: "Hello", Name: "greeting"}
		}), "populated"))
	snaps := snapfake.NewSimpleClientset(f.snap, f.content, notReady, notReadyContent)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Client: kube, SnapshotClient: snaps, DriverName: driverName, Core: f.core, RetryStart: 10 * time.Millisecond})
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

	for _, name := range []string{"clone", "restore"} {
		waitFor(t, "PV of claim "+name, func() bool {
			_, err := kube.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-"+name, metav1.GetOptions{})
			return err == nil
		})
		b, err := os.ReadFile(filepath.Join(f.export, "pvc-uid-"+name, "hello.txt"))
		if err != nil || string(b) != "from the source\n" {
			t.Errorf("%s: hello.txt %q, %v", name, b, err)
		}
	}
	waitFor(t, "the clone's source without the cloning finalizer", func() bool {
		return !slices.Contains(finalizersOf(t, kube, "src"), CloneFinalizer)
	})

	// event returns the message of the claim's event of that reason and type that contains word.
	event := func(claim, reason, typ, word string) string {
		evs, err := kube.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{})
		if err != nil {
			return ""
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == claim && e.Reason == reason && e.Type == typ && strings.Contains(e.Message, word) {
				return e.Message
			}
		}
		return ""
	}
	var msg string
	waitFor(t, "ProvisioningFailed event on the early restore", func() bool {
		msg = event("early", "ProvisioningFailed", v1.EventTypeWarning, "")
		return msg != ""
	})
	for _, w := range []string{"team-a/early", "spec.dataSource", "VolumeSnapshot team-a/unready", "not ReadyToUse"} {
		if !strings.Contains(msg, w) {
			t.Errorf("event %q does not contain %q", msg, w)
		}
	}
	waitFor(t, "the populator's Normal event", func() bool {
		return event("populated", "Provisioning", v1.EventTypeNormal, "external populator") != ""
	})
	for _, name := range []string{"early", "populated"} {
		if _, err := kube.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-"+name, metav1.GetOptions{}); err == nil {
			t.Errorf("claim %s got a PV", name)
		}
	}

	// The stale finalizer stays while the Pending claim may still clone the source...
	time.Sleep(200 * time.Millisecond)
	if !slices.Contains(finalizersOf(t, kube, "stale"), CloneFinalizer) {
		t.Fatal("finalizer removed while a Pending claim still clones the source")
	}
	// ...and goes once that claim is gone.
	if err := kube.CoreV1().PersistentVolumeClaims("team-a").Delete(ctx, "waiting", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stale cloning finalizer removed", func() bool {
		return !slices.Contains(finalizersOf(t, kube, "stale"), CloneFinalizer)
	})
}
