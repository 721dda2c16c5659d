package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/paddock-csi/paddock/pkg/driver"
	"github.com/paddock-csi/paddock/pkg/mount/mounttest"
	"github.com/paddock-csi/paddock/pkg/share"
)

func TestKubeFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "storage")
	f, err := parseFlags(strings.Fields("--mode=controller --provisioner --recycler --leader-elect --http-endpoint=:9809"))
	if err != nil {
		t.Fatal(err)
	}
	k := f.kube
	if !k.provisioner || !k.recycler || !k.leaderElect || k.leaderElectNamespace != "storage" {
		t.Errorf("flags %+v", k)
	}
	t.Setenv("POD_NAMESPACE", "")
	if f, _ := parseFlags(nil); f.kube.leaderElectNamespace != "paddock" || f.kube.provisioner || f.kube.recycler {
		t.Errorf("defaults %+v", f.kube)
	}
}

func TestKubeStartRefuses(t *testing.T) {
	for _, tc := range []struct {
		args, mode, want string
	}{
		{"--provisioner", "node", "--mode=controller"},
		{"--recycler", "node", "--mode=controller"},
		{"--discover-exports", "node", "--mode=controller"},
		{"--leader-elect", "controller", "needs --provisioner, --recycler or --discover-exports"},
		{"--discover-exports --kubeconfig=/nonexistent/kubeconfig", "controller", "/nonexistent/kubeconfig"},
		{"--provisioner --kubeconfig=/nonexistent/kubeconfig", "controller", "/nonexistent/kubeconfig"},
	} {
		f, err := parseFlags(strings.Fields(tc.args))
		if err != nil {
			t.Fatal(err)
		}
		var ws *share.Workspace
		if tc.mode == "controller" {
			if ws, err = share.New(share.Config{WorkDir: t.TempDir(), Mounter: mounttest.New()}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		err = f.kube.start(context.Background(), &wg, nil, ws, driver.Options{Mode: driver.Mode(tc.mode)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s (mode %s): err %v, want %q", tc.args, tc.mode, err, tc.want)
		}
	}
	f, _ := parseFlags(nil)
	var wg sync.WaitGroup
	if err := f.kube.start(context.Background(), &wg, nil, nil, driver.Options{Mode: driver.ModeNode}); err != nil {
		t.Errorf("nothing selected: %v", err)
	}
}

func newLock(cs *fake.Clientset, id string) *resourcelock.LeaseLock {
	return &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: "paddock", Name: "nfs-paddock-dev-controller"},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
}

// TestRunElectedShutdownOrder: at shutdown the work stops before the Lease is released, so a standby
// never works alongside a replica still finishing.
func TestRunElectedShutdownOrder(t *testing.T) {
	cs := fake.NewClientset()
	var workStopped atomic.Bool
	released := make(chan bool, 1)
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "" {
			select {
			case released <- workStopped.Load():
			default:
			}
		}
		return false, nil, nil
	})
	started := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runElected(ctx, newLock(cs, "me"), 2*time.Second, time.Second, 100*time.Millisecond, func(ctx context.Context) {
			close(started)
			<-ctx.Done()
			time.Sleep(200 * time.Millisecond) // finishing the operation in flight
			workStopped.Store(true)
		})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("work never started")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runElected did not return")
	}
	select {
	case stopped := <-released:
		if !stopped {
			t.Error("Lease released while the work was still running")
		}
	default:
		t.Error("Lease not released at shutdown")
	}
}

// strictLeases makes the fake API server refuse Lease updates with a stale resourceVersion, as the real
// one does: the elector's fast-path renew relies on it to notice that another replica took over.
func strictLeases(cs *fake.Clientset) {
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	var rv atomic.Int64
	rv.Store(100)
	cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		l.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		if err := cs.Tracker().Create(gvr, l, l.Namespace); err != nil {
			return true, nil, err
		}
		return true, l.DeepCopy(), nil
	})
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		cur, err := cs.Tracker().Get(gvr, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*coordinationv1.Lease).ResourceVersion != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), l.Name, errors.New("stale resourceVersion"))
		}
		l.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		if err := cs.Tracker().Update(gvr, l, l.Namespace); err != nil {
			return true, nil, err
		}
		return true, l.DeepCopy(), nil
	})
}

// TestRunElectedLostLease: when another replica takes the Lease, the work is stopped and the replica
// campaigns again, working again once it wins.
func TestRunElectedLostLease(t *testing.T) {
	cs := fake.NewClientset()
	strictLeases(cs)
	var runs atomic.Int32
	stopped := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runElected(ctx, newLock(cs, "me"), 1500*time.Millisecond, time.Second, 100*time.Millisecond, func(ctx context.Context) {
			runs.Add(1)
			<-ctx.Done()
			stopped <- struct{}{}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitUntil(t, "first term", func() bool { return runs.Load() == 1 })

	// Another replica takes the Lease over (as after a partition) and renews it for a while.
	renew := func() {
		l, err := cs.CoordinationV1().Leases("paddock").Get(ctx, "nfs-paddock-dev-controller", metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		other, secs := "other", int32(2)
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = &other, &now, &secs
		_, _ = cs.CoordinationV1().Leases("paddock").Update(ctx, l, metav1.UpdateOptions{}) // a conflict: next round
	}
	thief := make(chan struct{})
	go func() {
		defer close(thief)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			renew()
		}
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("work not stopped after the Lease was lost")
	}
	<-thief
	if runs.Load() != 1 {
		t.Fatalf("%d terms while the other replica held the Lease", runs.Load())
	}
	// The other replica goes away: its Lease expires and this one leads again.
	waitUntil(t, "second term", func() bool { return runs.Load() == 2 })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
